-- Alerts for operators (pipeline.alerts), one row per open condition; it leaves the view when it clears.
--   setpoint_deviation: a fresh meter shows a session drawing more than max(margin_kw, margin_share x
--                       setpoint) above its setpoint delay_s or more after the setpoint was computed
--                       (parameters alert.setpoint_deviation.margin_kw, 1 kW, .margin_share, 10 %, and
--                       .delay_s, 60 s)
--   node_over_limit:    measured load under a breaker (fresh session meters, plus the building at a
--                       site) above its limit by more than alert.node_over_limit.margin_kw (0.5 kW)
--   clock_skew:         a charger whose latest reading's own timestamp differs from when the executor
--                       received it by more than alert.clock_skew.threshold_s (60 s); subject: the charger
--   stale_session_meter / stale_site_meter: telemetry older than its staleness threshold
--   site_meter_missing: a site with no bems.site.demand reading at all: its building load counts as 0
--   topology_too_deep:  a node deeper than the allocation unrolls (depth 5) or in a parent cycle
--   plan_at_risk:       a planned session that can no longer be met: energy remains and its laxity is
--                       negative (at its cap it needs longer than the time left before departure);
--                       value_kw is the power it would need (null past departure), limit_kw its cap
CREATE MATERIALIZED VIEW alerts AS
WITH measured AS (
    SELECT
        a.ancestor_id AS node_id,
        SUM(t.current_power_kw) AS load_kw
    FROM session_telemetry AS t
    JOIN node_ancestors AS a ON a.node_id = t.attach_id
    WHERE NOT t.stale AND t.current_power_kw IS NOT NULL
    GROUP BY a.ancestor_id
),
loads AS (
    SELECT
        h.node_id,
        h.site_id,
        h.limit_kw,
        COALESCE(m.load_kw, 0) + h.building_kw AS load_kw
    FROM node_headroom AS h
    LEFT JOIN measured AS m ON m.node_id = h.node_id
),
-- The parameters are compared with plain columns of their type (RisingWave dynamic filters: a column on one
-- side, the scalar subquery alone on the other), so each excess is a DOUBLE PRECISION column.
deviations AS (
    SELECT
        s.session_id,
        p.site_id,
        s.current_power_kw,
        p.setpoint_kw,
        p.computed_at,
        s.current_power_kw - p.setpoint_kw AS excess_kw,
        CASE
            WHEN p.setpoint_kw > 0 THEN (s.current_power_kw - p.setpoint_kw) / p.setpoint_kw
            ELSE CAST(1e9 AS DOUBLE PRECISION)
        END AS excess_share,
        CAST(EXTRACT(EPOCH FROM s.sampled_at) - EXTRACT(EPOCH FROM p.computed_at) AS DOUBLE PRECISION) AS after_s
    FROM ocpp_active_sessions AS s
    JOIN session_setpoints AS p ON p.session_id = s.session_id
    WHERE s.current_power_kw > p.setpoint_kw
),
skews AS (
    SELECT
        charge_point_id,
        MAX(site_id) AS site_id,
        CAST(
            MAX(ABS(EXTRACT(EPOCH FROM sampled_at) - EXTRACT(EPOCH FROM charger_sampled_at))) AS DOUBLE PRECISION
        ) AS skew_s,
        MAX(charger_sampled_at) AS charger_sampled_at
    FROM ocpp_active_sessions
    WHERE sampled_at IS NOT NULL AND charger_sampled_at IS NOT NULL
    GROUP BY charge_point_id
)
SELECT
    'setpoint_deviation:' || session_id AS alert_id,
    'setpoint_deviation' AS kind,
    'warning' AS severity,
    site_id,
    session_id AS subject_id,
    current_power_kw AS value_kw,
    setpoint_kw AS limit_kw,
    computed_at AS since,
    'session draws above its setpoint' AS message
FROM deviations
WHERE excess_kw > (SELECT MAX(value) FROM pipeline_settings WHERE name = 'alert.setpoint_deviation.margin_kw')
    AND excess_share > (
        SELECT MAX(value) FROM pipeline_settings WHERE name = 'alert.setpoint_deviation.margin_share'
    )
    AND after_s >= (SELECT MAX(value) FROM pipeline_settings WHERE name = 'alert.setpoint_deviation.delay_s')
