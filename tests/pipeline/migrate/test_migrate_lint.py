"""``lint`` reports every problem with file and line: parse errors, duplicates, unknown references,
cycles, what RisingWave cannot maintain, connector mistakes, plans over the scan budget, and what the
embedded engine cannot run."""

from __future__ import annotations

from pipeline.migrate.lint import SCAN_BUDGET, lint, plan_sizes
from pipeline.sqlmodel.objects import DEFAULT_SQL_DIR
from tests.kits.migrate import SMALL, write_sql


def found(tmp_path, files: dict[str, str]) -> list[tuple[str, int, str]]:
    root = write_sql(tmp_path / "sql", {**SMALL, **files})
    return [(i.path, i.line, i.code) for i in lint(root)]


def test_the_real_sql_dir_and_the_small_one_are_clean(tmp_path):
    assert lint() == []
    assert lint(write_sql(tmp_path / "sql", SMALL)) == []


def test_a_parse_error_points_at_its_line(tmp_path):
    assert found(
        tmp_path, {"views/broken.sql": "-- note\nCREATE MATERIALIZED VIEW broken AS\nSELECT FROM WHERE;\n"}
    ) == [("sql/views/broken.sql", 3, "parse")]


def test_two_statements_in_a_file_are_rejected(tmp_path):
    assert found(tmp_path, {"views/two.sql": "CREATE VIEW a AS SELECT 1;\nCREATE VIEW b AS SELECT 2;\n"}) == [
        ("sql/views/two.sql", 1, "parse")
    ]


def test_duplicates_unknown_references_and_cycles(tmp_path):
    issues = lint(
        write_sql(
            tmp_path / "sql",
            {
                **SMALL,
                "views/again.sql": "CREATE MATERIALIZED VIEW site_power AS SELECT 1 AS x;",
                "views/orphan.sql": "CREATE MATERIALIZED VIEW orphan AS\nSELECT a.x\nFROM sessions AS s\nJOIN ghost AS a ON TRUE;",
                "views/loop_a.sql": "CREATE MATERIALIZED VIEW loop_a AS SELECT * FROM loop_b;",
                "views/loop_b.sql": "CREATE MATERIALIZED VIEW loop_b AS SELECT * FROM loop_a;",
            },
        )
    )
    text = [str(i) for i in issues]
    assert (
        "sql/views/site_power.sql:1: [duplicate] duplicate object name 'site_power' (also in sql/views/again.sql)"
        in text
    )
    assert "sql/views/orphan.sql:4: [unknown-ref] unknown reference 'ghost'" in text
    assert any("[cycle] dependency cycle: loop_" in t for t in text)


def test_what_risingwave_cannot_maintain_is_rejected(tmp_path):
    issues = found(
        tmp_path,
        {
            "views/tree.sql": (
                "CREATE MATERIALIZED VIEW tree AS\nWITH RECURSIVE up AS (\n  SELECT session_id FROM sessions\n"
                "  UNION ALL SELECT session_id FROM up\n)\nSELECT * FROM up;"
            ),
            "views/stamped.sql": (
                "CREATE MATERIALIZED VIEW stamped AS\nSELECT session_id,\n  NOW() AS seen_at\n"
                "FROM sessions\nWHERE power_kw > 0;"
            ),
            "views/recent.sql": "CREATE MATERIALIZED VIEW recent AS\nSELECT session_id FROM sessions\nWHERE power_kw < 5 AND NOW() > NOW();",
        },
    )
    assert ("sql/views/tree.sql", 2, "streaming") in issues
    assert ("sql/views/stamped.sql", 3, "streaming") in issues
    assert not [i for i in issues if i[0] == "sql/views/recent.sql"]  # a temporal filter is fine


def test_connector_mistakes(tmp_path):
    issues = found(
        tmp_path,
        {
            "tables/nokey.sql": (
                "CREATE TABLE nokey (site_id VARCHAR) WITH (connector = 'kafka', topic = 'site.topology') "
                "FORMAT UPSERT ENCODE JSON;"
            ),
            "sinks/notopic.sql": "CREATE SINK notopic FROM site_power WITH (connector = 'kafka') FORMAT UPSERT ENCODE JSON;",
        },
    )
    assert ("sql/tables/nokey.sql", 1, "connector") in issues
    assert ("sql/sinks/notopic.sql", 1, "connector") in issues


def _upsert_table(columns: str, tail: str = "") -> str:
    return (
        f"CREATE TABLE keyed ({columns}){tail} WITH (connector = 'kafka', topic = 'site.topology') "
        "FORMAT UPSERT ENCODE JSON;"
    )


def test_an_upsert_table_is_keyed_by_the_message_key(tmp_path):
    accepted = _upsert_table("node_id VARCHAR, site_id VARCHAR, PRIMARY KEY (node_key)", " INCLUDE KEY AS node_key")
    assert found(tmp_path / "ok", {"tables/keyed.sql": accepted}) == []
    cases = {
        "json_pk": _upsert_table("node_id VARCHAR PRIMARY KEY, site_id VARCHAR"),  # what RisingWave 2.8 refuses
        "json_pk_and_key": _upsert_table("node_id VARCHAR PRIMARY KEY, site_id VARCHAR", " INCLUDE KEY AS node_key"),
        "no_pk": _upsert_table("node_id VARCHAR, site_id VARCHAR", " INCLUDE KEY AS node_key"),
        "declared_twice": _upsert_table("node_id VARCHAR, PRIMARY KEY (node_id)", " INCLUDE KEY AS node_id"),
    }
    for name, text in cases.items():
        issues = lint(write_sql(tmp_path / name / "sql", {**SMALL, "tables/keyed.sql": text}))
        assert [(i.path, i.code) for i in issues] == [("sql/tables/keyed.sql", "connector")], (name, issues)
    (issue,) = lint(write_sql(tmp_path / "plain" / "sql", {**SMALL, "tables/keyed.sql": cases["json_pk"]}))
    assert "INCLUDE KEY AS" in issue.message and "message key" in issue.message


