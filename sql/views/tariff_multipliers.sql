-- Tariff shaping: the share of its cap a *flexible* session may take in each price tier (never below its
-- floor). The values are the tariff.multiplier.<tier> parameters of pipeline_settings (defaults OFF_PEAK and
-- MID_PEAK 1, ON_PEAK 0.5, CRITICAL_PEAK 0); `pipeline param set tariff.multiplier.ON_PEAK 0.3` overrides one
-- through pipeline.params, without a migration.
CREATE MATERIALIZED VIEW tariff_multipliers AS
SELECT
    REPLACE(name, 'tariff.multiplier.', '') AS price_tier,
    value AS multiplier,
    source
FROM pipeline_settings
WHERE name LIKE 'tariff.multiplier.%';
