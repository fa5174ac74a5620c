-- control.rules: operator, partner, utility and safety rules (cap, pause, reserve, override) scoped to a
-- site, node, charger or session. Key: rule_id = '{source}:{scope}:{scope_id}', so each source has one
-- rule per scope; a tombstone withdraws it.
-- RisingWave 2.8 keys a FORMAT UPSERT ENCODE JSON table by the Kafka message key: INCLUDE KEY adds
-- message_key (bytea: the key's raw bytes; encode(message_key, 'escape') gives the id) as the primary
-- key, and a tombstone (null value) deletes the row of its key. rule_id stays an ordinary column read
-- from the JSON value; the views join on it.
CREATE TABLE control_rules (
    rule_id VARCHAR,
    source VARCHAR,
    scope VARCHAR,
    scope_id VARCHAR,
    action VARCHAR,
    limit_kw DOUBLE PRECISION,
    valid_from TIMESTAMPTZ,
    valid_to TIMESTAMPTZ,
    reason VARCHAR,
    created_at TIMESTAMPTZ,
    PRIMARY KEY (message_key)
) INCLUDE KEY AS message_key WITH (
    connector = 'kafka',
    topic = 'control.rules'
) FORMAT UPSERT ENCODE JSON;
