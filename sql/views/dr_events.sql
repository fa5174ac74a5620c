-- Each demand-response event in force now, one row per event: the latest signal of each event wins, so a
-- utility (or `pipeline signal dr --cancel`) can move or cancel an event. NOW() is a temporal filter, so
-- events start and end on time without any timer in application code. `pipeline status` shows these rows;
-- active_dr combines them per site for the allocation.
CREATE MATERIALIZED VIEW dr_events AS
SELECT
    site_id,
    dr_event_id,
    curtailment_pct,
    limit_kw,
    event_start,
    event_end
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
WHERE rn = 1 AND event_start <= NOW() AND event_end > NOW();
