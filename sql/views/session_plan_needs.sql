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
--              (null: no headroom known, or nothing remains). The headroom it counts on (room_kw) moves
--              from the site's headroom now towards what the building's mean load of the last 24 hours
--              leaves (site_building_mean: limit in force - mean - fixed load) by the share of a day left
--              to its departure, so a stay of days does not take the building's daily peak as its own.
--              A session whose need cannot be met even at its own rate (own_kw: its device cap and
--              ev_rate_kw; short) is at risk (session_limits' weight and reserve_kw) and is counted at that
--              rate: the others share what the short ones leave,
--              headroom less short_kw, and the short ones split the headroom by their own rates. Every
--              time taken from remaining_kwh here and in session_limits is that of timed_kwh =
--              remaining_kwh x taper_factor (session_plan_targets), the energy at the rate the EV takes now
--   urgent   = NOW() is at or past urgent_at, the last instant it can wait: departure less 1.5 times the
--              time its remaining energy takes at min(device cap, ev_rate_kw, share_kw) (ev_rate_kw: the
--              rate the EV last showed it charges at, kept while it waits; an EV's acceptance tapers
--              as its battery fills: CC-CV above about 80 % SoC, counted by taper_factor where the SoC
--              and battery are known, session_plan_targets, and by the 1.5 otherwise), less 900 s, at
--              most 31 days before it
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
own AS (
    SELECT
        p.session_id,
        p.site_id,
        p.departure_at,
        p.remaining_kwh,
        p.remaining_kwh * p.taper_factor AS timed_kwh,
        LEAST(
            t.rated_power_kw,
            COALESCE(t.ev_max_power_kw, t.rated_power_kw),
            COALESCE(t.learned_cap_kw, t.rated_power_kw),
            COALESCE(t.ev_rate_kw, t.rated_power_kw),
            t.rated_power_kw * t.ev_phases / t.phases
        ) AS own_kw,
        p.left_s
    FROM session_plan_targets AS p
    JOIN session_telemetry AS t ON t.session_id = p.session_id
),
flagged AS (
    SELECT
        session_id,
        site_id,
        departure_at,
        remaining_kwh,
        own_kw,
        remaining_kwh > 0 AND own_kw > 0 AND timed_kwh * 3600.0 > left_s * own_kw AS short
    FROM own
),
running AS (
    SELECT
        session_id,
        site_id,
        departure_at,
        own_kw,
        short,
        SUM(CASE WHEN short THEN 0 ELSE remaining_kwh END) OVER (
            PARTITION BY site_id ORDER BY departure_at, session_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS running_kwh,
        SUM(CASE WHEN short THEN own_kw ELSE 0 END) OVER (PARTITION BY site_id) AS short_kw
    FROM flagged
),
demands AS (
    SELECT
        session_id,
        own_kw,
        short,
        short_kw,
        MAX(running_kwh) OVER (PARTITION BY site_id, departure_at) AS demand_kwh
    FROM running
),
rooms AS (
    SELECT
        p.session_id,
        p.remaining_kwh,
        h.headroom_kw
        + CASE
            WHEN m.building_mean_kw IS NULL OR h.limit_kw IS NULL THEN 0.0
            ELSE LEAST(GREATEST(h.limit_kw - m.building_mean_kw - h.fixed_kw, 0), 100000) - h.headroom_kw
        END * LEAST(GREATEST(p.left_s, 0) / 86400.0, 1.0) AS room_kw
    FROM session_plan_targets AS p
    LEFT JOIN node_headroom AS h ON h.node_id = p.site_id AND h.kind = 'site'
    LEFT JOIN site_building_mean AS m ON m.site_id = p.site_id
),
shares AS (
    SELECT
        r.session_id,
        CASE
            WHEN r.remaining_kwh <= 0 OR r.room_kw IS NULL THEN NULL
            WHEN d.short THEN r.room_kw * d.own_kw / d.short_kw
            ELSE GREATEST(r.room_kw - d.short_kw, 0) * r.remaining_kwh / d.demand_kwh
        END AS share_kw
    FROM rooms AS r
    JOIN demands AS d ON d.session_id = r.session_id
),
rated AS (
    SELECT
        p.session_id,
        p.site_id,
        p.departure_at,
        p.remaining_kwh,
        o.timed_kwh,
        p.left_s,
        s.price_now,
        COALESCE(s.cheaper_s, 0) AS cheaper_s,
        d.share_kw,
        LEAST(o.own_kw, COALESCE(d.share_kw, o.own_kw)) AS rate_kw
    FROM session_plan_targets AS p
    JOIN own AS o ON o.session_id = p.session_id
    LEFT JOIN slots AS s ON s.session_id = p.session_id
    JOIN shares AS d ON d.session_id = p.session_id
),
needs AS (
    SELECT
        *,
        CASE
            WHEN rate_kw > 0
                THEN departure_at
                    - LEAST(1.5 * timed_kwh * 3600.0 / rate_kw + 900, 2678400) * INTERVAL '1 second'
            ELSE departure_at
        END AS urgent_at
    FROM rated
)
SELECT
    session_id, site_id, departure_at, remaining_kwh, timed_kwh, left_s, price_now, cheaper_s, share_kw, urgent_at,
    TRUE AS urgent
FROM needs
WHERE urgent_at <= NOW()
UNION ALL
SELECT
    session_id, site_id, departure_at, remaining_kwh, timed_kwh, left_s, price_now, cheaper_s, share_kw, urgent_at,
    FALSE AS urgent
FROM needs
WHERE urgent_at > NOW();
