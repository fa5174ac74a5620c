-- Per-session cap, floor and priority (docs/architecture.md, "Allocation", rule 2), after rules and tariff shaping.
--   cap_kw   = the smallest of the EVSE rating, the EV's acceptance, what the EV has shown it takes
--              (learned_cap_kw), the EVSE's per-phase rating on the EV's phases (rating x ev_phases /
--              phases, for a 1- or 2-phase EV) and the cap rules on the session or its charger (nulls
--              ignored); a flexible session's cap is scaled by its price tier's multiplier
--              (tariff_multipliers), never below its floor
--   floor_kw = the session's minimum rate, by default 6 A x ev_phases x voltage (6 A: the lowest current
--              an EV may be offered, IEC 61851-1), never above the cap
--   plans    = a session with a plan (session_plan_needs) is not shaped by the tariff: it charges now at its
--              cap when it is urgent (session_plan_needs), when the slots cheaper than now before its
--              departure cannot hold what remains at its expected rate (the least of its cap, the rate it
--              last showed it charges at, ev_rate_kw, and its share of the site's headroom, share_kw), or
--              when shared_laxity_s (seconds to departure minus the time its remaining energy takes at
--              that rate) is 900 or less, plus half that time for the taper as the battery fills (the factor 1.5 of
--              session_plan_needs); else its cap is 0 ('plan'), and a plan met is 0 too
--   weight   = the session's fair-share weight, times 1000 and times the rate its plan needs (need_kw:
--              plan_timed_kwh over the seconds to departure, at least 60, in kW, at least 1) while its
--              plan is at risk (urgent, or the laxity rule above): under a binding breaker the sessions at
--              risk take the headroom first, and share what is above their floors in proportion to the
--              rates they need (a need that cannot be met, laxity_s below 0, does not take it all ahead
--              of one that can); the others share what they leave; never above 1000000
--   timing   = every time a plan's remaining energy takes below is plan_timed_kwh (session_plan_needs'
--              timed_kwh: remaining_kwh x the battery's taper_factor, when its SoC and size are known)
--              over a rate
--   reserve_kw = what admission holds for it from the sessions after it that are not at risk: its cap while
--              its plan is at risk, else its floor (session_admission)
--   laxity_s = seconds to departure minus the time the remaining energy takes at the session's own rate
--              (its cap or ev_rate_kw, the less; no share): the order of admission, least first
--   learning = a planned session whose EV has not shown its rate yet (ev_rate_kw null) charges at its cap
--              until it does: its plan cannot be timed before, nor its phases known
--   override = a session or charger override runs the session at its limit_kw (floor = cap), ahead of
--              everyone in admission; only caps and pauses of equal or higher precedence still apply
--   paused_by = the pause rule (on the session, its charger or any breaker above it) that stops it
--   on_r, on_s, on_t = the grid phases the EV loads (session_telemetry); a_per_kw = the current per
--              loaded phase for 1 kW, 1000 / (ev_phases x voltage), in A
-- Only managed sessions with fresh telemetry, on a tree rooted at a site, are allocated here.
CREATE MATERIALIZED VIEW session_limits AS
WITH live AS (
    SELECT
        t.*,
        p.kind AS attach_kind,
        p.parent_id AS attach_parent_id,
        p.anc0,
        p.anc1,
        p.anc2,
        p.anc3,
        p.anc4,
        p.anc5
    FROM session_telemetry AS t
    JOIN node_paths AS p ON p.node_id = t.attach_id
    JOIN site_topology AS root ON root.node_id = p.anc0 AND root.kind = 'site'
    WHERE t.managed AND NOT t.stale
),
session_rules AS (
    SELECT l.session_id, r.rule_id, r.action, r.limit_kw, r.precedence, 2 AS specificity
    FROM live AS l
    JOIN active_rules AS r ON r.scope = 'session' AND r.scope_id = l.session_id
    UNION ALL
    SELECT l.session_id, r.rule_id, r.action, r.limit_kw, r.precedence, 1 AS specificity
    FROM live AS l
    JOIN active_rules AS r ON r.scope = 'charger' AND r.scope_id = l.charge_point_id
    UNION ALL
    SELECT l.session_id, r.rule_id, r.action, r.limit_kw, r.precedence, 0 AS specificity
    FROM live AS l
    JOIN node_ancestors AS a ON a.node_id = l.attach_id
    JOIN active_rules AS r ON r.scope IN ('site', 'node') AND r.scope_id = a.ancestor_id
    WHERE r.action = 'pause'
),
overrides AS (
    SELECT session_id, rule_id, limit_kw, precedence
    FROM (
        SELECT
            session_id,
            rule_id,
            limit_kw,
            precedence,
            ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY precedence DESC, specificity DESC, rule_id) AS rn
        FROM session_rules
        WHERE action = 'override'
    ) AS ranked
    WHERE rn = 1
),
applicable AS (
    SELECT
        r.session_id,
        r.rule_id,
        r.action,
        r.limit_kw,
        ROW_NUMBER() OVER (
            PARTITION BY r.session_id, r.action ORDER BY r.limit_kw, r.precedence DESC, r.rule_id
        ) AS rn
    FROM session_rules AS r
    LEFT JOIN overrides AS o ON o.session_id = r.session_id
    WHERE r.action IN ('cap', 'pause') AND (o.precedence IS NULL OR r.precedence >= o.precedence)
),
capped AS (
    SELECT
        l.*,
        LEAST(
            l.rated_power_kw,
            COALESCE(l.ev_max_power_kw, l.rated_power_kw),
            COALESCE(l.learned_cap_kw, l.rated_power_kw),
            l.rated_power_kw * l.ev_phases / l.phases
        ) AS device_cap_kw,
        c.limit_kw AS rule_cap_kw,
        c.rule_id AS cap_rule_id,
        pz.rule_id AS paused_by,
        o.rule_id AS override_rule_id,
        o.limit_kw AS override_kw,
        COALESCE(m.multiplier, 1.0) AS multiplier,
        COALESCE(l.min_power_kw, 6 * l.ev_phases * l.voltage_v / 1000.0) AS min_kw,
        pn.remaining_kwh AS plan_remaining_kwh,
        pn.timed_kwh AS plan_timed_kwh,
        pn.left_s AS plan_left_s,
        pn.cheaper_s AS plan_cheaper_s,
        pn.share_kw AS plan_share_kw,
        pn.urgent AS plan_urgent
    FROM live AS l
    LEFT JOIN applicable AS c ON c.session_id = l.session_id AND c.action = 'cap' AND c.rn = 1
    LEFT JOIN applicable AS pz ON pz.session_id = l.session_id AND pz.action = 'pause' AND pz.rn = 1
    LEFT JOIN overrides AS o ON o.session_id = l.session_id
    LEFT JOIN current_price_tier AS pt ON pt.site_id = l.site_id
    LEFT JOIN tariff_multipliers AS m ON m.price_tier = pt.price_tier AND l.flexible
    LEFT JOIN session_plan_needs AS pn ON pn.session_id = l.session_id
),
ruled AS (
    SELECT
        *,
        LEAST(device_cap_kw, COALESCE(rule_cap_kw, device_cap_kw)) AS ruled_cap_kw,
        LEAST(device_cap_kw, COALESCE(rule_cap_kw, device_cap_kw), COALESCE(ev_rate_kw, device_cap_kw))
            AS plan_own_rate_kw,
        LEAST(
            device_cap_kw,
            COALESCE(rule_cap_kw, device_cap_kw),
            COALESCE(plan_share_kw, device_cap_kw),
            COALESCE(ev_rate_kw, device_cap_kw)
        ) AS plan_rate_kw
    FROM capped
),
-- laxity_s at the session's own rate (admission order, the weight's tiers); shared_laxity_s at its rate
-- with its share of the breaker (the at-risk and cheaper-slot rules)
rated AS (
    SELECT
        *,
        plan_left_s - plan_timed_kwh * 3600.0 / NULLIF(plan_own_rate_kw, 0) AS laxity_s,
        plan_left_s - plan_timed_kwh * 3600.0 / NULLIF(plan_rate_kw, 0) AS shared_laxity_s
    FROM ruled
),
-- the need is at risk: urgent, or laxity within 900 s plus half the time at the expected rate (the taper)
risked AS (
    SELECT
        *,
        plan_urgent OR shared_laxity_s <= 900 + 0.5 * plan_timed_kwh * 3600.0 / NULLIF(plan_rate_kw, 0)
            AS plan_at_risk
    FROM rated
),
shaped AS (
    SELECT
        *,
        CASE
            WHEN override_kw IS NOT NULL THEN LEAST(override_kw, ruled_cap_kw)
            WHEN plan_remaining_kwh IS NOT NULL THEN CASE
                WHEN plan_remaining_kwh <= 0 THEN 0.0
                WHEN ev_rate_kw IS NULL THEN ruled_cap_kw
                WHEN plan_at_risk OR shared_laxity_s IS NULL THEN ruled_cap_kw
                WHEN plan_timed_kwh > plan_rate_kw * plan_cheaper_s / 3600.0 + 1e-9 THEN ruled_cap_kw
                ELSE 0.0
            END
            ELSE GREATEST(LEAST(min_kw, ruled_cap_kw), ruled_cap_kw * multiplier)
        END AS cap_kw
    FROM risked
)
SELECT
    session_id,
    charge_point_id,
    connector_id,
    transaction_id,
    site_id,
    CASE WHEN attach_kind = 'charger' THEN attach_parent_id ELSE attach_id END AS node_id,
    phases,
    ev_phases,
    on_r,
    on_s,
    on_t,
    1000.0 / (ev_phases * voltage_v) AS a_per_kw,
    voltage_v,
    CASE WHEN override_kw IS NOT NULL THEN 2147483647 ELSE priority END AS priority,
    -- a plan at risk fills first (plan_weight in pipeline/allocation/plans.py): urgent, or laxity within
    -- 900 s plus the taper's allowance, x 1000 x the rate it needs to be met by its departure (kW, at
    -- least 1); the others share what they leave; at most 1000000
    CASE
        WHEN override_kw IS NULL AND plan_remaining_kwh > 0 AND plan_at_risk
            THEN LEAST(
                weight * 1000.0 * GREATEST(plan_timed_kwh * 3600.0 / GREATEST(plan_left_s, 60), 1.0), 1000000.0
            )
        ELSE weight
    END AS weight,
    started_at,
    cap_kw,
    CASE WHEN override_kw IS NOT NULL THEN cap_kw ELSE LEAST(min_kw, cap_kw) END AS floor_kw,
    -- what it holds in admission from the sessions after it that are not at risk: its cap while its plan is
    -- at risk (it takes the headroom up to its cap before one that can wait gets a floor), else its floor
    CASE
        WHEN override_kw IS NOT NULL OR (plan_remaining_kwh > 0 AND plan_at_risk) THEN cap_kw
        ELSE LEAST(min_kw, cap_kw)
    END AS reserve_kw,
    CASE
        WHEN override_kw IS NOT NULL AND override_kw <= ruled_cap_kw THEN override_rule_id
        WHEN cap_kw < ruled_cap_kw AND plan_remaining_kwh IS NOT NULL THEN 'plan'
        WHEN cap_kw < ruled_cap_kw THEN 'tariff'
        WHEN rule_cap_kw IS NOT NULL AND rule_cap_kw <= device_cap_kw THEN cap_rule_id
        ELSE 'cap'
    END AS cap_binding,
    paused_by,
    laxity_s,
    anc0,
    anc1,
    anc2,
    anc3,
    anc4,
    anc5
FROM shaped;
