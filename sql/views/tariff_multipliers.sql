-- Tariff shaping: the share of its cap a *flexible* session may take in each price tier (never below its
-- floor). The defaults are below; `pipeline param set tariff.multiplier.ON_PEAK 0.3` overrides one through
-- pipeline.params, without a migration (a value out of [0, 1] is refused by the topic's contract and
-- ignored here).
CREATE MATERIALIZED VIEW tariff_multipliers AS
SELECT
    d.price_tier,
    CASE WHEN p.value >= 0 AND p.value <= 1 THEN p.value ELSE d.multiplier END AS multiplier,
    CASE WHEN p.value >= 0 AND p.value <= 1 THEN 'set' ELSE 'default' END AS source
FROM (
    VALUES
        ('OFF_PEAK', 1.0),
        ('MID_PEAK', 1.0),
        ('ON_PEAK', 0.5),
        ('CRITICAL_PEAK', 0.0)
) AS d (price_tier, multiplier)
LEFT JOIN pipeline_params AS p ON p.name = 'tariff.multiplier.' || d.price_tier;
