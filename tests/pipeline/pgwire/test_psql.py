"""psql's catalog commands, RisingWave's SHOW and COPY ... TO STDOUT on the embedded engine's Postgres wire,
through the real ``psql`` client and psycopg 3, against a running pipeline and a plain database."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from pipeline.pgwire.server import start_pgwire
from pipeline.sqlmodel.objects import load_objects
from tests.kits.live import live_pipeline

KINDS = {obj.name: obj.kind for obj in load_objects()}
TABLES = sorted(name for name, kind in KINDS.items() if kind == "table")
MATERIALIZED_VIEWS = sorted(name for name, kind in KINDS.items() if kind == "materialized_view")
SOURCES = sorted(name for name, kind in KINDS.items() if kind == "source")
SINKS = sorted(name for name, kind in KINDS.items() if kind == "sink")


def _psql(psql: str, port: int, *commands: str, cwd: Path | None = None, tuples: bool = True):
    """Run ``psql -X -A [-t] -c COMMAND...`` on 127.0.0.1:``port``; returns the finished process."""
    args = [psql, "-X", "-h", "127.0.0.1", "-p", str(port), "-d", "dev", "-U", "root", "-A"]
    args += ["-t"] if tuples else []
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd)


async def _run(psql: str, port: int, *commands: str, **kwargs) -> str:
    done = await asyncio.to_thread(_psql, psql, port, *commands, **kwargs)
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr, done.stderr
    return done.stdout


def _rows(out: str) -> list[list[str]]:
    return [line.split("|") for line in out.splitlines() if line]


async def test_psql_lists_and_describes_the_views_as_on_risingwave(psql, tmp_path):
    async with live_pipeline() as live:
        port = live.service.pg_port
        assert port is not None
        relations = _rows(await _run(psql, port, "\\d"))
        assert {(schema, owner) for schema, _, _, owner in relations} == {("public", "root")}
        listed = {name: kind for _, name, kind, _ in relations}
        assert listed == {
            **dict.fromkeys(TABLES, "table"),
            **dict.fromkeys(MATERIALIZED_VIEWS, "materialized view"),
        }  # no internal <view>__query views, and sources and sinks are not relations psql lists
        assert [name for _, name, _, _ in _rows(await _run(psql, port, "\\dt"))] == TABLES
        assert [name for _, name, _, _ in _rows(await _run(psql, port, "\\dm"))] == MATERIALIZED_VIEWS
        views = await asyncio.to_thread(_psql, psql, port, "\\dv")
        assert (views.returncode, views.stdout, views.stderr.strip()) == (0, "", "Did not find any relations.")
        assert _rows(await _run(psql, port, "\\l"))[0][:3] == ["dev", "root", "UTF8"]

        described = (await _run(psql, port, "\\d session_setpoints", tuples=False)).splitlines()
        assert described[:2] == [
            'Materialized view "public.session_setpoints"',
            "Column|Type|Collation|Nullable|Default",
        ]
        columns = {line.split("|")[0]: line.split("|")[1] for line in described[2:] if line}
        async with await psycopg.AsyncConnection.connect(live.dsn, autocommit=True) as conn:
            cur = await conn.execute("SELECT * FROM session_setpoints LIMIT 0")
            assert list(columns) == [d.name for d in cur.description or []]
        assert (columns["session_id"], columns["setpoint_kw"], columns["connector_id"]) == (
            "character varying",
            "double precision",
            "integer",
        )
        assert columns["computed_at"] == "timestamp with time zone"
        missing = await asyncio.to_thread(_psql, psql, port, "\\d session_setpoints__query")
        assert 'Did not find any relation named "session_setpoints__query"' in missing.stderr

        assert (await _run(psql, port, "SHOW MATERIALIZED VIEWS")).split() == MATERIALIZED_VIEWS
        assert (await _run(psql, port, "SHOW TABLES")).split() == TABLES
        assert (await _run(psql, port, "SHOW SOURCES")).split() == SOURCES
        assert (await _run(psql, port, "SHOW SINKS")).split() == SINKS

        await _run(
            psql,
            port,
            "\\copy (SELECT session_id, charge_point_id, setpoint_kw, binding FROM session_setpoints "
            "ORDER BY charge_point_id) TO 'setpoints.csv' WITH CSV HEADER",
            cwd=tmp_path,
        )
    rows = list(csv.reader(io.StringIO((tmp_path / "setpoints.csv").read_text())))
    assert rows[0] == ["session_id", "charge_point_id", "setpoint_kw", "binding"]
    assert [row[1] for row in rows[1:]] == ["CP1", "CP2", "CP3"]
    assert all(row[0] and float(row[2]) > 0 and row[3] for row in rows[1:])


def test_psql_copies_a_query_and_a_table_to_files(plain_db, psql, tmp_path):
    plain_db.execute("INSERT INTO readings VALUES (3, NULL)")
    plain_db.execute("CREATE TABLE notes (id INTEGER, note VARCHAR)")
    plain_db.execute("INSERT INTO notes VALUES (1, 'a, \"b\"'), (2, ''), (3, NULL), (4, 'tab\there')")
    server = start_pgwire(plain_db, port=0)
    try:
        done = _psql(
            psql,
            server.port,
            "\\copy (SELECT id, kw FROM readings ORDER BY id) TO 'readings.csv' WITH (FORMAT csv, HEADER)",
            "\\copy notes TO 'notes.csv' WITH CSV HEADER",
            "\\copy (SELECT * FROM notes ORDER BY id) TO 'notes.txt'",
            cwd=tmp_path,
        )
        assert done.returncode == 0 and not done.stderr, done.stderr
        assert done.stdout.split() == ["COPY", "3", "COPY", "4", "COPY", "4"]
        assert (tmp_path / "readings.csv").read_text() == "id,kw\n1,7.5\n2,11.0\n3,\n"
        assert (tmp_path / "notes.csv").read_text() == 'id,note\n1,"a, ""b"""\n2,""\n3,\n4,tab\there\n'
        assert (tmp_path / "notes.txt").read_text() == '1\ta, "b"\n2\t\n3\t\\N\n4\ttab\\there\n'
        refused = _psql(psql, server.port, "\\copy readings FROM 'readings.csv' WITH CSV HEADER", cwd=tmp_path)
        assert refused.returncode == 1 and "ERROR:  cannot execute COPY FROM" in refused.stderr
        assert _psql(psql, server.port, "SELECT count(*) FROM readings").stdout.strip() == "3"
    finally:
        server.close()


