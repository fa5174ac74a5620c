-- Sessions placed on the breaker tree, with their freshness.
--   attach_id: the session's charger node, else its node_id, else its site (for chargers not in
--              site.topology, e.g. in what-if snapshots)
--   managed:   false for chargers left out of balancing (VIP, dedicated lines)
--   stale:     no meter data for 600 s (the session-telemetry staleness threshold; one place to change)
--   ev_phases: the phases the EV draws on (its own report, else the charger's), never more than the
--              charger's; phase_rotation: the charger's wiring ('RST' when not reported)
--   on_r, on_s, on_t: 1 for each grid phase the EV loads (phase_wiring), 0 for the others
CREATE MATERIALIZED VIEW session_telemetry AS
WITH placed AS (
    SELECT
        s.session_id,
        s.charge_point_id,
        s.connector_id,
        s.transaction_id,
        COALESCE(c.site_id, n.site_id, t.site_id) AS site_id,
        COALESCE(c.node_id, n.node_id, t.node_id) AS attach_id,
        COALESCE(c.managed, TRUE) AS managed,
        s.rated_power_kw,
        s.ev_max_power_kw,
        s.min_power_kw,
        COALESCE(s.phases, 3) AS phases,
        LEAST(COALESCE(s.ev_phases, s.phases, 3), COALESCE(s.phases, 3)) AS ev_phases,
        COALESCE(s.phase_rotation, 'RST') AS phase_rotation,
        COALESCE(w.on_r, 1) AS on_r,
        COALESCE(w.on_s, 1) AS on_s,
        COALESCE(w.on_t, 1) AS on_t,
        COALESCE(s.voltage_v, 230.0) AS voltage_v,
        COALESCE(s.priority, 0) AS priority,
        COALESCE(s.weight, 1.0) AS weight,
        COALESCE(s.flexible, FALSE) AS flexible,
        s.started_at,
        s.current_power_kw,
        s.learned_cap_kw,
        s.ev_rate_kw,
        COALESCE(s.sampled_at, s.started_at) AS seen_at
    FROM ocpp_active_sessions AS s
    LEFT JOIN site_topology AS c ON c.node_id = s.charge_point_id AND c.kind = 'charger'
    LEFT JOIN site_topology AS n ON n.node_id = s.node_id AND n.kind <> 'charger'
    LEFT JOIN site_topology AS t ON t.node_id = s.site_id AND t.kind = 'site'
    LEFT JOIN phase_wiring AS w
        ON w.phase_rotation = COALESCE(s.phase_rotation, 'RST')
        AND w.ev_phases = LEAST(COALESCE(s.ev_phases, s.phases, 3), COALESCE(s.phases, 3))
)
SELECT *, FALSE AS stale FROM placed WHERE seen_at > NOW() - INTERVAL '600 seconds'
UNION ALL
SELECT *, TRUE AS stale FROM placed WHERE seen_at <= NOW() - INTERVAL '600 seconds';
