-- session.plans: when an EV leaves and what it needs by then, from the driver, an operator (`pipeline plan
-- set`) or a fleet system. Key: plan_id = 'session:{session_id}' or 'charger:{charge_point_id}'; exactly
-- one of the two ids is set, and the need is energy_needed_kwh or target_soc_pct with battery_kwh. A
-- tombstone withdraws the plan. session_plan_needs reads it below the EV's own figures.
-- RisingWave 2.8 keys a FORMAT UPSERT ENCODE JSON table by the Kafka message key (INCLUDE KEY, as the other
-- upsert tables); plan_id stays an ordinary column read from the JSON value.
CREATE TABLE session_plans (
    plan_id VARCHAR,
    session_id VARCHAR,
    charge_point_id VARCHAR,
    departure_at TIMESTAMPTZ,
    energy_needed_kwh DOUBLE PRECISION,
    target_soc_pct DOUBLE PRECISION,
    battery_kwh DOUBLE PRECISION,
    source VARCHAR,
    updated_at TIMESTAMPTZ,
    PRIMARY KEY (message_key)
) INCLUDE KEY AS message_key WITH (
    connector = 'kafka',
    topic = 'session.plans'
) FORMAT UPSERT ENCODE JSON;
