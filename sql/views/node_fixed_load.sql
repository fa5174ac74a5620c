-- Load that is not balanced, summed into every breaker above it:
--   * sessions on unmanaged chargers, at their measured draw while it is fresh, else at their rating;
--   * managed sessions whose meter went stale, at the setpoint their charger last accepted (else rating);
--   * reserve rules: headroom held for an idle charger (the largest reservation per charger).
CREATE MATERIALIZED VIEW node_fixed_load AS
WITH items AS (
    SELECT
        t.attach_id AS node_id,
        CASE
            WHEN NOT t.managed AND NOT t.stale THEN COALESCE(t.current_power_kw, t.rated_power_kw)
            WHEN NOT t.managed THEN t.rated_power_kw
            ELSE COALESCE(a.setpoint_kw, t.rated_power_kw)
        END AS load_kw
    FROM session_telemetry AS t
    LEFT JOIN session_last_accepted AS a ON a.session_id = t.session_id
    WHERE NOT t.managed OR t.stale
    UNION ALL
    SELECT
        r.scope_id AS node_id,
        MAX(r.limit_kw) AS load_kw
    FROM active_rules AS r
    LEFT JOIN session_telemetry AS t ON t.charge_point_id = r.scope_id
    WHERE r.action = 'reserve' AND t.session_id IS NULL
    GROUP BY r.scope_id
)
SELECT
    a.ancestor_id AS node_id,
    SUM(i.load_kw) AS fixed_kw,
    a.site_id
FROM items AS i
JOIN node_ancestors AS a ON a.node_id = i.node_id
GROUP BY a.ancestor_id, a.site_id;
