"""Planning: dependency order, change detection by normalized hash, dependents and sinks recreated,
removed objects kept or dropped, and the breaking / non-breaking classification."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.migrate import commands
from pipeline.migrate.changes import classify
from pipeline.migrate.model import BREAKING, CREATE, DROP, NON_BREAKING, RECREATE, UNKNOWN, MigrateError
from pipeline.sqlmodel.objects import load_objects, parse_file
from tests.kits.migrate import SMALL, write_sql


def steps(plan) -> list[tuple[str, str]]:
    return [(s.action, s.name) for s in plan.steps]


def test_a_fresh_target_gets_every_object_created_in_dependency_order(small_sql, duck):
    plan = commands.plan(duck, small_sql)
    assert steps(plan) == [(CREATE, "sessions"), (CREATE, "site_power"), (CREATE, "session_share"), (CREATE, "shares")]
    assert not plan.destructive
    assert all(s.reason == "new in sql/" for s in plan.steps)


def test_dependency_order_holds_whatever_the_file_names(tmp_path, duck):
    # z depends on y depends on x; file names sort the other way round
    sql = write_sql(
        tmp_path / "sql",
        {
            "a.sql": "CREATE MATERIALIZED VIEW z AS SELECT n FROM y;",
            "b.sql": "CREATE MATERIALIZED VIEW y AS SELECT n FROM x;",
            "c.sql": "CREATE TABLE x (n INT);",
        },
    )
    assert steps(commands.plan(duck, sql)) == [(CREATE, "x"), (CREATE, "y"), (CREATE, "z")]


def test_after_apply_a_whitespace_comment_and_keyword_case_edit_plans_nothing(small_sql, duck):
    commands.apply(duck, small_sql)
    path = small_sql / "views/site_power.sql"
    path.write_text(
        "-- total power per site\ncreate   materialized view site_power as\n"
        "  select site_id,\n\n\tsum(power_kw) as power_kw   -- kW\n  from sessions group by site_id\n"
    )
    assert commands.plan(duck, small_sql).empty


def test_a_changed_view_recreates_its_dependents_and_reattaches_the_sink(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "views/site_power.sql").write_text(
        "CREATE MATERIALIZED VIEW site_power AS SELECT site_id, SUM(power_kw) AS power_kw FROM sessions "
        "WHERE power_kw > 0 GROUP BY site_id;"
    )
    plan = commands.plan(duck, small_sql)
    assert steps(plan) == [
        (DROP, "shares"),
        (DROP, "session_share"),
        (DROP, "site_power"),
        (RECREATE, "site_power"),
        (RECREATE, "session_share"),
        (RECREATE, "shares"),
    ]
    by = {(s.action, s.name): s for s in plan.steps}
    assert by[(RECREATE, "site_power")].change.category == BREAKING
    assert by[(RECREATE, "session_share")].reason == "depends on site_power, which is recreated"
    assert by[(RECREATE, "shares")].reason == "sink reattached: reads from session_share, which is recreated"
    assert len(plan.destructive) == 3
    assert "sessions" not in {s.name for s in plan.steps}  # upstream is untouched


def test_a_changed_leaf_recreates_only_itself_and_what_reads_it(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "views/session_share.sql").write_text(
        "CREATE MATERIALIZED VIEW session_share AS SELECT s.session_id, s.site_id, s.power_kw / p.power_kw AS share, "
        "p.power_kw AS site_kw FROM sessions AS s JOIN site_power AS p ON p.site_id = s.site_id;"
    )
    plan = commands.plan(duck, small_sql)
    assert steps(plan) == [(DROP, "shares"), (DROP, "session_share"), (RECREATE, "session_share"), (RECREATE, "shares")]
    change = plan.steps[2].change
    assert change.category == NON_BREAKING and change.details == ("adds column(s) at the end: site_kw",)


def test_an_object_removed_from_sql_is_kept_unless_drops_are_allowed(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "sinks/shares.sql").unlink()
    plan = commands.plan(duck, small_sql)
    assert plan.empty and plan.kept == ("shares",)
    plan = commands.plan(duck, small_sql, allow_drop=True)
    assert steps(plan) == [(DROP, "shares")] and plan.steps[0].reason == "removed from sql/"


def test_a_change_that_needs_dropping_a_removed_dependent_asks_for_allow_drop(small_sql, duck):
    commands.apply(duck, small_sql)
    (small_sql / "sinks/shares.sql").unlink()
    (small_sql / "views/session_share.sql").unlink()
    (small_sql / "views/site_power.sql").write_text(
        "CREATE MATERIALIZED VIEW site_power AS SELECT site_id, MAX(power_kw) AS power_kw FROM sessions GROUP BY site_id;"
    )
    with pytest.raises(MigrateError, match="needs dropping session_share.*--allow-drop"):
        commands.plan(duck, small_sql)
    plan = commands.plan(duck, small_sql, allow_drop=True)
    assert steps(plan) == [(DROP, "shares"), (DROP, "session_share"), (DROP, "site_power"), (RECREATE, "site_power")]


def test_a_relation_already_on_the_target_but_not_in_the_catalog_is_recreated(small_sql, duck):
    import duckdb

    with duckdb.connect(duck) as con:
        con.execute("CREATE TABLE sessions (session_id VARCHAR)")
    plan = commands.plan(duck, small_sql)
    assert steps(plan)[:2] == [(DROP, "sessions"), (RECREATE, "sessions")]
    assert "not in the catalog" in plan.steps[0].reason


def _obj(tmp_path: Path, text: str):
    path = tmp_path / "x.sql"
    path.write_text(text)
    return parse_file(path)


@pytest.mark.parametrize(
    ("old", "new", "category"),
    [
        (
            "CREATE MATERIALIZED VIEW v AS SELECT a, b FROM t",
            "CREATE MATERIALIZED VIEW v AS SELECT a, b, a + b AS c FROM t",
            NON_BREAKING,
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT a FROM t UNION ALL SELECT a FROM u",
            "CREATE MATERIALIZED VIEW v AS SELECT a, 1 AS k FROM t UNION ALL SELECT a, 2 AS k FROM u",
            NON_BREAKING,
        ),
        (
            "CREATE TABLE t (a INT PRIMARY KEY, b INT)",
            "CREATE TABLE t (a INT PRIMARY KEY, b INT, c VARCHAR)",
            NON_BREAKING,
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT a, b FROM t",
            "CREATE MATERIALIZED VIEW v AS SELECT c, a, b FROM t",
            BREAKING,
        ),
        ("CREATE MATERIALIZED VIEW v AS SELECT a, b FROM t", "CREATE MATERIALIZED VIEW v AS SELECT a FROM t", BREAKING),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT a FROM t WHERE a > 1",
            "CREATE MATERIALIZED VIEW v AS SELECT a FROM t WHERE a > 2",
            BREAKING,
        ),
        ("CREATE MATERIALIZED VIEW v AS SELECT a FROM t", "CREATE VIEW v AS SELECT a FROM t", BREAKING),
        ("not sql at all (", "CREATE MATERIALIZED VIEW v AS SELECT a FROM t", UNKNOWN),
    ],
)
def test_changes_are_classified_with_sqlglots_diff(tmp_path, old, new, category):
    obj = _obj(tmp_path, new)
    old_kind = "view" if old.startswith("CREATE VIEW") else None
    change = classify(old_kind, old, obj)
    assert change.category == category, change


def test_a_breaking_change_says_what_sqlglot_saw(tmp_path):
    obj = _obj(tmp_path, "CREATE MATERIALIZED VIEW v AS SELECT a FROM t WHERE a > 2")
    change = classify("materialized_view", "CREATE MATERIALIZED VIEW v AS SELECT a FROM t WHERE a > 1", obj)
    assert any("1" in d and "2" in d for d in change.details), change.details


def test_the_real_sql_dir_plans_every_object_in_dependency_order(tmp_path):
    objects = load_objects()
    plan = commands.plan(str(tmp_path / "fresh.duckdb"))
    assert [s.name for s in plan.steps] == [o.name for o in objects]
    position = {s.name: i for i, s in enumerate(plan.steps)}
    for obj in objects:
        assert all(position[dep] < position[obj.name] for dep in obj.depends_on), obj.name
    assert SMALL  # the small dir stays independent of the real one
