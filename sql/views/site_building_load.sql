-- The building load per site: total demand minus EV load from the latest meter reading. A reading older
-- than 1800 s (twice a 15-min BEMS interval) is stale: node_headroom then adds a margin on top of it.
CREATE MATERIALIZED VIEW site_building_load AS
SELECT
    site_id,
    demand_limit_kw,
    GREATEST(current_demand_kw - ev_load_kw, 0) AS building_kw,
    measured_at,
    FALSE AS stale
FROM site_demand_latest
WHERE measured_at > NOW() - INTERVAL '1800 seconds'
UNION ALL
SELECT
    site_id,
    demand_limit_kw,
    GREATEST(current_demand_kw - ev_load_kw, 0) AS building_kw,
    measured_at,
    TRUE AS stale
FROM site_demand_latest
WHERE measured_at <= NOW() - INTERVAL '1800 seconds';
