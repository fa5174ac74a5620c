"""Errors from a Postgres-wire target carry the server's whole answer: message, detail and hint.

RisingWave answers a failed statement with the message "Failed to run the query" and puts the cause on
the lines after it ("Caused by: ..."), sometimes with a hint; a first line alone tells the operator
nothing. A real Postgres server raises the same shape here: a PL/pgSQL function raises an error with a
multi-line message, a DETAIL and a HINT, and the views, the catalog or a step call it.
"""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.migrate import commands
from pipeline.migrate.targets import CATALOG_TABLE
from pipeline.migrate.targets.pg_errors import describe
from pipeline.status.collect import StatusError, fetch_views
from tests.kits.migrate import PLAIN, write_sql

pytestmark = pytest.mark.postgres

CAUSE = "Protocol error: INCLUDE KEY clause not set"
HINT = "For FORMAT UPSERT ENCODE JSON, INCLUDE KEY must be specified"
RW_LIKE = f"""CREATE FUNCTION rw_fail() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = E'Failed to run the query\\n\\nCaused by:\\n  {CAUSE}',
        DETAIL = 'the table is control_rules', HINT = '{HINT}';
END $$"""


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_describe_gives_message_cause_detail_and_hint(pg_dsn):
    execute(pg_dsn, RW_LIKE)
    with psycopg.connect(pg_dsn) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT rw_fail()")
    assert describe(caught.value) == (
        f"Failed to run the query\n  Caused by:\n    {CAUSE}\n  DETAIL: the table is control_rules\n  HINT: {HINT}"
    )


def test_describe_keeps_a_plain_one_line_error_on_one_line(pg_dsn):
    with psycopg.connect(pg_dsn) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT * FROM no_such_relation")
    assert describe(caught.value) == 'relation "no_such_relation" does not exist'


def test_a_failed_apply_step_shows_the_cause_and_hint(tmp_path, pg_dsn):
    execute(pg_dsn, RW_LIKE)
    boom = "CREATE MATERIALIZED VIEW z_boom AS SELECT rw_fail() AS x;"
    sql = write_sql(tmp_path / "sql", {**PLAIN, "views/z_boom.sql": boom})
    result = commands.apply(pg_dsn, sql)
    assert not result.ok and result.failed.name == "z_boom"
    assert CAUSE in result.error and f"HINT: {HINT}" in result.error
    cli = CliRunner().invoke(main, ["migrate", "apply", "--target", pg_dsn, "--sql-dir", str(sql), "--yes"])
    assert cli.exit_code == 1
    assert "failed: Failed to run the query" in cli.output and CAUSE in cli.output and HINT in cli.output


def test_migrate_status_shows_the_cause_when_the_catalog_cannot_be_read(tmp_path, pg_dsn):
    execute(
        pg_dsn,
        RW_LIKE,
        f"CREATE VIEW {CATALOG_TABLE} AS SELECT 'x' AS name, rw_fail() AS kind, "
        "'' AS hash, '' AS depends_on, '' AS sql, '' AS source, now() AS applied_at",
    )
    sql = write_sql(tmp_path / "sql", PLAIN)
    cli = CliRunner().invoke(main, ["migrate", "status", "--target", pg_dsn, "--sql-dir", str(sql)])
    assert cli.exit_code == 1
    assert "Error: Failed to run the query" in cli.output and CAUSE in cli.output and HINT in cli.output


def test_pipeline_status_shows_the_cause_when_a_view_cannot_be_read(pg_dsn):
    columns = ", ".join(
        f"NULL AS {c}"
        for c in (
            "site_id",
            "kind",
            "depth",
            "breaker_limit_kw",
            "limit_kw",
            "building_kw",
            "fixed_kw",
            "headroom_kw",
            "limited_by",
        )
    )
    execute(pg_dsn, RW_LIKE, f"CREATE VIEW node_headroom AS SELECT rw_fail() AS node_id, {columns}")
    with pytest.raises(StatusError) as caught:
        fetch_views(pg_dsn)
    assert CAUSE in str(caught.value) and f"HINT: {HINT}" in str(caught.value)
    cli = CliRunner().invoke(main, ["status", "--dsn", pg_dsn, "--once", "--no-executor"])
    assert cli.exit_code == 1 and CAUSE in cli.output and HINT in cli.output
