-- Fleet plans: each planned session's price slots up to its departure (price_slots: the slot in force now
-- and the later ones that start before the departure), ranked by price, cheapest first (an earlier slot
-- first at equal price, so the slot in force now wins a tie). usable_s is the part of the slot before the
-- departure (the whole slot for the one in force now); cheaper_s the usable seconds of the slots ranked
-- before it. Time no slot covers (past the published horizon) ranks after every slot: a plan never waits
-- for a price it does not know.
CREATE MATERIALIZED VIEW session_plan_slots AS
WITH slots AS (
    SELECT
        p.session_id,
        p.site_id,
        TRUE AS in_force,
        s.valid_from,
        s.slot_end,
        s.price_per_kwh,
        s.price_tier,
        CAST(EXTRACT(EPOCH FROM (s.slot_end - s.valid_from)) AS DOUBLE PRECISION) AS usable_s
    FROM session_plan_targets AS p
    JOIN (SELECT * FROM price_slots WHERE valid_from <= NOW() AND slot_end > NOW()) AS s ON s.site_id = p.site_id
    UNION ALL
    SELECT
        p.session_id,
        p.site_id,
        FALSE AS in_force,
        s.valid_from,
        s.slot_end,
        s.price_per_kwh,
        s.price_tier,
        CAST(EXTRACT(EPOCH FROM (LEAST(s.slot_end, p.departure_at) - s.valid_from)) AS DOUBLE PRECISION) AS usable_s
    FROM session_plan_targets AS p
    JOIN (SELECT * FROM price_slots WHERE valid_from > NOW()) AS s
        ON s.site_id = p.site_id AND s.valid_from < p.departure_at
)
SELECT
    session_id,
    site_id,
    in_force,
    valid_from,
    slot_end,
    price_per_kwh,
    price_tier,
    usable_s,
    ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY price_per_kwh, valid_from) AS price_rank,
    COALESCE(
        SUM(usable_s) OVER (
            PARTITION BY session_id ORDER BY price_per_kwh, valid_from ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ),
        0
    ) AS cheaper_s
FROM slots;
