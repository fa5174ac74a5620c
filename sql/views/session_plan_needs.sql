-- Fleet plans: one row per planned session (session_plan_targets) with what session_limits needs to set
-- its cap for the slot in force now: remaining_kwh and left_s (its target), price_now (null when no price
-- is in force) and cheaper_s, the seconds before departure in slots cheaper than now (with no price in
-- force, every later slot counts as cheaper).
--   share_kw = the part of the site's EV headroom (node_headroom) the session can count on, as the
--              earliest-deadline-first test of a shared resource sees it: the planned sessions at the
--              site that leave no later than it (itself and those leaving with it included) need
--              demand_kwh between them before it leaves, which the headroom delivers in
--              demand_kwh / headroom hours, so its own need goes at headroom x remaining_kwh / demand_kwh.
--              A plan then does not count on its full cap where the breaker will be shared before it
--              leaves, nor take the breaker's present tightness as its own where the others leave first
--              (null: no headroom known, or nothing remains)
--   urgent   = NOW() is at or past urgent_at, the last instant it can wait: departure less 1.5 times the
--              time its remaining energy takes at min(device cap, ev_rate_kw, share_kw) (ev_rate_kw: the
--              rate the EV last showed it charges at, kept while it waits; an EV's acceptance tapers
--              as its battery fills: CC-CV above about 80 % SoC), less 900 s, at most 31 days before it
--              (departure itself when that rate is 0). A temporal filter, so it turns true on time
--              between meter readings (left_s counts from the latest one)
-- session_limits charges the session now, at its cap, when it is urgent, when those cheaper seconds at
-- that rate cannot hold what remains, or when its laxity is 900 s or less than half the time its need takes.
CREATE MATERIALIZED VIEW session_plan_needs AS
WITH slots AS (
    SELECT
        session_id,
        MAX(CASE WHEN in_force THEN price_per_kwh END) AS price_now,
        COALESCE(MAX(CASE WHEN in_force THEN cheaper_s END), SUM(CASE WHEN NOT in_force THEN usable_s END), 0)
            AS cheaper_s
    FROM session_plan_slots
    GROUP BY session_id
),
running AS (
    SELECT
        session_id,
        site_id,
        departure_at,
        SUM(remaining_kwh) OVER (
            PARTITION BY site_id ORDER BY departure_at, session_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS running_kwh
    FROM session_plan_targets
),
demands AS (
    SELECT session_id, MAX(running_kwh) OVER (PARTITION BY site_id, departure_at) AS demand_kwh
    FROM running
),
rated AS (
    SELECT
        p.session_id,
        p.site_id,
        p.departure_at,
        p.remaining_kwh,
        p.left_s,
        s.price_now,
        COALESCE(s.cheaper_s, 0) AS cheaper_s,
        CASE WHEN p.remaining_kwh > 0 THEN h.headroom_kw * p.remaining_kwh / d.demand_kwh END AS share_kw,
        LEAST(
            t.rated_power_kw,
            COALESCE(t.ev_max_power_kw, t.rated_power_kw),
            COALESCE(t.learned_cap_kw, t.rated_power_kw),
            COALESCE(t.ev_rate_kw, t.rated_power_kw),
            t.rated_power_kw * t.ev_phases / t.phases,
            COALESCE(
                CASE WHEN p.remaining_kwh > 0 THEN h.headroom_kw * p.remaining_kwh / d.demand_kwh END, t.rated_power_kw
            )
        ) AS rate_kw
    FROM session_plan_targets AS p
    JOIN session_telemetry AS t ON t.session_id = p.session_id
    LEFT JOIN slots AS s ON s.session_id = p.session_id
    LEFT JOIN node_headroom AS h ON h.node_id = p.site_id AND h.kind = 'site'
    JOIN demands AS d ON d.session_id = p.session_id
),
needs AS (
    SELECT
        *,
        CASE
            WHEN rate_kw > 0
                THEN departure_at - LEAST(1.5 * remaining_kwh * 3600.0 / rate_kw + 900, 2678400) * INTERVAL '1 second'
            ELSE departure_at
        END AS urgent_at
    FROM rated
)
SELECT session_id, site_id, departure_at, remaining_kwh, left_s, price_now, cheaper_s, share_kw, urgent_at, TRUE AS urgent
FROM needs
WHERE urgent_at <= NOW()
UNION ALL
SELECT session_id, site_id, departure_at, remaining_kwh, left_s, price_now, cheaper_s, share_kw, urgent_at, FALSE AS urgent
FROM needs
WHERE urgent_at > NOW();
