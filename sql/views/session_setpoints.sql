-- The setpoint per session, in the shape of ocpp.setpoint.commands (see pipeline/topics.py).
-- Values are rounded down (kW to 1 W, A to the 0.1 A that OCPP 1.6 ChargingSchedulePeriod.limit
-- accepts), so rounding never lifts a node above its headroom. computed_at is the session's start or the
-- site's latest input, whichever is later; it never moves backwards for a session.
CREATE MATERIALIZED VIEW session_setpoints AS
SELECT
    a.session_id,
    a.charge_point_id,
    a.connector_id,
    a.transaction_id,
    a.site_id,
    a.node_id,
    FLOOR(a.allocated_kw * 1000 + 1e-6) / 1000.0 AS setpoint_kw,
    FLOOR(a.allocated_kw * 10000 / (a.phases * a.voltage_v) + 1e-6) / 10.0 AS setpoint_a,
    a.phases,
    a.voltage_v,
    a.headroom_kw AS node_limit_kw,
    a.headroom_kw AS site_limit_kw,
    a.binding,
    p.price_tier,
    GREATEST(a.started_at, c.changed_at) AS computed_at
FROM session_allocation AS a
LEFT JOIN current_price_tier AS p ON p.site_id = a.site_id
LEFT JOIN site_input_clock AS c ON c.site_id = a.site_id;
