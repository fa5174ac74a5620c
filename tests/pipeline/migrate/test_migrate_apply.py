"""Apply on the embedded target: status is clean after it, a second apply is a no-op, plan changes
nothing, destructive steps need confirmation, a held lock refuses a second migrator, and a failing step
stops the run with what was and was not applied. One test runs the real sql/."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from pipeline.engine.embedded import EmbeddedEngine
from pipeline.migrate import commands
from pipeline.migrate.model import CREATE, DROP, IN_SYNC, RECREATE, LockHeld, MigrateError
from pipeline.migrate.targets import CATALOG_TABLE, LOCK_TABLE, open_target
from pipeline.sqlmodel.objects import load_objects


def catalog_rows(path: str) -> list[tuple]:
    with duckdb.connect(path, read_only=True) as con:
        return con.execute(f"SELECT name, kind, hash, sql, applied_at FROM {CATALOG_TABLE} ORDER BY name").fetchall()


def test_apply_then_status_is_clean_and_a_second_apply_is_a_no_op(small_sql, duck):
    result = commands.apply(duck, small_sql)
    assert result.ok and [s.name for s in result.applied] == ["sessions", "site_power", "session_share", "shares"]
    status = commands.status(duck, small_sql)
    assert status.clean and {e.state for e in status.entries} == {IN_SYNC}
    again = commands.apply(duck, small_sql)
    assert again.ok and again.plan.empty and not again.applied


def test_the_catalog_records_each_applied_object(small_sql, duck):
    before = datetime.now(UTC)
    commands.apply(duck, small_sql)
    rows = {r[0]: r for r in catalog_rows(duck)}
    objects = {o.name: o for o in load_objects(small_sql)}
    assert set(rows) == set(objects)
    for name, (_, kind, hash_, _sql, applied_at) in rows.items():
        assert kind == objects[name].kind and hash_ == objects[name].hash
        assert applied_at >= before
    assert rows["site_power"][3].startswith("CREATE OR REPLACE VIEW site_power")
    assert rows["shares"][3].startswith("-- sink: recorded in the catalog only")


def test_plan_and_status_change_nothing(small_sql, duck):
    commands.plan(duck, small_sql)
    with pytest.raises(MigrateError, match="no such DuckDB file"):  # a typo must not read as "nothing applied"
        commands.status(duck, small_sql)
    assert not Path(duck).exists()  # a missing embedded target is not even created
    commands.apply(duck, small_sql)
    (small_sql / "views/site_power.sql").write_text(
        "CREATE MATERIALIZED VIEW site_power AS SELECT site_id, MAX(power_kw) AS power_kw FROM sessions GROUP BY site_id;"
    )
    snapshot = Path(duck).read_bytes()
    plan = commands.plan(duck, small_sql)
    commands.status(duck, small_sql)
    commands.diff(duck, "site_power", small_sql)
    assert plan.destructive and Path(duck).read_bytes() == snapshot


def test_drift_shows_changed_not_applied_missing_and_unknown_objects(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "views/site_power.sql").write_text(
        "CREATE MATERIALIZED VIEW site_power AS SELECT site_id, SUM(power_kw) AS power_kw, COUNT(*) AS n "
        "FROM sessions GROUP BY site_id;"
    )
    (small_sql / "views/extra.sql").write_text("CREATE MATERIALIZED VIEW extra AS SELECT site_id FROM site_power;")
    (small_sql / "sinks/shares.sql").unlink()
    with duckdb.connect(duck) as con:
        con.execute("CREATE TABLE stray (x INT)")
        con.execute("DROP TABLE session_share")
    states = {e.name: (e.state, e.detail) for e in commands.status(duck, small_sql).entries}
    assert states["sessions"] == (IN_SYNC, "")
    assert states["site_power"] == ("changed", "non-breaking: adds column(s) at the end: n")
    assert states["extra"][0] == "not applied"
    assert states["session_share"][0] == "missing on target"
    assert states["shares"][0] == "unknown to sql/" and "--allow-drop" in states["shares"][1]
    assert states["stray"] == ("unknown to sql/", "on the target, never applied by pipeline migrate")


def test_destructive_steps_need_yes_or_a_confirmation(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "views/site_power.sql").write_text(
        "CREATE MATERIALIZED VIEW site_power AS SELECT site_id, MAX(power_kw) AS power_kw FROM sessions GROUP BY site_id;"
    )
    with pytest.raises(MigrateError, match=r"3 destructive step\(s\) and was not confirmed"):
        commands.apply(duck, small_sql)
    asked = []
    with pytest.raises(MigrateError):
        commands.apply(duck, small_sql, confirm=lambda plan: asked.append(plan) or False)
    assert len(asked) == 1 and not commands.status(duck, small_sql).clean
    result = commands.apply(duck, small_sql, confirm=lambda plan: True)
    assert result.ok and [s.action for s in result.applied] == [DROP] * 3 + [RECREATE] * 3
    assert commands.status(duck, small_sql).clean


def test_a_second_migrator_is_refused_while_the_lock_is_held(small_sql, duck):
    with open_target(duck) as holder, holder.locked("ops@box pid 1 #abc") as owner:
        assert owner == "ops@box pid 1 #abc"
        with pytest.raises(LockHeld, match=r"locked by another migrator \(ops@box pid 1 #abc since"):
            commands.apply(duck, small_sql)
        assert not commands.status(duck, small_sql).clean  # nothing was applied
    assert commands.apply(duck, small_sql).ok  # released at the end of the block


def test_an_expired_lock_of_a_crashed_migrator_is_taken_over(small_sql, duck):
    with open_target(duck) as crashed:
        crashed.acquire_lock("crashed@box", ttl_s=-1)  # already expired, never released
    assert commands.apply(duck, small_sql).ok
    with duckdb.connect(duck, read_only=True) as con:
        assert con.execute(f"SELECT count(*) FROM {LOCK_TABLE}").fetchone() == (0,)


def test_another_process_holding_the_file_gets_a_one_line_error(small_sql, duck):
    commands.apply(duck, small_sql)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys, time; c = duckdb.connect({duck!r}); print('open', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(MigrateError, match="in use by another process"):
            commands.apply(duck, small_sql)
    finally:
        holder.kill()
        holder.wait()


def test_a_failing_step_stops_the_run_and_reports_applied_and_not_applied(small_sql, duck):
    (small_sql / "views/site_power.sql").write_text(
        "CREATE MATERIALIZED VIEW site_power AS SELECT site_id, SUM(no_such_column) AS power_kw FROM sessions "
        "GROUP BY site_id;"
    )
    result = commands.apply(duck, small_sql)
    assert not result.ok
    assert [s.name for s in result.applied] == ["sessions"]
    assert result.failed.name == "site_power" and "no_such_column" in result.error
    assert [s.name for s in result.not_applied] == ["site_power", "session_share", "shares"]
    assert [r[0] for r in catalog_rows(duck)] == ["sessions"]
    with duckdb.connect(duck, read_only=True) as con:  # the lock was released
        assert con.execute(f"SELECT count(*) FROM {LOCK_TABLE}").fetchone() == (0,)
    (small_sql / "views/site_power.sql").write_text(
        "CREATE MATERIALIZED VIEW site_power AS SELECT site_id, SUM(power_kw) AS power_kw FROM sessions GROUP BY site_id;"
    )
    resumed = commands.apply(duck, small_sql)
    assert resumed.ok and [(s.action, s.name) for s in resumed.applied] == [
        (CREATE, "site_power"),
        (CREATE, "session_share"),
        (CREATE, "shares"),
    ]


def test_the_real_sql_dir_applies_cleanly_and_the_engine_runs_on_the_result(tmp_path):
    target = str(tmp_path / "engine.duckdb")
    result = commands.apply(target)
    assert result.ok and len(result.applied) == len(load_objects())
    assert commands.status(target).clean
    assert commands.apply(target).plan.empty
    engine = EmbeddedEngine(database=target)  # the engine's own DDL on top of the migrated file
    try:
        assert engine.evaluate(datetime(2024, 6, 3, 12, tzinfo=UTC)) == []
    finally:
        engine.close()
    assert commands.status(target).clean
