-- ocpp.transaction.events: each transaction's start and end as the executor saw them (append-only), the
-- history analysts query (session_history, charger_daily_energy). event_id is '{session_id}:{event_type}':
-- a record delivered twice is the same event, and the views read each session's events by MIN / MAX, so a
-- duplicate changes nothing. Meter registers are kWh; started_at / ended_at are the charger's timestamps,
-- recorded_at the executor's clock when it received the message.
CREATE SOURCE ocpp_transaction_events (
    event_id VARCHAR,
    event_type VARCHAR,
    session_id VARCHAR,
    charge_point_id VARCHAR,
    connector_id INT,
    transaction_id VARCHAR,
    site_id VARCHAR,
    node_id VARCHAR,
    started_at TIMESTAMPTZ,
    ended_at TIMESTAMPTZ,
    meter_start_kwh DOUBLE PRECISION,
    meter_stop_kwh DOUBLE PRECISION,
    energy_kwh DOUBLE PRECISION,
    peak_power_kw DOUBLE PRECISION,
    reason VARCHAR,
    binding VARCHAR,
    recorded_at TIMESTAMPTZ
) WITH (
    connector = 'kafka',
    topic = 'ocpp.transaction.events'
) FORMAT PLAIN ENCODE JSON;
