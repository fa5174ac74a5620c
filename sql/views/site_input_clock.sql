-- Per site, the time of the latest input that setpoints reflect: meter readings, DR signals, and the
-- DR and tariff boundaries already passed. Every part is a maximum over append-only input or a delayed
-- temporal filter, so it never moves backwards: it is the setpoints' computed_at, and the executor can
-- drop any setpoint older than the one it holds.
CREATE MATERIALIZED VIEW site_input_clock AS
SELECT
    site_id,
    MAX(changed_at) AS changed_at
FROM (
    SELECT site_id, measured_at AS changed_at FROM bems_site_demand
    UNION ALL
    SELECT site_id, signal_at AS changed_at FROM utility_dr_signals
    UNION ALL
    SELECT site_id, event_start AS changed_at FROM utility_dr_signals WHERE event_start <= NOW()
    UNION ALL
    SELECT site_id, event_end AS changed_at FROM utility_dr_signals WHERE event_end <= NOW()
    UNION ALL
    SELECT site_id, valid_from AS changed_at FROM tariff_price_signals WHERE valid_from <= NOW()
) AS changes
GROUP BY site_id;
