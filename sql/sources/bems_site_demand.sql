-- bems.site.demand: site meter readings from the building energy management system (append-only).
-- current_demand_kw is all load, EVs included; ev_load_kw is the EV part of it.
CREATE SOURCE bems_site_demand (
    site_id VARCHAR,
    demand_limit_kw DOUBLE PRECISION,
    current_demand_kw DOUBLE PRECISION,
    ev_load_kw DOUBLE PRECISION,
    measured_at TIMESTAMPTZ
) WITH (
    connector = 'kafka',
    topic = 'bems.site.demand'
) FORMAT PLAIN ENCODE JSON;
