-- The last setpoint each live session's charger accepted (from ocpp.setpoint.acks), with its site.
CREATE MATERIALIZED VIEW session_last_accepted AS
SELECT
    session_id,
    setpoint_kw,
    answered_at,
    site_id
FROM (
    SELECT
        a.session_id,
        a.setpoint_kw,
        a.answered_at,
        s.site_id,
        ROW_NUMBER() OVER (PARTITION BY a.session_id ORDER BY a.answered_at DESC) AS rn
    FROM ocpp_setpoint_acks AS a
    JOIN ocpp_active_sessions AS s ON s.session_id = a.session_id
    WHERE a.status = 'Accepted' AND a.action = 'SetChargingProfile'
        AND COALESCE(a.purpose, 'Tx') = 'Tx'
) AS accepted
WHERE rn = 1;
