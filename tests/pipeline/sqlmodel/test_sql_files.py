"""Every file in sql/ is one RisingWave object that parses, has a topic contract and runs on DuckDB."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from pipeline.contracts.topics import TOPICS
from pipeline.engine.embedded import EmbeddedEngine, to_duckdb
from pipeline.sqlmodel.objects import DEFAULT_SQL_DIR, load_objects

FILES = sorted(DEFAULT_SQL_DIR.rglob("*.sql"))


def test_there_are_sql_files_in_every_kind_folder():
    kinds = {p.parent.name for p in FILES}
    assert {"tables", "sources", "views", "sinks"} <= kinds


def test_every_file_parses_in_the_risingwave_dialect_as_one_create():
    for path in FILES:
        statements = [s for s in sqlglot.parse(path.read_text(), read="risingwave") if s is not None]
        assert len(statements) == 1, path
        assert isinstance(statements[0], exp.Create), path
        assert not list(statements[0].find_all(exp.Command)), f"{path} fell back to an unparsed command"


def test_file_names_match_object_names_and_folders_match_kinds():
    folder = {"table": "tables", "source": "sources", "materialized_view": "views", "sink": "sinks"}
    for obj in load_objects():
        assert obj.path.stem == obj.name
        assert obj.path.parent.name == folder[obj.kind]


def test_inputs_and_sinks_match_their_topic_contracts():
    for obj in load_objects():
        if obj.kind in ("table", "source", "sink"):
            spec = TOPICS[obj.topic]
            if obj.kind == "sink":
                assert obj.primary_key == [spec.key]
                assert obj.format == "upsert"
            else:
                assert set(obj.columns) == set(spec.model.model_fields), obj.name
                assert obj.format == ("upsert" if spec.kind == "upsert" else "plain"), obj.name
                if spec.kind == "upsert":  # keyed by the message key; the JSON id stays a column
                    assert obj.key_column == "message_key" and obj.primary_key == ["message_key"], obj.name
                    assert spec.key in obj.columns and obj.key_column not in obj.columns, obj.name
                else:
                    assert obj.key_column is None, obj.name


def test_sink_columns_are_exactly_the_setpoint_contract():
    engine = EmbeddedEngine()
    sink = next(s for s in engine.sinks if s.name == "ocpp_setpoint_commands")
    cols, _ = engine.query(f"SELECT * FROM ({sink.ast.expression.sql('duckdb')}) AS s LIMIT 0")
    assert cols == list(TOPICS["ocpp.setpoint.commands"].model.model_fields)
    engine.close()


def test_no_broker_address_in_sql():
    for path in FILES:
        assert "bootstrap" not in path.read_text().lower(), path


def test_views_transpile_with_now_bound_to_the_engine_clock():
    views = [o for o in load_objects() if o.kind == "materialized_view"]
    uses_now = [v for v in views if "NOW()" in v.sql.upper()]
    assert uses_now, "temporal filters are expected in active_dr and current_price_tier"
    for view in uses_now:
        ddl = to_duckdb(view)
        assert "GETVARIABLE('PIPELINE_NOW')" in ddl.upper()
        assert "CURRENT_TIMESTAMP" not in ddl.upper()


def test_the_unrolled_allocation_views_are_what_their_generator_renders():
    from pipeline.allocation.render import render

    for name, text in render().items():
        committed = (DEFAULT_SQL_DIR / "views" / name).read_text()
        assert committed == text, f"{name}: run python -m pipeline.allocation.render"
