-- EV headroom of every breaker (site, panel, charger) (docs/architecture.md, "Allocation", rule 1).
--   limit_kw    = the breaker's limit_kw, lowered by the smallest cap rule on the node; for a site also by
--                 the contracted limit the BEMS reports and by an active DR event (curtailment_pct of
--                 the site limit, or its limit_kw)
--   building_kw = sites only: current_demand_kw - ev_load_kw (never limit - current_demand, which counts
--                 the EVs twice), plus 10 % of the breaker limit when the meter is stale
--   fixed_kw    = unbalanced load below the node (unmanaged chargers, stale sessions, reservations)
--   headroom_kw = limit_kw - building_kw - fixed_kw, at least 0
-- A limit that is missing, not finite or outside (0, 100000] kW (100 MW: the bound of site.topology's
-- contract) means no headroom is known: headroom_kw is 0, never unlimited. The same holds for a result
-- that is not a finite number (a NaN reading): the headroom guard accepts only 0 <= x <= 100000.
--   limited_by  = what set limit_kw: a cap rule id, 'dr', or the node id itself
-- A node with a per-phase current rating (limit_a, A) also has headroom_a_r, headroom_a_s, headroom_a_t:
-- limit_a minus the building load (sites only; not metered per phase, so taken as balanced:
-- building_kw * 1000 / (3 x voltage_v) on each phase) minus the fixed load on that grid phase
-- (node_fixed_load), at least 0, and 0 when limit_a is outside (0, 4000] A (site.topology's bound).
-- Without limit_a they are null: the node has its kW limit alone.
CREATE MATERIALIZED VIEW node_headroom AS
WITH caps AS (
    SELECT
        scope_id AS node_id,
        rule_id,
        limit_kw
    FROM (
        SELECT
            scope_id,
            rule_id,
            limit_kw,
            ROW_NUMBER() OVER (PARTITION BY scope_id ORDER BY limit_kw, precedence DESC, rule_id) AS rn
        FROM active_rules
        WHERE action = 'cap' AND scope IN ('site', 'node')
    ) AS ranked
    WHERE rn = 1
),
limits AS (
    SELECT
        p.node_id,
        p.site_id,
        p.kind,
        p.depth,
        p.limit_kw AS breaker_limit_kw,
        CASE
            WHEN p.limit_a IS NULL THEN NULL
            WHEN p.limit_a > 0 AND p.limit_a <= 4000 THEN p.limit_a
            ELSE 0
        END AS limit_a,
        p.voltage_v,
        CASE
            WHEN NOT (p.limit_kw > 0 AND p.limit_kw <= 100000) THEN NULL
            WHEN p.kind = 'site' THEN LEAST(p.limit_kw, COALESCE(b.demand_limit_kw, p.limit_kw))
            ELSE p.limit_kw
        END AS base_kw,
        CASE
            WHEN p.kind = 'site'
                THEN COALESCE(b.building_kw, 0) + CASE WHEN b.stale THEN 0.1 * p.limit_kw ELSE 0 END
            ELSE 0
        END AS building_kw,
        dr.curtailment_pct,
        dr.limit_kw AS dr_limit_kw,
        c.rule_id AS cap_rule_id,
        c.limit_kw AS cap_kw,
        COALESCE(f.fixed_kw, 0) AS fixed_kw,
        COALESCE(f.fixed_a_r, 0) AS fixed_a_r,
        COALESCE(f.fixed_a_s, 0) AS fixed_a_s,
        COALESCE(f.fixed_a_t, 0) AS fixed_a_t
    FROM node_paths AS p
    LEFT JOIN site_building_load AS b ON b.site_id = p.node_id
    LEFT JOIN active_dr AS dr ON dr.site_id = p.node_id
    LEFT JOIN caps AS c ON c.node_id = p.node_id
    LEFT JOIN node_fixed_load AS f ON f.node_id = p.node_id
),
shaped AS (
    SELECT
        *,
        LEAST(base_kw * (1 - COALESCE(curtailment_pct, 0) / 100.0), COALESCE(dr_limit_kw, base_kw)) AS dr_kw
    FROM limits
),
capped AS (
    SELECT
        *,
        CASE WHEN base_kw IS NULL THEN 0 ELSE LEAST(dr_kw, COALESCE(cap_kw, dr_kw)) END AS in_force_kw,
        limit_a - building_kw * 1000.0 / (3 * voltage_v) - fixed_a_r AS spare_a_r,
        limit_a - building_kw * 1000.0 / (3 * voltage_v) - fixed_a_s AS spare_a_s,
        limit_a - building_kw * 1000.0 / (3 * voltage_v) - fixed_a_t AS spare_a_t
    FROM shaped
)
SELECT
    node_id,
    site_id,
    kind,
    depth,
    breaker_limit_kw,
    in_force_kw AS limit_kw,
    building_kw,
    fixed_kw,
    CASE
        WHEN in_force_kw - building_kw - fixed_kw > 0 AND in_force_kw - building_kw - fixed_kw <= 100000
            THEN in_force_kw - building_kw - fixed_kw
        ELSE 0
    END AS headroom_kw,
    CASE
        WHEN cap_kw IS NOT NULL AND cap_kw <= dr_kw THEN cap_rule_id
        WHEN dr_kw < base_kw THEN 'dr'
        ELSE node_id
    END AS limited_by,
    limit_a,
    CASE WHEN spare_a_r > 0 AND spare_a_r <= 4000 THEN spare_a_r WHEN limit_a IS NOT NULL THEN 0 END AS headroom_a_r,
    CASE WHEN spare_a_s > 0 AND spare_a_s <= 4000 THEN spare_a_s WHEN limit_a IS NOT NULL THEN 0 END AS headroom_a_s,
    CASE WHEN spare_a_t > 0 AND spare_a_t <= 4000 THEN spare_a_t WHEN limit_a IS NOT NULL THEN 0 END AS headroom_a_t
FROM capped;
