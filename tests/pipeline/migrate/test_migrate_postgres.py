"""The psycopg path against a real Postgres server: the catalog table, the lock and failure handling
run for real. Postgres enforces view dependencies on DROP, so a wrong drop order fails here; RisingWave-
only DDL (a Kafka source) fails here like any failing step."""

from __future__ import annotations

import psycopg
import pytest

from pipeline.migrate import commands
from pipeline.migrate.kafka import ConnectorSettings
from pipeline.migrate.model import CREATE, DROP, NON_BREAKING, NOT_APPLIED, RECREATE, LockHeld
from pipeline.migrate.targets import CATALOG_TABLE, LOCK_TABLE, open_target
from pipeline.sqlmodel.objects import load_objects
from tests.kits.migrate import write_sql

pytestmark = pytest.mark.postgres

KAFKA = ConnectorSettings("broker:9092", "t1.", {"properties.sasl.password": "s3cret"})


def rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def test_apply_records_the_catalog_and_status_is_clean(plain_sql, pg_dsn):
    result = commands.apply(pg_dsn, plain_sql, kafka=KAFKA)
    assert result.ok and result.plan.engine == "postgres"
    assert [s.name for s in result.applied] == ["readings", "site_load", "busy_sites"]
    catalog = rows(pg_dsn, f"SELECT name, kind, hash, depends_on, sql, applied_at FROM {CATALOG_TABLE} ORDER BY name")
    hashes = {o.name: o.hash for o in load_objects(plain_sql)}
    assert [(r[0], r[1], r[2]) for r in catalog] == [
        ("busy_sites", "materialized_view", hashes["busy_sites"]),
        ("readings", "table", hashes["readings"]),
        ("site_load", "materialized_view", hashes["site_load"]),
    ]
    assert catalog[0][3] == "site_load" and catalog[0][4].startswith("CREATE MATERIALIZED VIEW busy_sites")
    assert all(r[5] is not None for r in catalog)
    assert sorted(r[0] for r in rows(pg_dsn, "SELECT matviewname FROM pg_matviews")) == ["busy_sites", "site_load"]
    assert commands.status(pg_dsn, plain_sql).clean
    assert commands.apply(pg_dsn, plain_sql, kafka=KAFKA).plan.empty


def test_plan_and_status_create_nothing_on_the_server(plain_sql, pg_dsn):
    plan = commands.plan(pg_dsn, plain_sql, kafka=KAFKA)
    status = commands.status(pg_dsn, plain_sql)
    assert [s.action for s in plan.steps] == [CREATE] * 3
    assert {e.state for e in status.entries} == {NOT_APPLIED}
    assert rows(pg_dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'") == []


def test_a_changed_view_is_recreated_with_its_dependents_in_an_order_postgres_accepts(plain_sql, pg_dsn):
    commands.apply(pg_dsn, plain_sql, kafka=KAFKA)
    rows(pg_dsn, "INSERT INTO readings VALUES ('depot-1', 42.0)")
    (plain_sql / "views/site_load.sql").write_text(
        "CREATE MATERIALIZED VIEW site_load AS SELECT site_id, power_kw, power_kw * 1000 AS power_w FROM readings;"
    )
    result = commands.apply(pg_dsn, plain_sql, yes=True, kafka=KAFKA)
    assert result.ok, result.error
    assert [(s.action, s.name) for s in result.applied] == [
        (DROP, "busy_sites"),
        (DROP, "site_load"),
        (RECREATE, "site_load"),
        (RECREATE, "busy_sites"),
    ]
    assert result.applied[2].change.category == NON_BREAKING
    assert rows(pg_dsn, "SELECT site_id, power_w FROM site_load") == [("depot-1", 42000.0)]
    assert rows(pg_dsn, "SELECT site_id FROM busy_sites") == [("depot-1",)]
    assert commands.status(pg_dsn, plain_sql).clean


def test_a_second_migrator_is_refused_while_the_lock_is_held(plain_sql, pg_dsn):
    with open_target(pg_dsn, KAFKA) as holder, holder.locked("deploy@ci pid 7 #f00") as owner:
        assert rows(pg_dsn, f"SELECT name, owner FROM {LOCK_TABLE}") == [("migrate", owner)]
        with pytest.raises(LockHeld) as refused:
            commands.apply(pg_dsn, plain_sql, kafka=KAFKA)
        assert refused.value.owner == "deploy@ci pid 7 #f00" and refused.value.expires_at is not None
        assert rows(pg_dsn, f"SELECT count(*) FROM {CATALOG_TABLE}") == [(0,)]
    assert rows(pg_dsn, f"SELECT count(*) FROM {LOCK_TABLE}") == [(0,)]
    assert commands.apply(pg_dsn, plain_sql, kafka=KAFKA).ok


def test_an_expired_lock_is_taken_over_and_a_live_one_is_not(plain_sql, pg_dsn):
    with open_target(pg_dsn, KAFKA) as crashed:
        crashed.acquire_lock("crashed@box", ttl_s=-5)
        with open_target(pg_dsn, KAFKA) as other:
            other.acquire_lock("other@box", ttl_s=60)
            assert rows(pg_dsn, f"SELECT owner FROM {LOCK_TABLE}") == [("other@box",)]
            with pytest.raises(LockHeld, match="other@box"):
                crashed.acquire_lock("crashed@box")
            other.release_lock("other@box")


def test_a_failing_step_stops_the_run_leaving_what_was_applied_recorded(tmp_path, pg_dsn):
    sql = write_sql(
        tmp_path / "sql",
        {
            "tables/readings.sql": "CREATE TABLE readings (site_id VARCHAR PRIMARY KEY, power_kw DOUBLE PRECISION);",
            # RisingWave-only DDL: Postgres rejects it
            "sources/zfeed.sql": (
                "CREATE SOURCE zfeed (site_id VARCHAR, power_kw DOUBLE PRECISION) "
                "WITH (connector = 'kafka', topic = 'bems.site.demand') FORMAT PLAIN ENCODE JSON;"
            ),
            "views/z_total.sql": "CREATE MATERIALIZED VIEW z_total AS SELECT SUM(power_kw) AS kw FROM zfeed;",
        },
    )
    result = commands.apply(pg_dsn, sql, kafka=KAFKA)
    assert not result.ok
    assert [s.name for s in result.applied] == ["readings"]
    assert result.failed.name == "zfeed" and "syntax error" in result.error
    assert [s.name for s in result.not_applied] == ["zfeed", "z_total"]
    assert "topic='t1.bems.site.demand'" in result.failed.sql and "broker:9092" in result.failed.sql
    assert "s3cret" not in result.failed.sql and "***" in result.failed.sql
    assert rows(pg_dsn, f"SELECT name FROM {CATALOG_TABLE}") == [("readings",)]
    assert rows(pg_dsn, f"SELECT count(*) FROM {LOCK_TABLE}") == [(0,)]
    states = {e.name: e.state for e in commands.status(pg_dsn, sql).entries}
    assert states == {"readings": "in sync", "zfeed": NOT_APPLIED, "z_total": NOT_APPLIED}


def test_relations_unknown_to_sql_show_in_status(plain_sql, pg_dsn):
    commands.apply(pg_dsn, plain_sql, kafka=KAFKA)
    rows(pg_dsn, "CREATE VIEW adhoc AS SELECT 1 AS one")
    entries = {e.name: e for e in commands.status(pg_dsn, plain_sql).entries}
    assert entries["adhoc"].state == "unknown to sql/" and entries["adhoc"].kind == "view"
