"""Small sql/ dirs for the migrator's tests (shared by the conftest and the test modules)."""

from __future__ import annotations

from pathlib import Path

# A tiny pipeline in the same shape as sql/: an upsert input, a view chain and an upsert sink.
SMALL = {
    "tables/sessions.sql": """-- sessions, keyed by the message key (session_id)
CREATE TABLE sessions (
    session_id VARCHAR,
    site_id VARCHAR,
    power_kw DOUBLE PRECISION,
    PRIMARY KEY (message_key)
) INCLUDE KEY AS message_key WITH (
    connector = 'kafka',
    topic = 'ocpp.active.sessions'
) FORMAT UPSERT ENCODE JSON;
""",
    "views/site_power.sql": """CREATE MATERIALIZED VIEW site_power AS
SELECT site_id, SUM(power_kw) AS power_kw
FROM sessions
GROUP BY site_id;
""",
    "views/session_share.sql": """CREATE MATERIALIZED VIEW session_share AS
SELECT s.session_id, s.site_id, s.power_kw / p.power_kw AS share
FROM sessions AS s
JOIN site_power AS p ON p.site_id = s.site_id;
""",
    "sinks/shares.sql": """CREATE SINK shares FROM session_share
WITH (
    connector = 'kafka',
    topic = 'ocpp.setpoint.commands',
    primary_key = 'session_id'
) FORMAT UPSERT ENCODE JSON;
""",
}

# Plain SQL that Postgres runs as it is (no connectors): for the psycopg path.
PLAIN = {
    "tables/readings.sql": "CREATE TABLE readings (site_id VARCHAR PRIMARY KEY, power_kw DOUBLE PRECISION);\n",
    "views/site_load.sql": "CREATE MATERIALIZED VIEW site_load AS\nSELECT site_id, power_kw FROM readings;\n",
    "views/busy_sites.sql": (
        "CREATE MATERIALIZED VIEW busy_sites AS\nSELECT site_id FROM site_load WHERE power_kw > 10;\n"
    ),
}


def write_sql(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) under ``root``; returns ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def fake_risingwave(kafka):
    """A RisingWave target that renders statements but has no server (for plans and settings checks)."""
    from pipeline.migrate.targets.base import Target
    from pipeline.migrate.targets.risingwave import WireTarget

    class FakeRisingWave(Target):
        engine, display = "risingwave", "postgresql://root@risingwave:4566/dev"
        drop_statement = WireTarget.drop_statement

        def _query(self, sql, params=()):
            raise NotImplementedError

        _execute = _query

        def _missing_table(self, exc):
            return False

        _unique_violation = _missing_table

        def list_objects(self):
            return None

        def close(self):
            pass

    return FakeRisingWave(kafka)
