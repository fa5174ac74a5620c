-- Every tunable parameter in force: its default (below, equal to pipeline.contracts.topics.PARAMETERS, a
-- test holds them so), its bounds, and the value an operator set on pipeline.params when there is one within
-- them (`pipeline param set alert.clock_skew.threshold_s 120`; `param clear` returns to the default). A value
-- out of bounds is refused by the topic's contract and ignored here. Views read a parameter as a scalar
-- subquery, (SELECT MAX(value) FROM pipeline_settings WHERE name = '...'), compared with a column: that is a
-- RisingWave dynamic filter, not a streaming nested-loop join (which RisingWave refuses).
CREATE MATERIALIZED VIEW pipeline_settings AS
SELECT
    d.name,
    CASE
        WHEN p.value >= d.min_value AND p.value <= d.max_value THEN p.value
        ELSE CAST(d.default_value AS DOUBLE PRECISION)
    END AS value,
    CASE WHEN p.value >= d.min_value AND p.value <= d.max_value THEN 'set' ELSE 'default' END AS source,
    CAST(d.default_value AS DOUBLE PRECISION) AS default_value,
    CAST(d.min_value AS DOUBLE PRECISION) AS min_value,
    CAST(d.max_value AS DOUBLE PRECISION) AS max_value
FROM (
    VALUES
        ('tariff.multiplier.OFF_PEAK', 1.0, 0.0, 1.0),
        ('tariff.multiplier.MID_PEAK', 1.0, 0.0, 1.0),
        ('tariff.multiplier.ON_PEAK', 0.5, 0.0, 1.0),
        ('tariff.multiplier.CRITICAL_PEAK', 0.0, 0.0, 1.0),
        ('alert.setpoint_deviation.margin_kw', 1.0, 0.0, 4000.0),
        ('alert.setpoint_deviation.margin_share', 0.1, 0.0, 10.0),
        ('alert.setpoint_deviation.delay_s', 60.0, 0.0, 3600.0),
        ('alert.node_over_limit.margin_kw', 0.5, 0.0, 100000.0),
        ('alert.clock_skew.threshold_s', 60.0, 1.0, 86400.0)
) AS d (name, default_value, min_value, max_value)
LEFT JOIN pipeline_params AS p ON p.name = d.name;
