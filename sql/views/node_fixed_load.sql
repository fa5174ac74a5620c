-- Load that is not balanced, summed into every breaker above it:
--   * sessions on unmanaged chargers, at their measured draw while it is fresh, else at their rating;
--   * managed sessions whose meter went stale, at the setpoint their charger last accepted (else rating);
--   * reserve rules: headroom held for an idle charger (the largest reservation per charger).
-- fixed_kw is the sum in kW; fixed_a_r, fixed_a_s, fixed_a_t the current on each grid phase (A), each
-- load counted as kW * 1000 / (phases x V) on the grid phases it loads (phase_wiring): a session on the
-- EV's phases, a reservation on the charger's.
CREATE MATERIALIZED VIEW node_fixed_load AS
WITH items AS (
    SELECT
        t.attach_id AS node_id,
        CASE
            WHEN NOT t.managed AND NOT t.stale THEN COALESCE(t.current_power_kw, t.rated_power_kw)
            WHEN NOT t.managed THEN t.rated_power_kw
            ELSE COALESCE(a.setpoint_kw, t.rated_power_kw)
        END AS load_kw,
        t.ev_phases AS phases,
        t.voltage_v,
        t.on_r,
        t.on_s,
        t.on_t
    FROM session_telemetry AS t
    LEFT JOIN session_last_accepted AS a ON a.session_id = t.session_id
    WHERE NOT t.managed OR t.stale
    UNION ALL
    SELECT
        r.scope_id AS node_id,
        MAX(r.limit_kw) AS load_kw,
        MAX(COALESCE(c.phases, 3)) AS phases,
        MAX(COALESCE(c.voltage_v, 230.0)) AS voltage_v,
        MAX(COALESCE(w.on_r, 1)) AS on_r,
        MAX(COALESCE(w.on_s, 1)) AS on_s,
        MAX(COALESCE(w.on_t, 1)) AS on_t
    FROM active_rules AS r
    LEFT JOIN session_telemetry AS t ON t.charge_point_id = r.scope_id
    LEFT JOIN site_topology AS c ON c.node_id = r.scope_id AND c.kind = 'charger'
    LEFT JOIN phase_wiring AS w
        ON w.phase_rotation = COALESCE(c.phase_rotation, 'RST') AND w.ev_phases = COALESCE(c.phases, 3)
    WHERE r.action = 'reserve' AND t.session_id IS NULL
    GROUP BY r.scope_id
)
SELECT
    a.ancestor_id AS node_id,
    SUM(i.load_kw) AS fixed_kw,
    SUM(i.load_kw * 1000.0 / (i.phases * i.voltage_v) * i.on_r) AS fixed_a_r,
    SUM(i.load_kw * 1000.0 / (i.phases * i.voltage_v) * i.on_s) AS fixed_a_s,
    SUM(i.load_kw * 1000.0 / (i.phases * i.voltage_v) * i.on_t) AS fixed_a_t,
    a.site_id
FROM items AS i
JOIN node_ancestors AS a ON a.node_id = i.node_id
GROUP BY a.ancestor_id, a.site_id;
