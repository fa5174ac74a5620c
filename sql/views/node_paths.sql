-- The breaker tree flattened: every node of site.topology (its limit_kw, its per-phase limit_a and
-- voltage_v) with its depth (the site is 0) and its ancestors by depth, anc0 (the site) .. anc5.
-- RisingWave has no recursive CTE, so the walk up the tree is unrolled; nodes deeper than 5 (or in a
-- parent cycle) are left out and raised by pipeline_alerts.
CREATE MATERIALIZED VIEW node_paths AS
WITH chain AS (
    SELECT
        n.node_id,
        n.site_id,
        n.kind,
        n.limit_kw,
        n.limit_a,
        n.voltage_v,
        n.managed,
        n.parent_id AS p1,
        t1.parent_id AS p2,
        t2.parent_id AS p3,
        t3.parent_id AS p4,
        t4.parent_id AS p5,
        t5.parent_id AS p6
    FROM site_topology AS n
    LEFT JOIN site_topology AS t1 ON t1.node_id = n.parent_id
    LEFT JOIN site_topology AS t2 ON t2.node_id = t1.parent_id
    LEFT JOIN site_topology AS t3 ON t3.node_id = t2.parent_id
    LEFT JOIN site_topology AS t4 ON t4.node_id = t3.parent_id
    LEFT JOIN site_topology AS t5 ON t5.node_id = t4.parent_id
),
depths AS (
    SELECT
        *,
        CASE
            WHEN p1 IS NULL THEN 0
            WHEN p2 IS NULL THEN 1
            WHEN p3 IS NULL THEN 2
            WHEN p4 IS NULL THEN 3
            WHEN p5 IS NULL THEN 4
            WHEN p6 IS NULL THEN 5
            ELSE 6
        END AS depth
    FROM chain
)
SELECT
    node_id,
    site_id,
    kind,
    limit_kw,
    limit_a,
    COALESCE(voltage_v, 230.0) AS voltage_v,
    managed,
    depth,
    p1 AS parent_id,
    CASE depth WHEN 0 THEN node_id WHEN 1 THEN p1 WHEN 2 THEN p2 WHEN 3 THEN p3 WHEN 4 THEN p4 WHEN 5 THEN p5 END
        AS anc0,
    CASE depth WHEN 1 THEN node_id WHEN 2 THEN p1 WHEN 3 THEN p2 WHEN 4 THEN p3 WHEN 5 THEN p4 END AS anc1,
    CASE depth WHEN 2 THEN node_id WHEN 3 THEN p1 WHEN 4 THEN p2 WHEN 5 THEN p3 END AS anc2,
    CASE depth WHEN 3 THEN node_id WHEN 4 THEN p1 WHEN 5 THEN p2 END AS anc3,
    CASE depth WHEN 4 THEN node_id WHEN 5 THEN p1 END AS anc4,
    CASE depth WHEN 5 THEN node_id END AS anc5
FROM depths
WHERE depth <= 5;
