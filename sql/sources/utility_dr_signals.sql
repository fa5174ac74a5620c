-- utility.dr.signals: demand-response events, active on [event_start, event_end) (append-only).
-- A later signal with the same dr_event_id replaces the earlier one (e.g. to shorten or cancel it).
CREATE SOURCE utility_dr_signals (
    site_id VARCHAR,
    dr_event_id VARCHAR,
    curtailment_pct DOUBLE PRECISION,
    limit_kw DOUBLE PRECISION,
    event_start TIMESTAMPTZ,
    event_end TIMESTAMPTZ,
    signal_at TIMESTAMPTZ
) WITH (
    connector = 'kafka',
    topic = 'utility.dr.signals'
) FORMAT PLAIN ENCODE JSON;
