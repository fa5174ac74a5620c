-- The latest site meter reading per site (group top-1 over the append-only demand stream).
CREATE MATERIALIZED VIEW site_demand_latest AS
SELECT
    site_id,
    demand_limit_kw,
    current_demand_kw,
    ev_load_kw,
    measured_at
FROM (
    SELECT
        site_id,
        demand_limit_kw,
        current_demand_kw,
        ev_load_kw,
        measured_at,
        ROW_NUMBER() OVER (PARTITION BY site_id ORDER BY measured_at DESC) AS rn
    FROM bems_site_demand
) AS readings
WHERE rn = 1;
