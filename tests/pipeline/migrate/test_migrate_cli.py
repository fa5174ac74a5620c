"""``pipeline migrate`` through click: exit codes, one-line errors, the printed plan (a stored snapshot),
confirmation of destructive steps, status --check, diff and lint output."""

from __future__ import annotations

import io
import json
import os
import re
from datetime import UTC
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from pipeline.cli.main import main
from pipeline.migrate import commands
from pipeline.migrate.render import render_plan
from tests.kits.migrate import fake_risingwave

SNAPSHOTS = Path(__file__).parent / "snapshots"
CHANGED_SITE_POWER = (
    "CREATE MATERIALIZED VIEW site_power AS SELECT site_id, SUM(power_kw) AS power_kw FROM sessions "
    "WHERE power_kw > 0 GROUP BY site_id;"
)


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, ["migrate", *args], input=input)


def plain(console_render, *args) -> str:
    buffer = io.StringIO()
    console_render(*args, Console(file=buffer, width=100, color_system=None, highlight=False))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def test_the_printed_plan_of_a_changed_view_matches_the_snapshot(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "views/site_power.sql").write_text(CHANGED_SITE_POWER)
    text = plain(render_plan, commands.plan(duck, small_sql)).replace(duck, "<target>")
    snapshot = SNAPSHOTS / "plan_changed_view.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(text)
    assert text == snapshot.read_text()


def test_the_printed_risingwave_plan_of_a_changed_view_matches_the_snapshot(small_sql, tmp_path):
    # the production path: RisingWave DDL with the Kafka settings injected (no server needed to plan)
    from datetime import datetime

    from pipeline.migrate.kafka import ConnectorSettings
    from pipeline.migrate.model import CatalogEntry
    from pipeline.migrate.planner import build_plan
    from pipeline.sqlmodel.objects import load_objects

    applied = load_objects(small_sql)
    catalog = {
        o.name: CatalogEntry(
            o.name, o.kind, o.hash, tuple(sorted(o.depends_on)), "", o.sql, datetime(2024, 6, 3, tzinfo=UTC)
        )
        for o in applied
    }
    (small_sql / "views/site_power.sql").write_text(CHANGED_SITE_POWER)
    target = fake_risingwave(ConnectorSettings("kafka:9092", "depot-1.", {"properties.sasl.password": "s3cret"}))
    text = plain(render_plan, build_plan(load_objects(small_sql), catalog, None, target))
    snapshot = SNAPSHOTS / "plan_changed_view_risingwave.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(text)
    assert text == snapshot.read_text()
    assert "s3cret" not in text


def test_plan_prints_steps_and_sql_and_exits_0(small_sql, duck):
    result = run("plan", "--target", duck, "--sql-dir", str(small_sql))
    assert result.exit_code == 0, result.output
    assert f"Plan for embedded target {duck}: 4 step(s), 0 destructive" in result.output
    assert "CREATE TABLE IF NOT EXISTS sessions" in result.output
    assert not Path(duck).exists()


def test_plan_json_is_plain_data(small_sql, duck):
    result = run("plan", "--target", duck, "--sql-dir", str(small_sql), "--json")
    data = json.loads(result.output)
    assert [(s["action"], s["name"]) for s in data["steps"]][:2] == [("create", "sessions"), ("create", "site_power")]
    assert data["engine"] == "embedded" and data["destructive_steps"] == 0


def test_apply_status_and_a_second_apply(small_sql, duck):
    result = run("apply", "--target", duck, "--sql-dir", str(small_sql))
    assert result.exit_code == 0, result.output
    assert "Applied 4 step(s)" in result.output
    status = run("status", "--target", duck, "--sql-dir", str(small_sql), "--check")
    assert status.exit_code == 0 and "clean, 4 object(s) in sync" in status.output
    again = run("apply", "--target", duck, "--sql-dir", str(small_sql))
    assert again.exit_code == 0 and "No changes" in again.output and "nothing applied" in again.output


def test_destructive_apply_asks_and_a_no_or_no_input_applies_nothing(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "views/site_power.sql").write_text(CHANGED_SITE_POWER)
    for answer in ("n\n", None):
        refused = run("apply", "--target", duck, "--sql-dir", str(small_sql), input=answer)
        assert refused.exit_code == 1
        assert "3 of them destructive?" in refused.output
        assert refused.output.strip().endswith(
            "Error: not applied: the plan has 3 destructive step(s) and was not confirmed (pass --yes)"
        )
    assert run("status", "--target", duck, "--sql-dir", str(small_sql), "--check").exit_code == 1
    accepted = run("apply", "--target", duck, "--sql-dir", str(small_sql), input="y\n")
    assert accepted.exit_code == 0 and "Applied 6 step(s)" in accepted.output


