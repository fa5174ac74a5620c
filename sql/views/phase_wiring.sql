-- Which grid phases (R, S, T) an EV loads, by the charger's wiring and the EV's phases. phase_rotation is
-- OCPP 1.6 ConnectorPhaseRotation / OCPP 2.0.1 EVSE.PhaseRotation: its letters are the grid phases the
-- charger's L1, L2, L3 are wired to ('SRT': L1 on S, L2 on R, L3 on T). An EV on n phases draws on the
-- charger's L1 .. Ln, so it loads the first n letters. on_r/on_s/on_t are 1 for a loaded grid phase, 0
-- otherwise. A rotation not listed here loads every phase (the readers default to 1: counted everywhere,
-- a per-phase limit stays safe).
CREATE MATERIALIZED VIEW phase_wiring AS
SELECT
    w.phase_rotation,
    w.ev_phases,
    w.on_r,
    w.on_s,
    w.on_t
FROM (
    VALUES
        ('RST', 1, 1, 0, 0),
        ('RST', 2, 1, 1, 0),
        ('RST', 3, 1, 1, 1),
        ('RTS', 1, 1, 0, 0),
        ('RTS', 2, 1, 0, 1),
        ('RTS', 3, 1, 1, 1),
        ('SRT', 1, 0, 1, 0),
        ('SRT', 2, 1, 1, 0),
        ('SRT', 3, 1, 1, 1),
        ('STR', 1, 0, 1, 0),
        ('STR', 2, 0, 1, 1),
        ('STR', 3, 1, 1, 1),
        ('TRS', 1, 0, 0, 1),
        ('TRS', 2, 1, 0, 1),
        ('TRS', 3, 1, 1, 1),
        ('TSR', 1, 0, 0, 1),
        ('TSR', 2, 0, 1, 1),
        ('TSR', 3, 1, 1, 1)
) AS w (phase_rotation, ev_phases, on_r, on_s, on_t);
