-- The setpoint per managed session, in the shape of ocpp.setpoint.commands (see pipeline/contracts/topics.py).
-- Balanced sessions come from session_allocation; a session whose meter went stale is held at what its
-- charger last accepted (else its floor), binding 'stale', and counted as fixed load meanwhile.
-- Values are rounded down (kW to 1 W, A to the 0.1 A that OCPP 1.6 ChargingSchedulePeriod.limit accepts),
-- so rounding never lifts a breaker above its headroom. setpoint_a is the current on each phase the EV
-- draws on, setpoint_kw * 1000 / (ev_phases x voltage_v), and phases is ev_phases: the numberPhases the
-- executor sends. node_limit_kw and site_limit_kw are the headroom of the breaker the charger hangs on and
-- of the site (0, never null, when none is known). computed_at is the session's start or the site's latest
-- input, whichever is later; it never moves backwards for a session.
CREATE MATERIALIZED VIEW session_setpoints AS
WITH sessions AS (
    SELECT
        session_id, charge_point_id, connector_id, transaction_id, site_id, node_id, ev_phases, voltage_v,
        started_at, allocated_kw, binding
    FROM session_allocation
    UNION ALL
    SELECT
        t.session_id,
        t.charge_point_id,
        t.connector_id,
        t.transaction_id,
        t.site_id,
        CASE WHEN p.kind = 'charger' THEN p.parent_id ELSE t.attach_id END AS node_id,
        t.ev_phases,
        t.voltage_v,
        t.started_at,
        COALESCE(a.setpoint_kw, LEAST(COALESCE(t.min_power_kw, 6 * t.ev_phases * t.voltage_v / 1000.0), t.rated_power_kw))
            AS allocated_kw,
        'stale' AS binding
    FROM session_telemetry AS t
    JOIN node_paths AS p ON p.node_id = t.attach_id
    LEFT JOIN session_last_accepted AS a ON a.session_id = t.session_id
    WHERE t.managed AND t.stale
)
SELECT
    s.session_id,
    s.charge_point_id,
    s.connector_id,
    s.transaction_id,
    s.site_id,
    s.node_id,
    FLOOR(s.allocated_kw * 1000 + 1e-6) / 1000.0 AS setpoint_kw,
    FLOOR(s.allocated_kw * 10000 / (s.ev_phases * s.voltage_v) + 1e-6) / 10.0 AS setpoint_a,
    s.ev_phases AS phases,
    s.voltage_v,
    COALESCE(nh.headroom_kw, 0) AS node_limit_kw,
    COALESCE(sh.headroom_kw, 0) AS site_limit_kw,
    s.binding,
    p.price_tier,
    GREATEST(s.started_at, c.changed_at) AS computed_at
FROM sessions AS s
LEFT JOIN node_headroom AS nh ON nh.node_id = s.node_id
LEFT JOIN node_headroom AS sh ON sh.node_id = s.site_id
LEFT JOIN current_price_tier AS p ON p.site_id = s.site_id
LEFT JOIN site_input_clock AS c ON c.site_id = s.site_id;
