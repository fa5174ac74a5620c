-- ocpp.setpoint.commands: the upsert sink the executor consumes. Key: session_id; a session that leaves
-- session_setpoints is deleted with a tombstone.
CREATE SINK ocpp_setpoint_commands FROM session_setpoints
WITH (
    connector = 'kafka',
    topic = 'ocpp.setpoint.commands',
    primary_key = 'session_id'
) FORMAT UPSERT ENCODE JSON;