UNION ALL
SELECT
    'node_over_limit:' || node_id AS alert_id,
    'node_over_limit' AS kind,
    'critical' AS severity,
    site_id,
    node_id AS subject_id,
    load_kw AS value_kw,
    limit_kw,
    CAST(NULL AS TIMESTAMPTZ) AS since,
    'measured load above the breaker limit' AS message
FROM (SELECT node_id, site_id, load_kw, limit_kw, load_kw - limit_kw AS excess_kw FROM loads) AS over
WHERE excess_kw > (SELECT MAX(value) FROM pipeline_settings WHERE name = 'alert.node_over_limit.margin_kw')
UNION ALL
SELECT
    'clock_skew:' || charge_point_id AS alert_id,
    'clock_skew' AS kind,
    'warning' AS severity,
    site_id,
    charge_point_id AS subject_id,
    CAST(NULL AS DOUBLE PRECISION) AS value_kw,
    CAST(NULL AS DOUBLE PRECISION) AS limit_kw,
    CAST(NULL AS TIMESTAMPTZ) AS since,
    'charger clock differs from the executor''s past alert.clock_skew.threshold_s: its readings are timed on receipt'
        AS message
FROM skews
WHERE skew_s > (SELECT MAX(value) FROM pipeline_settings WHERE name = 'alert.clock_skew.threshold_s')
UNION ALL
SELECT
    'stale_session_meter:' || session_id AS alert_id,
    'stale_session_meter' AS kind,
    'warning' AS severity,
    site_id,
    session_id AS subject_id,
    CAST(NULL AS DOUBLE PRECISION) AS value_kw,
    CAST(NULL AS DOUBLE PRECISION) AS limit_kw,
    seen_at AS since,
    'no meter values for 600 s: held at its last accepted setpoint' AS message
FROM session_telemetry
WHERE stale
UNION ALL
SELECT
    'stale_site_meter:' || site_id AS alert_id,
    'stale_site_meter' AS kind,
    'warning' AS severity,
    site_id,
    site_id AS subject_id,
    building_kw AS value_kw,
    CAST(NULL AS DOUBLE PRECISION) AS limit_kw,
    measured_at AS since,
    'no site meter reading for 1800 s: building load taken as its last value plus 10 %' AS message
FROM site_building_load
WHERE stale
UNION ALL
SELECT
    'site_meter_missing:' || t.node_id AS alert_id,
    'site_meter_missing' AS kind,
    'warning' AS severity,
    t.site_id,
    t.node_id AS subject_id,
    CAST(NULL AS DOUBLE PRECISION) AS value_kw,
    CAST(NULL AS DOUBLE PRECISION) AS limit_kw,
    CAST(NULL AS TIMESTAMPTZ) AS since,
    'no site meter reading yet: the building load counts as 0 kW until bems.site.demand reports one' AS message
FROM site_topology AS t
LEFT JOIN site_demand_latest AS d ON d.site_id = t.node_id
WHERE t.kind = 'site' AND d.site_id IS NULL
UNION ALL
SELECT
    'topology_too_deep:' || t.node_id AS alert_id,
    'topology_too_deep' AS kind,
    'critical' AS severity,
    t.site_id,
    t.node_id AS subject_id,
    CAST(NULL AS DOUBLE PRECISION) AS value_kw,
    CAST(NULL AS DOUBLE PRECISION) AS limit_kw,
    CAST(NULL AS TIMESTAMPTZ) AS since,
    'node is deeper than 5 levels below its site, or its parents form a cycle: not allocated' AS message
FROM site_topology AS t
LEFT JOIN node_paths AS p ON p.node_id = t.node_id
WHERE p.node_id IS NULL
UNION ALL
SELECT
    'plan_at_risk:' || l.session_id AS alert_id,
    'plan_at_risk' AS kind,
    'warning' AS severity,
    l.site_id,
    l.session_id AS subject_id,
    CASE WHEN n.left_s > 0 THEN LEAST(n.remaining_kwh * 3600.0 / n.left_s, 100000.0) END AS value_kw,
    l.cap_kw AS limit_kw,
    CAST(NULL AS TIMESTAMPTZ) AS since,
    'the plan can no longer be met: at its cap the energy it still needs takes longer than the time left' AS message
FROM session_limits AS l
JOIN session_plan_needs AS n ON n.session_id = l.session_id
WHERE n.remaining_kwh > 0 AND l.laxity_s < 0;