def test_apply_yes_skips_the_question(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "views/site_power.sql").write_text(CHANGED_SITE_POWER)
    result = run("apply", "--target", duck, "--sql-dir", str(small_sql), "--yes")
    assert result.exit_code == 0 and "destructive?" not in result.output


def test_a_failed_apply_reports_and_exits_1_with_a_one_line_error(small_sql, duck):
    (small_sql / "views/site_power.sql").write_text(
        "CREATE MATERIALIZED VIEW site_power AS SELECT site_id, SUM(nope) AS power_kw FROM sessions GROUP BY site_id;"
    )
    result = run("apply", "--target", duck, "--sql-dir", str(small_sql))
    assert result.exit_code == 1
    assert "Applied (1): create table sessions" in result.output
    assert (
        "Not applied (3): create materialized_view site_power, create materialized_view session_share, "
        "create sink shares" in result.output
    )
    last = result.output.strip().splitlines()[-1]
    assert re.match(r"Error: step 2 of 4 \(create materialized_view site_power\) failed: .*nope", last)


def test_a_held_lock_is_a_one_line_error(small_sql, duck):
    from pipeline.migrate.targets import open_target

    with open_target(duck) as holder, holder.locked("ops@box pid 1 #abc"):
        result = run("apply", "--target", duck, "--sql-dir", str(small_sql))
    assert result.exit_code == 1
    assert result.output.startswith("Error: target is locked by another migrator (ops@box pid 1 #abc since ")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["plan", "--target", "postgresql://nobody@127.0.0.1:1/x"],
            "Error: cannot connect to postgresql://nobody@127.0.0.1:1/x",
        ),
        (
            ["plan", "--target", "postgresql://u:hunter2@127.0.0.1:1/x"],
            "Error: cannot connect to postgresql://u:***@127.0.0.1:1/x",
        ),
        (["status", "--target", "{tmp}"], "is a directory, not a DuckDB database file"),
        (["status", "--target", "{tmp}/typo.duckdb"], "typo.duckdb: no such DuckDB file"),
        (["plan", "--target", "{tmp}/t.duckdb", "--sql-dir", "{tmp}/nope"], "Error: "),
        (["diff", "no_such_object", "--target", "{tmp}/t.duckdb"], "Error: no_such_object: not in"),
    ],
)
def test_errors_are_one_line_with_exit_1(tmp_path, args, message):
    result = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert message in result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output


def test_a_missing_target_is_a_usage_error():
    result = run("plan")
    assert result.exit_code == 2 and "--target" in result.output


def test_diff_shows_the_change(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "views/site_power.sql").write_text(CHANGED_SITE_POWER)
    result = run("diff", "site_power", "--target", duck, "--sql-dir", str(small_sql))
    assert result.exit_code == 0
    assert result.output.startswith("site_power: changed (breaking: inserts WHERE power_kw > 0)")
    assert "+WHERE" in result.output and "+  power_kw > 0" in result.output


def test_lint_exit_codes(small_sql, tmp_path):
    ok = run("lint", "--sql-dir", str(small_sql))
    assert ok.exit_code == 0 and "no problems" in ok.output
    (small_sql / "views/bad.sql").write_text("CREATE MATERIALIZED VIEW bad AS\nSELECT x\nFROM nowhere;\n")
    bad = run("lint", "--sql-dir", str(small_sql))
    assert bad.exit_code == 1
    assert "sql/views/bad.sql:3: [unknown-ref] unknown reference 'nowhere'" in bad.output


def test_lint_verbose_reports_each_views_scan_count(small_sql):
    result = run("lint", "--verbose", "--sql-dir", str(small_sql))
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["site_power", "materialized_view", "1"] in lines and ["session_share", "materialized_view", "2"] in lines
    assert "no problems" in result.output
    data = json.loads(run("lint", "--verbose", "--json", "--sql-dir", str(small_sql)).output)
    assert (
        data["issues"] == []
        and {
            "name": "session_share",
            "kind": "materialized_view",
            "scans": 2,
            "path": "sql/views/session_share.sql",
            "line": 1,
        }
        in data["plan_sizes"]
    )
