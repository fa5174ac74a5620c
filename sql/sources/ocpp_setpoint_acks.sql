-- ocpp.setpoint.acks: what the executor sent each charger and what it answered (append-only).
-- The allocation reads it to hold a session whose meter went silent at what its charger last accepted.
CREATE SOURCE ocpp_setpoint_acks (
    charge_point_id VARCHAR,
    connector_id INT,
    session_id VARCHAR,
    action VARCHAR,
    purpose VARCHAR,
    setpoint_kw DOUBLE PRECISION,
    "limit" DOUBLE PRECISION,
    charging_rate_unit VARCHAR,
    status VARCHAR,
    error VARCHAR,
    computed_at TIMESTAMPTZ,
    sent_at TIMESTAMPTZ,
    answered_at TIMESTAMPTZ
) WITH (
    connector = 'kafka',
    topic = 'ocpp.setpoint.acks'
) FORMAT PLAIN ENCODE JSON;
