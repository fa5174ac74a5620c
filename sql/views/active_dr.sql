-- Demand-response events in force now, combined per site: the deepest curtailment and the lowest limit.
-- The latest signal of each event wins, so a utility can move or cancel an event; NOW() is a temporal
-- filter, so events start and end on time without any timer in application code.
CREATE MATERIALIZED VIEW active_dr AS
SELECT
    site_id,
    MIN(dr_event_id) AS dr_event_id,
    MAX(curtailment_pct) AS curtailment_pct,
    MIN(limit_kw) AS limit_kw,
    MIN(event_end) AS ends_at
FROM (
    SELECT
        site_id,
        dr_event_id,
        curtailment_pct,
        limit_kw,
        event_start,
        event_end,
        ROW_NUMBER() OVER (PARTITION BY site_id, dr_event_id ORDER BY signal_at DESC) AS rn
    FROM utility_dr_signals
) AS events
WHERE rn = 1 AND event_start <= NOW() AND event_end > NOW()
GROUP BY site_id;
