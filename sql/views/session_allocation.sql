-- Per-site allocation (DESIGN.md, allocation rules 3 and 4).
-- Admission: sessions ordered by priority (high first), then arrival, are admitted while the running sum
-- of their floors fits in the site's headroom; the rest are paused (0), never all set to their floor.
-- Fill: admitted sessions get their floor plus a weighted max-min fair share of the spare headroom, up to
-- their cap. This is water-filling: with extra_i = cap_i - floor_i and sessions sorted by
-- extra_i / weight_i, session k is saturated (gets its cap) iff
--     sum(extra_j, j <= k) + (extra_k / weight_k) * sum(weight_j, j > k) <= spare
-- and the unsaturated share the rest at the water level
--     (spare - sum of saturated extras) / sum of unsaturated weights, times their weight.
CREATE MATERIALIZED VIEW session_allocation AS
WITH ranked AS (
    SELECT
        l.session_id,
        l.charge_point_id,
        l.connector_id,
        l.transaction_id,
        l.site_id,
        l.node_id,
        l.phases,
        l.voltage_v,
        l.priority,
        l.weight,
        l.started_at,
        l.cap_kw,
        l.floor_kw,
        h.headroom_kw,
        h.limited_by,
        SUM(l.floor_kw) OVER (
            PARTITION BY l.site_id
            ORDER BY l.priority DESC, l.started_at, l.session_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS cum_floor_kw
    FROM session_limits AS l
    JOIN site_headroom AS h ON h.site_id = l.site_id
),
admitted AS (
    SELECT
        *,
        (cap_kw - floor_kw) / weight AS fill_ratio
    FROM ranked
    WHERE cum_floor_kw <= headroom_kw + 1e-9
),
filled AS (
    SELECT
        *,
        headroom_kw - SUM(floor_kw) OVER (PARTITION BY site_id) AS spare_kw,
        SUM(cap_kw - floor_kw) OVER (
            PARTITION BY site_id ORDER BY fill_ratio, session_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS cum_extra_kw,
        SUM(weight) OVER (PARTITION BY site_id) - SUM(weight) OVER (
            PARTITION BY site_id ORDER BY fill_ratio, session_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS weight_after
    FROM admitted
),
marked AS (
    SELECT
        *,
        cum_extra_kw + fill_ratio * weight_after <= spare_kw + 1e-9 AS saturated
    FROM filled
),
levels AS (
    SELECT
        site_id,
        MAX(spare_kw) AS spare_kw,
        COALESCE(MAX(cum_extra_kw) FILTER (WHERE saturated), 0) AS saturated_extra_kw,
        COALESCE(MIN(weight_after) FILTER (WHERE saturated), SUM(weight)) AS unsaturated_weight
    FROM marked
    GROUP BY site_id
)
SELECT
    m.session_id,
    m.charge_point_id,
    m.connector_id,
    m.transaction_id,
    m.site_id,
    m.node_id,
    m.phases,
    m.voltage_v,
    m.started_at,
    m.cap_kw,
    m.floor_kw,
    m.headroom_kw,
    CASE
        WHEN m.saturated THEN m.cap_kw
        ELSE m.floor_kw + m.weight * (v.spare_kw - v.saturated_extra_kw) / v.unsaturated_weight
    END AS allocated_kw,
    CASE WHEN m.saturated THEN 'cap' ELSE m.limited_by END AS binding
FROM marked AS m
JOIN levels AS v ON v.site_id = m.site_id
UNION ALL
SELECT
    session_id,
    charge_point_id,
    connector_id,
    transaction_id,
    site_id,
    node_id,
    phases,
    voltage_v,
    started_at,
    cap_kw,
    floor_kw,
    headroom_kw,
    0.0 AS allocated_kw,
    'paused' AS binding
FROM ranked
WHERE cum_floor_kw > headroom_kw + 1e-9;
