-- EV headroom per site (DESIGN.md, allocation rule 1).
--   site_limit_kw  = the main breaker, or the contracted demand limit when the BEMS reports a lower one
--   limit_kw       = site_limit_kw reduced by the active DR event (curtailment_pct of it, or its limit_kw)
--   building_kw    = current_demand_kw - ev_load_kw: the load that is not ours to manage. Never
--                    limit - current_demand: that subtracts the EVs' own draw twice and oscillates.
--   headroom_kw    = limit_kw - building_kw, at least 0
-- A site with no meter reading yet is taken to have no building load.
CREATE MATERIALIZED VIEW site_headroom AS
WITH limits AS (
    SELECT
        t.site_id,
        t.limit_kw AS breaker_limit_kw,
        LEAST(t.limit_kw, COALESCE(d.demand_limit_kw, t.limit_kw)) AS site_limit_kw,
        GREATEST(COALESCE(d.current_demand_kw - d.ev_load_kw, 0), 0) AS building_kw,
        d.measured_at AS demand_measured_at,
        dr.dr_event_id,
        dr.curtailment_pct AS dr_curtailment_pct,
        dr.limit_kw AS dr_limit_kw
    FROM site_topology AS t
    LEFT JOIN site_demand_latest AS d ON d.site_id = t.site_id
    LEFT JOIN active_dr AS dr ON dr.site_id = t.site_id
    WHERE t.kind = 'site'
),
shaped AS (
    SELECT
        *,
        LEAST(
            site_limit_kw * (1 - COALESCE(dr_curtailment_pct, 0) / 100.0),
            COALESCE(dr_limit_kw, site_limit_kw)
        ) AS limit_kw
    FROM limits
)
SELECT
    site_id,
    breaker_limit_kw,
    site_limit_kw,
    limit_kw,
    building_kw,
    GREATEST(limit_kw - building_kw, 0) AS headroom_kw,
    CASE WHEN limit_kw < site_limit_kw THEN 'dr' ELSE site_id END AS limited_by,
    dr_event_id,
    demand_measured_at
FROM shaped;