def test_copy_to_stdout_over_psycopg(plain_db):
    plain_db.execute("CREATE VIEW big_readings AS SELECT * FROM readings WHERE kw > 8")
    server = start_pgwire(plain_db, port=0)
    dsn = f"postgresql://root@127.0.0.1:{server.port}/dev"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.cursor()
            with cur.copy("COPY (SELECT id, kw FROM readings ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
                data = b"".join(bytes(block) for block in copy)
            assert data == b"id,kw\n1,7.5\n2,11.0\n"
            assert cur.rowcount == 2
            with cur.copy("COPY (SELECT kw, id FROM readings WHERE id = %s) TO STDOUT", [2]) as copy:
                assert list(copy.rows()) == [("11.0", "2")]  # text format, parameters bound
            with cur.copy("COPY big_readings (id) TO STDOUT WITH (FORMAT text, HEADER true)") as copy:
                assert b"".join(bytes(block) for block in copy) == b"id\n2\n"
            for sql, refusal in (
                ("COPY readings FROM STDIN", errors.ReadOnlySqlTransaction),
                ("COPY readings TO '/tmp/pipeline-pgwire-copy.csv'", errors.InsufficientPrivilege),
                ("COPY (DELETE FROM readings RETURNING id) TO STDOUT", errors.ReadOnlySqlTransaction),
                ("COPY (SELECT * FROM read_text('/etc/hostname')) TO STDOUT", errors.InsufficientPrivilege),
                ("COPY readings TO STDOUT (FORMAT binary)", errors.FeatureNotSupported),
            ):
                with pytest.raises(refusal), cur.copy(sql) as copy:
                    list(copy)
            assert conn.execute("SELECT count(*) FROM readings").fetchone() == (2,)
            # the catalog of a database the engine did not describe: its kinds are DuckDB's
            kinds = conn.execute("SELECT relname, relkind FROM pg_catalog.pg_class ORDER BY relname").fetchall()
            assert kinds == [("big_readings", "v"), ("readings", "r")]
            assert conn.execute("SHOW VIEWS").fetchall() == [("big_readings",)]
    finally:
        server.close()


def test_an_engine_table_with_a_query_view_is_a_materialized_view(plain_db, psql):
    plain_db.execute("CREATE VIEW peaks__query AS SELECT max(kw) AS peak_kw FROM readings")
    plain_db.execute("CREATE TABLE peaks AS SELECT * FROM peaks__query")
    server = start_pgwire(plain_db, port=0)
    try:
        done = _psql(psql, server.port, "\\d", "SHOW MATERIALIZED VIEWS", "SHOW TABLES")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "public|peaks|materialized view|root",
            "public|readings|table|root",
            "peaks",
            "readings",
        ]
    finally:
        server.close()
