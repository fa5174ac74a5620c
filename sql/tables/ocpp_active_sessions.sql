-- ocpp.active.sessions: one row per charging session, published by the executor at StartTransaction and
-- on every MeterValues; a tombstone at StopTransaction deletes it. Key: session_id. sampled_at is when the
-- executor received the latest reading (its clock, which the views compute on); charger_sampled_at is the
-- reading's own timestamp on the charger's clock (the clock_skew alert compares the two).
-- RisingWave 2.8 keys a FORMAT UPSERT ENCODE JSON table by the Kafka message key: INCLUDE KEY adds
-- message_key (bytea: the key's raw bytes; encode(message_key, 'escape') gives the id) as the primary
-- key, and a tombstone (null value) deletes the row of its key. session_id stays an ordinary column read
-- from the JSON value; the views join on it.
CREATE TABLE ocpp_active_sessions (
    session_id VARCHAR,
    charge_point_id VARCHAR,
    connector_id INT,
    transaction_id VARCHAR,
    site_id VARCHAR,
    node_id VARCHAR,
    rated_power_kw DOUBLE PRECISION,
    ev_max_power_kw DOUBLE PRECISION,
    min_power_kw DOUBLE PRECISION,
    phases INT,
    ev_phases INT,
    phase_rotation VARCHAR,
    voltage_v DOUBLE PRECISION,
    priority INT,
    weight DOUBLE PRECISION,
    flexible BOOLEAN,
    started_at TIMESTAMPTZ,
    current_power_kw DOUBLE PRECISION,
    energy_kwh DOUBLE PRECISION,
    soc_pct DOUBLE PRECISION,
    sampled_at TIMESTAMPTZ,
    charger_sampled_at TIMESTAMPTZ,
    learned_cap_kw DOUBLE PRECISION,
    departure_at TIMESTAMPTZ,
    energy_needed_kwh DOUBLE PRECISION,
    ev_rate_kw DOUBLE PRECISION,
    PRIMARY KEY (message_key)
) INCLUDE KEY AS message_key WITH (
    connector = 'kafka',
    topic = 'ocpp.active.sessions'
) FORMAT UPSERT ENCODE JSON;
