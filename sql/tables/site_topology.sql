-- site.topology: the breaker tree (site -> panels -> chargers), one row per node. Key: node_id.
-- For kind = 'charger', limit_kw is the charger's rating.
CREATE TABLE site_topology (
    node_id VARCHAR PRIMARY KEY,
    site_id VARCHAR,
    parent_id VARCHAR,
    kind VARCHAR,
    limit_kw DOUBLE PRECISION,
    managed BOOLEAN,
    phases INT,
    voltage_v DOUBLE PRECISION,
    connectors INT
) WITH (
    connector = 'kafka',
    topic = 'site.topology'
) FORMAT UPSERT ENCODE JSON;
