-- control.rules: operator, partner, utility and safety rules (cap, pause, reserve, override) scoped to a
-- site, node, charger or session. Key: rule_id = '{source}:{scope}:{scope_id}', so each source has one
-- rule per scope; a tombstone withdraws it.
CREATE TABLE control_rules (
    rule_id VARCHAR PRIMARY KEY,
    source VARCHAR,
    scope VARCHAR,
    scope_id VARCHAR,
    action VARCHAR,
    limit_kw DOUBLE PRECISION,
    valid_from TIMESTAMPTZ,
    valid_to TIMESTAMPTZ,
    reason VARCHAR,
    created_at TIMESTAMPTZ
) WITH (
    connector = 'kafka',
    topic = 'control.rules'
) FORMAT UPSERT ENCODE JSON;
