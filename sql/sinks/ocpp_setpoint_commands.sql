-- ocpp.setpoint.commands: the upsert sink the executor consumes. Key: session_id as plain text (KEY ENCODE
-- TEXT), the same key the executor and the embedded engine use; a session that leaves
-- session_setpoints is deleted with a tombstone.
CREATE SINK ocpp_setpoint_commands FROM session_setpoints
WITH (
    connector = 'kafka',
    topic = 'ocpp.setpoint.commands',
    primary_key = 'session_id'
) FORMAT UPSERT ENCODE JSON KEY ENCODE TEXT;
