-- The price slots per site that are in force now or later: a day-ahead curve published ahead of time
-- keeps every future slot here until it ends (tariff.price.signals is append-only; current_price_tier
-- keeps only the slot in force). One slot per start (the highest price when several signals name the same
-- valid_from, the tie current_price_tier breaks the same way); a slot ends at its valid_to or at the next
-- slot's start, whichever is first (slot_end), so slots never overlap.
CREATE MATERIALIZED VIEW price_slots AS
SELECT
    site_id,
    tariff_id,
    price_per_kwh,
    currency,
    price_tier,
    valid_from,
    valid_to,
    LEAST(valid_to, COALESCE(LEAD(valid_from) OVER (PARTITION BY site_id ORDER BY valid_from), valid_to)) AS slot_end
FROM (
    SELECT
        site_id,
        tariff_id,
        price_per_kwh,
        currency,
        price_tier,
        valid_from,
        valid_to,
        ROW_NUMBER() OVER (PARTITION BY site_id, valid_from ORDER BY price_per_kwh DESC, valid_to DESC) AS rn
    FROM tariff_price_signals
    WHERE valid_to > NOW()
) AS signals
WHERE rn = 1;
