-- Energy per charger per day (UTC), for analysts: the sessions of session_history that ended that day, all
-- their energy and cost counted on the day they ended (a session across midnight is not split).
CREATE MATERIALIZED VIEW charger_daily_energy AS
SELECT
    site_id,
    charge_point_id,
    CAST(DATE_TRUNC('day', ended_at AT TIME ZONE 'UTC') AS DATE) AS day_utc,
    COUNT(*) AS sessions,
    SUM(energy_kwh) AS energy_kwh,
    SUM(duration_s) AS charging_s,
    MAX(peak_power_kw) AS peak_power_kw,
    SUM(cost) AS cost
FROM session_history
WHERE ended_at IS NOT NULL
GROUP BY site_id, charge_point_id, CAST(DATE_TRUNC('day', ended_at AT TIME ZONE 'UTC') AS DATE);
