-- Demand-response events in force now, combined per site for the allocation: the deepest curtailment, the
-- lowest limit and the earliest end (dr_events has each event on its own row, with its own id).
CREATE MATERIALIZED VIEW active_dr AS
SELECT
    site_id,
    MIN(dr_event_id) AS dr_event_id,
    MAX(curtailment_pct) AS curtailment_pct,
    MIN(limit_kw) AS limit_kw,
    MIN(event_end) AS ends_at,
    COUNT(*) AS events
FROM dr_events
GROUP BY site_id;
