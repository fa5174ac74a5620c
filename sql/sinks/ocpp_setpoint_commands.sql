-- ocpp.setpoint.commands: the upsert sink the executor consumes. Key: session_id as plain text (KEY ENCODE
-- TEXT), the same key the executor and the embedded engine use; a session that leaves
-- session_setpoints is deleted with a tombstone. session_next_period adds the next known decrease
-- (next_change_at, next_setpoint_kw, next_setpoint_a; null when none is known within its horizon), which
-- the executor sends ahead as a later chargingSchedulePeriod.
CREATE SINK ocpp_setpoint_commands AS
SELECT
    s.*,
    n.next_change_at,
    n.next_setpoint_kw,
    n.next_setpoint_a
FROM session_setpoints AS s
LEFT JOIN session_next_period AS n ON n.session_id = s.session_id
WITH (
    connector = 'kafka',
    topic = 'ocpp.setpoint.commands',
    primary_key = 'session_id'
) FORMAT UPSERT ENCODE JSON KEY ENCODE TEXT;
