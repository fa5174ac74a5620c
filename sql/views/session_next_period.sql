-- The next known decrease of each session's setpoint within the schedule horizon (3600 s), so the executor
-- can send it ahead as a later chargingSchedulePeriod of the TxProfile and the charger cuts on time on its
-- own, even when the link or the executor is down at that instant (docs/architecture.md, "Schedule
-- periods"). One row per session with a decrease ahead; the ocpp_setpoint_commands sink joins it in.
--   next_change_at   = the earliest instant within the horizon at which a known input lowers the session
--   next_setpoint_kw = the setpoint from then on, rounded down like setpoint_kw (1 W); next_setpoint_a the
--                      same share of setpoint_a, rounded down to 0.1 A
-- Each value is safe on its own, computed from the inputs known now:
--   * a DR event starting at T, or a cap rule on a site or node starting at T, gives the breaker a limit L
--     (the DR limit as node_headroom computes it, or the cap, never above the limit in force now); the
--     sessions under it are scaled so their sum fits L - building load - fixed load now: those an override
--     runs (session_limits gives them the top priority) first, by LEAST(1, room / their sum), the others
--     by what is left over their sum, as admission at T would; a scaled value below the session's floor
--     becomes 0;
--   * a pause rule starting at T sets every session in its scope to 0; a cap rule on a session or charger
--     caps it at limit_kw (session_limits lowers the floor to such a cap, so this is the engine's own value);
--   * a tariff slot starting at T with a lower multiplier than the tier in force scales a flexible
--     session's cap by new / current multiplier, never below its floor (that is session_limits' cap at T).
-- Only decreases are kept, and only the earliest per session (the lowest value at that instant): an
-- increase waits for the engine to evaluate the site at the boundary, and the command it then sends
-- carries the next decrease. Stale and unmanaged sessions get none (they count as fixed load).
-- The horizon is a constant because RisingWave needs a constant interval in a temporal filter.
CREATE MATERIALIZED VIEW session_next_period AS
WITH live AS (
    SELECT
        s.session_id,
        s.site_id,
        s.node_id,
        s.charge_point_id,
        s.setpoint_kw,
        s.setpoint_a,
        l.floor_kw,
        l.cap_kw,
        l.priority = 2147483647 AS pinned,
        t.flexible
    FROM session_setpoints AS s
    JOIN session_limits AS l ON l.session_id = s.session_id
    JOIN session_telemetry AS t ON t.session_id = s.session_id
),
node_load AS (
    SELECT
        a.ancestor_id AS node_id,
        SUM(CASE WHEN v.pinned THEN v.setpoint_kw ELSE 0 END) AS pinned_kw,
        SUM(CASE WHEN v.pinned THEN 0 ELSE v.setpoint_kw END) AS free_kw
    FROM live AS v
    JOIN node_ancestors AS a ON a.node_id = v.node_id
    GROUP BY a.ancestor_id
),
dr_ahead AS (
    SELECT
        site_id,
        curtailment_pct,
        limit_kw,
        event_start
    FROM (
        SELECT
            site_id,
            curtailment_pct,
            limit_kw,
            event_start,
            event_end,
            ROW_NUMBER() OVER (PARTITION BY site_id, dr_event_id ORDER BY signal_at DESC) AS rn
        FROM utility_dr_signals
    ) AS events
    WHERE rn = 1 AND event_start > NOW() AND event_start <= NOW() + INTERVAL '3600 seconds'
),
rules_ahead AS (
    SELECT
        rule_id,
        scope,
        scope_id,
        action,
        limit_kw,
        valid_from
    FROM control_rules
    WHERE
        action IN ('cap', 'pause')
        AND valid_from > NOW()
        AND valid_from <= NOW() + INTERVAL '3600 seconds'
),
slots_ahead AS (
    SELECT
        site_id,
        price_tier,
        valid_from
    FROM tariff_price_signals
    WHERE valid_from > NOW() AND valid_from <= NOW() + INTERVAL '3600 seconds'
),
breaker_limits AS (
    SELECT
        h.node_id,
        d.event_start AS change_at,
        LEAST(
            h.limit_kw,
            LEAST(h.breaker_limit_kw, COALESCE(b.demand_limit_kw, h.breaker_limit_kw))
            * (1 - COALESCE(d.curtailment_pct, 0) / 100.0),
            COALESCE(d.limit_kw, h.limit_kw)
        ) AS limit_kw,
        h.building_kw + h.fixed_kw AS other_kw
    FROM dr_ahead AS d
    JOIN node_headroom AS h ON h.node_id = d.site_id
    LEFT JOIN site_building_load AS b ON b.site_id = d.site_id
    UNION ALL
    SELECT
        h.node_id,
        r.valid_from AS change_at,
        LEAST(h.limit_kw, r.limit_kw) AS limit_kw,
        h.building_kw + h.fixed_kw AS other_kw
    FROM rules_ahead AS r
    JOIN node_headroom AS h ON h.node_id = r.scope_id
    WHERE r.action = 'cap' AND r.scope IN ('site', 'node')
),
scaled AS (
    SELECT
        v.session_id,
        v.site_id,
        f.change_at,
        v.setpoint_kw,
        v.setpoint_a,
        v.floor_kw,
        CASE
            WHEN n.pinned_kw + n.free_kw <= f.limit_kw - f.other_kw THEN v.setpoint_kw
            WHEN v.pinned THEN v.setpoint_kw * LEAST(1, GREATEST(f.limit_kw - f.other_kw, 0) / NULLIF(n.pinned_kw, 0))
            ELSE v.setpoint_kw * GREATEST(f.limit_kw - f.other_kw - n.pinned_kw, 0) / NULLIF(n.free_kw, 0)
        END AS scaled_kw
    FROM breaker_limits AS f
    JOIN node_load AS n ON n.node_id = f.node_id
    JOIN node_ancestors AS a ON a.ancestor_id = f.node_id
    JOIN live AS v ON v.node_id = a.node_id
),
candidates AS (
    SELECT
        session_id,
        site_id,
        change_at,
        setpoint_kw,
        setpoint_a,
        CASE WHEN scaled_kw < floor_kw THEN 0 ELSE scaled_kw END AS next_kw
    FROM scaled
    UNION ALL
    SELECT v.session_id, v.site_id, r.valid_from AS change_at, v.setpoint_kw, v.setpoint_a, 0 AS next_kw
    FROM rules_ahead AS r
    JOIN node_ancestors AS a ON a.ancestor_id = r.scope_id
    JOIN live AS v ON v.node_id = a.node_id
    WHERE r.action = 'pause' AND r.scope IN ('site', 'node')
    UNION ALL
    SELECT
        v.session_id,
        v.site_id,
        r.valid_from AS change_at,
        v.setpoint_kw,
        v.setpoint_a,
        CASE WHEN r.action = 'pause' THEN 0 ELSE LEAST(v.setpoint_kw, r.limit_kw) END AS next_kw
    FROM rules_ahead AS r
    JOIN live AS v ON v.session_id = r.scope_id
    WHERE r.scope = 'session'
    UNION ALL
    SELECT
        v.session_id,
        v.site_id,
        r.valid_from AS change_at,
        v.setpoint_kw,
        v.setpoint_a,
        CASE WHEN r.action = 'pause' THEN 0 ELSE LEAST(v.setpoint_kw, r.limit_kw) END AS next_kw
    FROM rules_ahead AS r
    JOIN live AS v ON v.charge_point_id = r.scope_id
    WHERE r.scope = 'charger'
    UNION ALL
    SELECT
        v.session_id,
        v.site_id,
        p.valid_from AS change_at,
        v.setpoint_kw,
        v.setpoint_a,
        LEAST(v.setpoint_kw, GREATEST(v.floor_kw, v.cap_kw * mn.multiplier / COALESCE(mc.multiplier, 1.0)))
            AS next_kw
    FROM slots_ahead AS p
    JOIN live AS v ON v.site_id = p.site_id
    JOIN tariff_multipliers AS mn ON mn.price_tier = p.price_tier
    LEFT JOIN current_price_tier AS c ON c.site_id = p.site_id
    LEFT JOIN tariff_multipliers AS mc ON mc.price_tier = c.price_tier
    WHERE v.flexible AND mn.multiplier < COALESCE(mc.multiplier, 1.0)
),
ranked AS (
    SELECT
        session_id,
        site_id,
        change_at,
        setpoint_kw,
        setpoint_a,
        next_kw,
        ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY change_at, next_kw) AS rn
    FROM candidates
    WHERE next_kw < setpoint_kw - 0.0005
)
SELECT
    session_id,
    site_id,
    change_at AS next_change_at,
    FLOOR(GREATEST(next_kw, 0) * 1000 + 1e-6) / 1000.0 AS next_setpoint_kw,
    FLOOR(setpoint_a * GREATEST(next_kw, 0) / setpoint_kw * 10 + 1e-6) / 10.0 AS next_setpoint_a
FROM ranked
WHERE rn = 1;
