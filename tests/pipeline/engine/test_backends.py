"""The engine's backends: selection by name and settings, and the SQLite adapter's general rewrites run on
SQLite itself (each is what new SQL in the style of sql/ needs, whatever view it is in)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings

from pipeline.engine.adapters import make_backend
from pipeline.engine.backend import BACKENDS
from pipeline.engine.sqlite_backend import NOW_PARAM, from_us, interval_us, to_sqlite, to_us
from pipeline.sqlmodel.objects import SqlError
from tests.pipeline.allocation.test_allocation_properties import sites as property_sites

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)


def run(sql: str, now: datetime = NOW) -> list[tuple]:
    con = sqlite3.connect(":memory:")
    try:
        return con.execute(to_sqlite(sqlglot.parse_one(sql, read="risingwave")), {NOW_PARAM: to_us(now)}).fetchall()
    finally:
        con.close()


def test_every_backend_is_built_by_name_and_an_unknown_one_is_refused():
    for name in BACKENDS:
        backend = make_backend(name)
        assert backend.name == name
        backend.close()
    with pytest.raises(ValueError, match="unknown engine backend 'oracle'"):
        make_backend("oracle")


def test_the_settings_choose_the_backend(monkeypatch):
    from pipeline.app.settings import load_settings

    monkeypatch.setenv("PIPELINE_ENGINE__BACKEND", "sqlite")
    assert load_settings().engine.backend == "sqlite"


def test_timestamps_are_exact_microseconds_and_now_a_parameter():
    at = datetime(2024, 6, 3, 11, 59, 59, 999999, tzinfo=UTC)
    assert from_us(to_us(at)) == at
    # NOW() - INTERVAL, a cast string literal, and a boundary one microsecond after an instant
    assert run("SELECT NOW() - INTERVAL '600 seconds' = CAST('2024-06-03T11:50:00+00:00' AS TIMESTAMPTZ)") == [(1,)]
    assert run("SELECT CAST(NOW() AS TIMESTAMPTZ) + INTERVAL '1' MICROSECOND") == [(to_us(NOW) + 1,)]
    assert run("SELECT EXTRACT(EPOCH FROM (NOW() + INTERVAL '1 hour') - NOW())") == [(3600.0,)]


def test_interval_lengths_and_units_without_one():
    node = sqlglot.parse_one("INTERVAL '1 hour 30 minutes'", read="risingwave")
    assert interval_us(node) == 5_400_000_000
    with pytest.raises(SqlError, match="no fixed length"):
        interval_us(sqlglot.parse_one("INTERVAL '1 month'", read="risingwave"))


def test_greatest_and_least_ignore_nulls_as_in_postgres():
    assert run("SELECT GREATEST(1.0, NULL, 3.0), LEAST(NULL, 2.0), GREATEST(NULL, NULL)") == [(3.0, 2.0, None)]


def test_a_values_list_with_named_columns_is_a_union():
    rows = run("SELECT d.tier, d.m FROM (VALUES ('ON_PEAK', 0.5), ('OFF_PEAK', 1.0)) AS d (tier, m) ORDER BY d.tier")
    assert rows == [("OFF_PEAK", 1.0), ("ON_PEAK", 0.5)]


def test_date_trunc_and_utc_days_on_microseconds():
    # the next 07:30 after a session's start (session_plan_targets), and a day in UTC (charger_daily_energy)
    day = to_us(datetime(2024, 6, 3, tzinfo=UTC))
    assert run("SELECT DATE_TRUNC('day', NOW()) + 450 * INTERVAL '1 minute'") == [(day + 450 * 60_000_000,)]
    assert run("SELECT CAST(DATE_TRUNC('day', NOW() AT TIME ZONE 'UTC') AS DATE)") == [(day,)]
    assert run("SELECT DATE_TRUNC('hour', NOW() + INTERVAL '59 minutes')") == [(to_us(NOW),)]
    with pytest.raises(SqlError, match="fixed units"):
        run("SELECT DATE_TRUNC('month', NOW())")
    with pytest.raises(SqlError, match="UTC only"):
        run("SELECT NOW() AT TIME ZONE 'Europe/Amsterdam'")


@pytest.fixture(scope="module")
def every_backend():
    from pipeline.engine.embedded import EmbeddedEngine
    from pipeline.engine.hybrid_backend import HybridBackend

    engines = {name: EmbeddedEngine(backend=name) for name in BACKENDS}
    # hybrid on a small fleet runs everything on SQLite; this one evaluates every site on DuckDB, as on a
    # large fleet, and passes rows between the two
    engines["hybrid-duckdb-full"] = EmbeddedEngine(backend=HybridBackend(fleet_max_sites=0))
    yield engines
    for engine in engines.values():
        engine.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=property_sites(max_sessions=60, phased=True))
def test_every_backend_computes_the_same_setpoints(every_backend, records):
    """The suite runs on the default backend alone (tests.kits.backends); here the three adapters take the
    same random trees (1-, 2- and 3-phase EVs, rules, DR, prices) and must publish the same commands."""
    from tests.pipeline.allocation.test_allocation_properties import run_engine

    results = {name: run_engine(engine, records) for name, engine in every_backend.items()}
    first = results["duckdb"]
    for name, got in results.items():
        assert set(got) == set(first), name
        for sid, rec in got.items():
            assert rec["setpoint_kw"] == pytest.approx(first[sid]["setpoint_kw"], abs=1e-6), (name, sid)
            assert (rec["binding"], rec["phases"]) == (first[sid]["binding"], first[sid]["phases"]), (name, sid)


def test_a_rollback_restores_which_sites_the_hybrid_holds_out_of_date():
    """The hybrid changes its sets of out-of-date sites in place; a rollback undoes every change of the
    transaction, whatever their order."""
    from pipeline.engine.hybrid_backend import HybridBackend
    from pipeline.engine.partition import ALL

    hybrid = HybridBackend()
    try:
        hybrid._mark("lite", "v", frozenset({"a", "b", "c"}))
        hybrid._mark("duck", "w", ALL)
        before = {db: {k: (v if v is ALL else set(v)) for k, v in t.items()} for db, t in hybrid._stale.items()}
        hybrid.begin()
        hybrid._remove("lite", "v", frozenset({"a", "x"}))
        hybrid._mark("lite", "v", frozenset({"d"}))
        hybrid._remove("lite", "v", ALL)
        hybrid._mark("lite", "u", frozenset({"e"}))
        hybrid._remove("duck", "w", frozenset({"a"}))
        hybrid._remove("duck", "w", ALL)
        assert hybrid._held("lite", "v") == set() and hybrid._held("duck", "w") == set()
        hybrid.rollback()
        assert hybrid._stale == {**before, "lite": {**before["lite"], "u": frozenset()}}
    finally:
        hybrid.close()


def test_a_backlog_of_input_batches_costs_duckdb_one_write_per_table_and_holds_the_same_rows(monkeypatch):
    """The hybrid queues DuckDB's input writes; a backlog of interleaved batches (meter readings, then
    sessions, then readings again, as a site's traffic comes) reaches DuckDB as one write per table, and
    DuckDB then holds exactly SQLite's rows (later rows of a key replace earlier ones)."""
    from datetime import timedelta

    from pipeline.contracts.topics import ActiveSession, SiteDemand
    from pipeline.engine.embedded import EmbeddedEngine
    from pipeline.engine.hybrid_backend import HybridBackend
    from pipeline.engine.partition import ALL

    now = datetime(2024, 6, 3, 12, tzinfo=UTC)

    def same(row: tuple) -> str:  # each database's rows, instants as instants
        return repr(tuple(v.timestamp() if isinstance(v, datetime) else v for v in row))

    engine = EmbeddedEngine(backend=HybridBackend())
    hybrid = engine.backend
    assert isinstance(hybrid, HybridBackend)
    try:
        for i in range(6):  # six batches, each touching both tables
            engine.apply(
                [
                    ("bems.site.demand", "S", SiteDemand(site_id="S", current_demand_kw=10 + i, measured_at=now)),
                    (
                        "ocpp.active.sessions",
                        f"x{i % 2}",
                        ActiveSession(
                            session_id=f"x{i % 2}",
                            charge_point_id=f"CP{i % 2}",
                            connector_id=1,
                            transaction_id=str(i),
                            site_id="S",
                            rated_power_kw=22,
                            started_at=now,
                            sampled_at=now + timedelta(seconds=i),
                        ),
                    ),
                ]
            )
        writes: list[str] = []
        write = hybrid.duck.write

        def counted(obj, keys, rows):
            writes.append(obj.name)
            write(obj, keys, rows)

        monkeypatch.setattr(hybrid.duck, "write", counted)
        hybrid.sync_readers()
        assert sorted(writes) == ["bems_site_demand", "ocpp_active_sessions"]
        for table in ("bems_site_demand", "ocpp_active_sessions"):
            lite = sorted(map(same, hybrid.lite.rows(table, ALL)[1]))
            duck = sorted(map(same, hybrid.duck.rows(table, ALL)[1]))
            assert duck == lite and len(lite) == (6 if table == "bems_site_demand" else 2), table
    finally:
        engine.close()
