-- site.topology: the breaker tree (site -> panels -> chargers), one row per node. Key: node_id.
-- For kind = 'charger', limit_kw is the charger's rating; priority, weight and flexible apply to its sessions
-- (the executor copies them onto each ocpp.active.sessions record; the views read them there).
-- default_departure_min and default_energy_kwh (sites and chargers) are the site file's plan defaults.
-- RisingWave 2.8 keys a FORMAT UPSERT ENCODE JSON table by the Kafka message key: INCLUDE KEY adds
-- message_key (bytea: the key's raw bytes; encode(message_key, 'escape') gives the id) as the primary
-- key, and a tombstone (null value) deletes the row of its key. node_id stays an ordinary column read
-- from the JSON value; the views join on it.
CREATE TABLE site_topology (
    node_id VARCHAR,
    site_id VARCHAR,
    parent_id VARCHAR,
    kind VARCHAR,
    limit_kw DOUBLE PRECISION,
    limit_a DOUBLE PRECISION,
    managed BOOLEAN,
    phases INT,
    phase_rotation VARCHAR,
    voltage_v DOUBLE PRECISION,
    connectors INT,
    priority INT,
    weight DOUBLE PRECISION,
    flexible BOOLEAN,
    default_departure_min INT,
    default_energy_kwh DOUBLE PRECISION,
    PRIMARY KEY (message_key)
) INCLUDE KEY AS message_key WITH (
    connector = 'kafka',
    topic = 'site.topology'
) FORMAT UPSERT ENCODE JSON;
