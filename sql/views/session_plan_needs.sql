-- Fleet plans: one row per planned session (session_plan_targets) with what session_limits needs to set
-- its cap for the slot in force now: remaining_kwh and left_s (its target), price_now (null when no price
-- is in force) and cheaper_s, the seconds before departure in slots cheaper than now (with no price in
-- force, every later slot counts as cheaper). session_limits charges the session now, at its cap, only
-- when those cheaper seconds at its cap cannot hold what remains, or when its laxity is 900 s or less.
CREATE MATERIALIZED VIEW session_plan_needs AS
SELECT
    p.session_id,
    p.site_id,
    p.departure_at,
    p.remaining_kwh,
    p.left_s,
    MAX(CASE WHEN s.in_force THEN s.price_per_kwh END) AS price_now,
    COALESCE(
        MAX(CASE WHEN s.in_force THEN s.cheaper_s END),
        SUM(CASE WHEN NOT s.in_force THEN s.usable_s END),
        0
    ) AS cheaper_s
FROM session_plan_targets AS p
LEFT JOIN session_plan_slots AS s ON s.session_id = p.session_id
GROUP BY p.session_id, p.site_id, p.departure_at, p.remaining_kwh, p.left_s;
