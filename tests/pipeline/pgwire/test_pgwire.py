"""The embedded engine's read-only Postgres-wire port (pipeline.pgwire.server), through psycopg 3 and psql."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from datetime import date

import psycopg
import pytest
from psycopg import errors

from pipeline.pgwire.server import start_pgwire
from pipeline.replay.driver import ReplayOptions, run_replay
from tests.kits.live import free_port, live_pipeline, wait_for

WRITES = [
    "INSERT INTO ocpp_active_sessions (session_id) VALUES ('x')",
    "UPDATE site_topology SET limit_kw = 1000",
    "DELETE FROM session_setpoints",
    "CREATE TABLE t (a INT)",
    "DROP TABLE session_setpoints",
    "COPY session_setpoints TO '/tmp/pipeline-pgwire-test.csv'",
    "ATTACH ':memory:' AS other",
    "SET VARIABLE pipeline_now = now()",
    "SET threads = 1",
    "PRAGMA show_tables",
    "SELECT 1; DELETE FROM session_setpoints",
]


async def test_live_views_over_postgres_wire_while_the_loop_runs():
    async with live_pipeline() as live, await psycopg.AsyncConnection.connect(live.dsn, autocommit=True) as conn:
        rows = await wait_for(lambda: _three(conn), what="a setpoint for each charger")
        await wait_for(lambda: _matches(conn, live), what="the views to match what the engine published")
        for _, _, setpoint_kw, binding in rows:
            assert setpoint_kw > 0 and binding
        # the input tables are there too, with parameters of every kind psycopg sends
        cur = await conn.execute(
            "SELECT count(*) FROM ocpp_active_sessions WHERE charge_point_id = %s "
            "AND connector_id = %s AND started_at < now() + %s::INTERVAL",
            ["CP1", 1, "1 hour"],
        )
        assert (await cur.fetchone()) == (1,)
        cur = await conn.execute("SELECT node_id, headroom_kw FROM node_headroom WHERE kind = 'site'")
        assert (await cur.fetchall())[0][0] == "depot-t"


async def _rows(conn: psycopg.AsyncConnection, sql: str) -> list[tuple]:
    return await (await conn.execute(sql)).fetchall()


async def _three(conn) -> list[tuple] | None:
    rows = await _rows(
        conn,
        "SELECT session_id, charge_point_id, setpoint_kw, binding FROM session_setpoints "
        "WHERE setpoint_kw > 0 ORDER BY charge_point_id",
    )
    return rows if [r[1] for r in rows] == ["CP1", "CP2", "CP3"] else None


async def _matches(conn, live) -> bool:
    published = {
        json.loads(v)["session_id"]: json.loads(v)["setpoint_kw"]
        for v in live.service.transport.latest("ocpp.setpoint.commands").values()
    }
    rows = await _rows(conn, "SELECT session_id, setpoint_kw FROM session_setpoints")
    return bool(rows) and {r[0]: r[1] for r in rows} == published


async def test_writes_are_refused_and_the_connection_still_answers():
    async with live_pipeline() as live:
        async with await psycopg.AsyncConnection.connect(live.dsn, autocommit=True) as conn:
            before = await _rows(conn, "SELECT count(*) FROM site_topology")
            for sql in WRITES:
                with pytest.raises(psycopg.Error) as refused:
                    await conn.execute(sql)
                assert refused.value.sqlstate in ("25006", "42501"), sql
                assert "read-only" in str(refused.value) or "permission denied" in str(refused.value)
                assert await _rows(conn, "SELECT count(*) FROM site_topology") == before
            for sql in ("SELECT * FROM read_text('/etc/hostname')", "SELECT * FROM '/etc/passwd'"):
                with pytest.raises(errors.InsufficientPrivilege):
                    await conn.execute(sql)
            assert (await _rows(conn, "SELECT count(*) FROM session_setpoints"))[0][0] == 3
        # in a transaction, as psycopg's default: the refusal aborts it (as on Postgres) until ROLLBACK
        async with await psycopg.AsyncConnection.connect(live.dsn) as conn:
            with pytest.raises(errors.ReadOnlySqlTransaction):
                await conn.execute("DELETE FROM session_setpoints")
            with pytest.raises(errors.InFailedSqlTransaction):
                await conn.execute("SELECT 1")
            await conn.rollback()
            assert await _rows(conn, "SELECT count(*) FROM session_setpoints") == [(3,)]
            await conn.commit()
        assert live.service.engine is not None
        assert live.service.engine.stats.evaluations > 0  # the engine went on meanwhile


async def test_live_views_over_postgres_wire_during_a_replay():
    """psycopg reads the replay's views while it runs (one read-only snapshot: the setpoints fit the site's
    headroom of the same state), a write is refused, and the port closes with the replay."""
    port = free_port()
    options = ReplayOptions(
        day=date(2024, 6, 4), speed=8000, chargers=4, limit_kw=40, evs_per_charger=2.5, seed=3, pg_port=port
    )
    replay = asyncio.create_task(run_replay(options))
    dsn = f"postgresql://root@127.0.0.1:{port}/dev"

    async def snapshot():
        if replay.done():
            raise AssertionError(f"the replay ended before its views were read: {replay.result()}")
        try:
            async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=2) as conn:
                await conn.set_read_only(True)
                rows = await _rows(
                    conn,
                    "SELECT session_id, setpoint_kw, binding FROM session_setpoints "
                    "WHERE site_id = 'replay-site' ORDER BY session_id",
                )
                site = await _rows(conn, "SELECT headroom_kw FROM node_headroom WHERE node_id = 'replay-site'")
                return (rows, site[0][0]) if rows else None
        except psycopg.OperationalError:
            return None  # not listening yet

    try:
        rows, headroom_kw = await wait_for(snapshot, timeout_s=90, what="sessions in the replay's views")
        assert all(kw is not None and kw >= 0 and binding for _, kw, binding in rows)
        assert sum(kw for _, kw, _ in rows) <= headroom_kw + 1e-6
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            with pytest.raises(errors.ReadOnlySqlTransaction):
                await conn.execute("DELETE FROM session_setpoints")
            assert (await _rows(conn, "SELECT count(*) FROM site_topology WHERE site_id = 'replay-site'"))[0][0] > 0
        assert not replay.done()
    finally:
        replay.cancel()  # the day need not run to its end for this
        with contextlib.suppress(asyncio.CancelledError):
            await replay
    with pytest.raises(psycopg.OperationalError):  # the port closes with the replay
        await psycopg.AsyncConnection.connect(dsn, connect_timeout=2)


def test_a_client_transaction_reads_one_snapshot_while_the_engine_commits(plain_db):
    server = start_pgwire(plain_db, port=0)
    try:
        with psycopg.connect(f"postgresql://root@127.0.0.1:{server.port}/dev") as conn:
            conn.read_only = True
            assert conn.execute("SELECT count(*) FROM readings").fetchone() == (2,)
            plain_db.execute("BEGIN")  # the engine's refresh: one transaction
            plain_db.execute("INSERT INTO readings VALUES (3, 1.0)")
            assert conn.execute("SELECT count(*) FROM readings").fetchone() == (2,)
            plain_db.execute("COMMIT")
            assert conn.execute("SELECT count(*) FROM readings").fetchone() == (2,)  # same snapshot
            conn.commit()
            assert conn.execute("SELECT count(*), sum(kw) FROM readings WHERE id > %s", [0]).fetchone() == (3, 19.5)
    finally:
        server.close()


def test_a_password_is_asked_when_set(plain_db):
    server = start_pgwire(plain_db, port=0, password="s3cret")
    try:
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://root:wrong@127.0.0.1:{server.port}/dev")
        with psycopg.connect(f"postgresql://analyst:s3cret@127.0.0.1:{server.port}/dev", autocommit=True) as conn:
            assert conn.execute("SELECT kw FROM readings ORDER BY kw DESC").fetchall() == [(11.0,), (7.5,)]
    finally:
        server.close()


def test_psql_reads_and_is_refused_a_write(plain_db, psql):
    server = start_pgwire(plain_db, port=0)
    try:
        base = [
            psql,
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-d",
            "dev",
            "-U",
            "root",
            "-A",
            "-t",
        ]
        ok = subprocess.run(
            [*base, "-c", "SELECT id, kw FROM readings WHERE kw > 8 ORDER BY id"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "2|11.0"
        refused = subprocess.run([*base, "-c", "DELETE FROM readings"], capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1 and "ERROR:  cannot execute DELETE" in refused.stderr
    finally:
        server.close()


def test_run_and_replay_take_the_pg_flags_over_the_settings(monkeypatch, capsys):
    from click.testing import CliRunner

    from pipeline.cli.main import main
    from pipeline.cli.options import replay_pg_args

    calls = []

    async def fake_start_loop(transport, **kwargs):
        calls.append(kwargs)
        raise KeyboardInterrupt  # as if Ctrl-C ended it at once

    monkeypatch.setattr("pipeline.app.loop.start_loop", fake_start_loop)
    monkeypatch.setenv("PIPELINE_PGWIRE__PASSWORD", "s3cret")
    site = "examples/site.yaml"
    for args, expected in (
        ([], ("127.0.0.1", 4566)),
        (["--pg-port", "0", "--pg-host", "0.0.0.0"], ("0.0.0.0", 0)),
        (["--no-pg"], ("127.0.0.1", None)),
    ):
        result = CliRunner().invoke(main, ["run", "--config", site, *args])
        assert result.exit_code == 130, result.output
        pg = calls[-1]["pgwire"]
        assert (pg.host, pg.port if pg.enabled else None, pg.password.get_secret_value()) == (*expected, "s3cret")
    with socket.socket() as taken:  # a replay goes on without Postgres wire when the settings' port is taken
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("PIPELINE_PGWIRE__PORT", str(taken.getsockname()[1]))
        assert replay_pg_args(None, None, None)["pg_port"] is None
        assert "is taken" in capsys.readouterr().err