def test_what_the_embedded_engine_cannot_run(tmp_path):
    issues = lint(
        write_sql(
            tmp_path / "sql",
            {
                **SMALL,
                "views/typo.sql": "-- a typo DuckDB finds when binding\nCREATE MATERIALIZED VIEW typo AS\nSELECT no_such_column FROM sessions;",
                "views/downstream.sql": "CREATE MATERIALIZED VIEW downstream AS SELECT * FROM typo;",
                "sources/stray.sql": (
                    "CREATE SOURCE stray (x INT) WITH (connector = 'kafka', topic = 'no.such.topic') "
                    "FORMAT PLAIN ENCODE JSON;"
                ),
            },
        )
    )
    text = [str(i) for i in issues]
    assert any(
        t.startswith("sql/views/typo.sql:2: [embedded] the embedded engine cannot run it:") and "no_such_column" in t
        for t in text
    )
    assert not any("downstream" in t for t in text)  # reported once, at its cause
    assert (
        "sql/sources/stray.sql:1: [embedded] topic 'no.such.topic' has no contract in pipeline.contracts.topics, "
        "so the embedded engine refuses it" in text
    )


def sizes(root) -> dict[str, int]:
    return {s.name: s.scans for s in plan_sizes(root)}


def test_plan_size_expands_every_cte_and_plain_view_at_each_reference(tmp_path):
    root = write_sql(
        tmp_path / "sql",
        {
            **SMALL,
            "views/doubled.sql": (
                "CREATE MATERIALIZED VIEW doubled AS\nWITH a AS (SELECT site_id FROM sessions),\n"
                "b AS (SELECT a.site_id FROM a JOIN a AS a2 ON a2.site_id = a.site_id),\n"
                "c AS (SELECT b.site_id FROM b JOIN b AS b2 ON b2.site_id = b.site_id)\n"
                "SELECT c.site_id FROM c JOIN site_power AS p ON p.site_id = c.site_id;"
            ),
            "views/pair.sql": (
                "CREATE VIEW pair AS SELECT s.site_id FROM sessions AS s "
                "JOIN sessions AS t ON t.session_id = s.session_id;"
            ),
            "views/pairs.sql": (
                "CREATE MATERIALIZED VIEW pairs AS SELECT p.site_id FROM pair AS p "
                "JOIN pair AS q ON q.site_id = p.site_id JOIN site_power AS w ON w.site_id = p.site_id;"
            ),
        },
    )
    # a: 1; b reads a twice: 2; c reads b twice: 4; plus site_power, a materialized view: one scan
    # a plain view is planned anew where it is read (2 scans each), a materialized view is read as stored
    assert sizes(root) == {"site_power": 1, "session_share": 2, "shares": 1, "doubled": 5, "pair": 2, "pairs": 5}
    assert lint(root) == []


def test_a_view_whose_expanded_plan_is_over_the_budget_is_rejected(tmp_path):
    ctes = ["l0 AS (SELECT site_id FROM sessions)"] + [
        f"l{k} AS (SELECT a.site_id FROM l{k - 1} AS a JOIN l{k - 1} AS b ON b.site_id = a.site_id)"
        for k in range(1, 8)
    ]
    text = (
        "-- each level reads the one below twice\nCREATE MATERIALIZED VIEW deep AS\nWITH "
        + ",\n".join(ctes)
        + "\nSELECT site_id FROM l7;"
    )
    root = write_sql(tmp_path / "sql", {**SMALL, "views/deep.sql": text})
    assert sizes(root)["deep"] == 2**7 > SCAN_BUDGET
    (issue,) = lint(root)
    assert (issue.path, issue.line, issue.code) == ("sql/views/deep.sql", 2, "plan-size")
    assert f"128 relation scans (budget {SCAN_BUDGET})" in issue.message
    assert "l6 (2x)" in issue.message  # names what is read more than once


def test_every_real_view_is_within_the_scan_budget_and_the_allocation_well_under(tmp_path):
    real = sizes(DEFAULT_SQL_DIR)
    assert max(real.values()) <= SCAN_BUDGET, real
    allocation = ("session_admission_deep", "session_admission", "session_fill_deep", "session_fill")
    assert {name: real[name] for name in (*allocation, "session_allocation")} == {
        "session_admission_deep": 4,  # session_limits, node_headroom at each of the 3 deep levels
        # session_limits twice (the shallow sessions, then the columns the levels do not carry), the deep
        # view's rows, node_headroom at each of the 3 levels above
        "session_admission": 6,
        "session_fill_deep": 4,  # likewise, over session_admission
        "session_fill": 6,
        "session_allocation": 2,
    }
