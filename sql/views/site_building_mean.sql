-- The building load per site averaged over its readings of the last 24 hours (current_demand_kw -
-- ev_load_kw, at least 0, as site_building_load): what a building typically leaves over a day. A plan
-- that leaves in a day or more counts on the headroom this mean leaves rather than on the headroom of the
-- moment, which at the building's daily peak promises far less than the hours ahead hold
-- (session_plan_needs, share_kw). A temporal filter: a reading leaves the mean 24 hours after it was
-- measured (the embedded engine keeps superseded readings that long, pipeline/engine/history.py).
CREATE MATERIALIZED VIEW site_building_mean AS
SELECT
    site_id,
    AVG(GREATEST(current_demand_kw - ev_load_kw, 0)) AS building_mean_kw,
    COUNT(*) AS readings
FROM bems_site_demand
WHERE measured_at > NOW() - INTERVAL '24 hours'
GROUP BY site_id;
