-- The price in force now per site: the signal whose [valid_from, valid_to) holds NOW(), latest first.
CREATE MATERIALIZED VIEW current_price_tier AS
SELECT
    site_id,
    tariff_id,
    price_per_kwh,
    currency,
    price_tier,
    valid_from,
    valid_to
FROM (
    SELECT
        site_id,
        tariff_id,
        price_per_kwh,
        currency,
        price_tier,
        valid_from,
        valid_to,
        ROW_NUMBER() OVER (PARTITION BY site_id ORDER BY valid_from DESC, price_per_kwh DESC) AS rn
    FROM tariff_price_signals
    WHERE valid_from <= NOW() AND valid_to > NOW()
) AS prices
WHERE rn = 1;
