-- The last setpoint each session's charger accepted (from ocpp.setpoint.acks).
CREATE MATERIALIZED VIEW session_last_accepted AS
SELECT
    session_id,
    setpoint_kw,
    answered_at
FROM (
    SELECT
        session_id,
        setpoint_kw,
        answered_at,
        ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY answered_at DESC) AS rn
    FROM ocpp_setpoint_acks
    WHERE status = 'Accepted' AND action = 'SetChargingProfile' AND session_id IS NOT NULL
        AND COALESCE(purpose, 'Tx') = 'Tx'
) AS accepted
WHERE rn = 1;
