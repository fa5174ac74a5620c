-- pipeline.params: tunable parameters (the tariff multipliers), one row per parameter set by an operator
-- (`pipeline param set`); a tombstone returns the parameter to its default. Key: name.
-- RisingWave 2.8 keys a FORMAT UPSERT ENCODE JSON table by the Kafka message key (INCLUDE KEY, as the other
-- upsert tables); name stays an ordinary column read from the JSON value.
CREATE TABLE pipeline_params (
    name VARCHAR,
    value DOUBLE PRECISION,
    updated_at TIMESTAMPTZ,
    reason VARCHAR,
    PRIMARY KEY (message_key)
) INCLUDE KEY AS message_key WITH (
    connector = 'kafka',
    topic = 'pipeline.params'
) FORMAT UPSERT ENCODE JSON;
