-- Per-session cap and floor (DESIGN.md, allocation rule 2).
--   cap_kw   = the smallest of the EVSE rating and the EV's acceptance
--   floor_kw = the session's minimum charge rate, by default 6 A x phases x voltage (IEC 61851-1's
--              lowest PWM current), never above the cap
-- Sessions not placed on a site (charger missing from site.topology) are not allocated.
CREATE MATERIALIZED VIEW session_limits AS
WITH caps AS (
    SELECT
        session_id,
        charge_point_id,
        connector_id,
        transaction_id,
        site_id,
        node_id,
        COALESCE(phases, 3) AS phases,
        COALESCE(voltage_v, 230.0) AS voltage_v,
        COALESCE(priority, 0) AS priority,
        COALESCE(weight, 1.0) AS weight,
        started_at,
        LEAST(rated_power_kw, COALESCE(ev_max_power_kw, rated_power_kw)) AS cap_kw,
        COALESCE(min_power_kw, 6 * COALESCE(phases, 3) * COALESCE(voltage_v, 230.0) / 1000.0) AS min_kw
    FROM ocpp_active_sessions
    WHERE site_id IS NOT NULL
)
SELECT
    session_id,
    charge_point_id,
    connector_id,
    transaction_id,
    site_id,
    node_id,
    phases,
    voltage_v,
    priority,
    weight,
    started_at,
    cap_kw,
    LEAST(min_kw, cap_kw) AS floor_kw
FROM caps;
