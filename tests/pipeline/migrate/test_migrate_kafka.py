"""Apply-time settings: the broker, topic prefix and security properties go into the WITH clause of
Kafka connectors on RisingWave, secrets are redacted from what is shown, and a RisingWave apply without
a bootstrap is refused before anything runs."""

from __future__ import annotations

import pytest
import sqlglot

from pipeline.migrate.commands import _check_settings
from pipeline.migrate.kafka import ConnectorSettings, inject
from pipeline.migrate.model import MigrateError
from pipeline.migrate.planner import build_plan
from pipeline.sqlmodel.objects import load_objects
from pipeline.transport.config import KafkaSettings
from tests.kits.migrate import SMALL, fake_risingwave, write_sql

SECURE = ConnectorSettings(
    "b1:9092,b2:9092",
    "depot-1.",
    {
        "properties.security.protocol": "SASL_SSL",
        "properties.sasl.mechanism": "SCRAM-SHA-512",
        "properties.sasl.username": "pipeline",
        "properties.sasl.password": "s3cret",
    },
)


def objects(tmp_path):
    return {o.name: o for o in load_objects(write_sql(tmp_path / "sql", SMALL))}


def with_clause(create) -> dict[str, str]:
    return {
        p.this.sql("risingwave"): p.args["value"].name
        for p in create.args["properties"].expressions
        if type(p).__name__ == "Property"
    }


def test_connectors_get_broker_prefix_and_security(tmp_path):
    sessions = inject(objects(tmp_path)["sessions"], SECURE)
    assert with_clause(sessions) == {
        "connector": "kafka",
        "topic": "depot-1.ocpp.active.sessions",
        "properties.bootstrap.server": "b1:9092,b2:9092",
        "properties.security.protocol": "SASL_SSL",
        "properties.sasl.mechanism": "SCRAM-SHA-512",
        "properties.sasl.username": "pipeline",
        "properties.sasl.password": "s3cret",
    }
    text = sessions.sql("risingwave", pretty=True)
    assert text.rstrip().endswith("FORMAT UPSERT\nENCODE JSON")  # the WITH clause stays before FORMAT
    assert "PRIMARY KEY (message_key)\n)\nINCLUDE KEY AS message_key\nWITH (" in text  # the key stays before WITH
    reparsed = sqlglot.parse_one(text, read="risingwave")  # still RisingWave SQL
    assert reparsed.this.this.name == "sessions"


def test_the_sink_keeps_its_primary_key_and_gets_the_prefix(tmp_path):
    sink = with_clause(inject(objects(tmp_path)["shares"], SECURE))
    assert sink["primary_key"] == "session_id" and sink["topic"] == "depot-1.ocpp.setpoint.commands"


def test_a_sink_written_from_a_view_keeps_that_form(tmp_path):
    from pipeline.migrate.kafka import render

    sink = objects(tmp_path)["shares"]
    text = render(sink, inject(sink, SECURE, redact=True))
    assert text.startswith("CREATE SINK shares FROM session_share\nWITH (")
    assert "topic='depot-1.ocpp.setpoint.commands'" in text and "properties.sasl.password='***'" in text
    assert sqlglot.parse_one(text, read="risingwave").expression.sql("risingwave") == "SELECT * FROM session_share"


def test_views_are_left_alone(tmp_path):
    view = objects(tmp_path)["site_power"]
    assert inject(view, SECURE) == view.ast


def test_secrets_are_redacted_from_the_shown_statement(tmp_path):
    run, shown = fake_risingwave(SECURE).create_statement(objects(tmp_path)["sessions"])
    assert "properties.sasl.password='s3cret'" in run
    assert "s3cret" not in shown and "properties.sasl.password='***'" in shown


def test_settings_come_from_pipeline_settings_with_cli_overrides(monkeypatch):
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "env-broker:9092")
    monkeypatch.setenv("PIPELINE_KAFKA__TOPIC_PREFIX", "env.")
    monkeypatch.delenv("PIPELINE_SETTINGS_FILE", raising=False)
    from pipeline.cli.migrate import connector_settings

    assert connector_settings() == ConnectorSettings("env-broker:9092", "env.", {})
    assert connector_settings(topic_prefix="cli.").topic_prefix == "cli."
    assert connector_settings(bootstrap_servers="cli:1").bootstrap_servers == "cli:1"


def test_security_settings_map_to_risingwave_properties():
    kafka = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="p",
        ssl_cafile="/etc/ca.pem",
        ssl_check_hostname=False,
    )
    assert ConnectorSettings.from_kafka(kafka).properties == {
        "properties.security.protocol": "SASL_SSL",
        "properties.sasl.mechanism": "PLAIN",
        "properties.sasl.username": "u",
        "properties.sasl.password": "p",
        "properties.ssl.ca.location": "/etc/ca.pem",
        "properties.ssl.endpoint.identification.algorithm": "none",
    }


def test_a_risingwave_apply_without_a_bootstrap_is_refused(tmp_path):
    target = fake_risingwave(ConnectorSettings(None, "", {}))
    plan = build_plan(load_objects(write_sql(tmp_path / "sql", SMALL)), {}, None, target)
    with pytest.raises(MigrateError) as refused:
        _check_settings(plan, target)
    assert str(refused.value) == (
        "no Kafka bootstrap for sessions, shares: pass --kafka-bootstrap or set PIPELINE_KAFKA__BOOTSTRAP_SERVERS"
    )
