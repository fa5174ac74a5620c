-- Tariff shaping: the share of its cap a *flexible* session may take in each price tier (never below its
-- floor). Change the figures here and migrate.
CREATE MATERIALIZED VIEW tariff_multipliers AS
SELECT
    price_tier,
    multiplier
FROM (
    VALUES
        ('OFF_PEAK', 1.0),
        ('MID_PEAK', 1.0),
        ('ON_PEAK', 0.5),
        ('CRITICAL_PEAK', 0.0)
) AS t (price_tier, multiplier);
