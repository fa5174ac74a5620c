"""Deployment settings: env vars over the settings file over defaults, secrets kept secret, SASL/TLS checked,
and the Kafka CLI options failing with one line (no broker needed)."""

from __future__ import annotations

import ssl

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.settings import KafkaSettings, load_settings
from pipeline.site_config import ConfigError
from pipeline.transport.kafka import KafkaTransport, topic_configs


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)


def test_env_overrides_the_file_and_arguments_override_both(tmp_path, monkeypatch):
    path = tmp_path / "pipeline.yaml"
    path.write_text("kafka:\n  bootstrap_servers: file:9092\n  topic_prefix: file.\n  partitions: 3\n")
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings(path, kafka={"topic_prefix": "cli."})
    assert (settings.kafka.bootstrap_servers, settings.kafka.topic_prefix, settings.kafka.partitions) == (
        "env:9092", "cli.", 3)
    monkeypatch.setenv("PIPELINE_SETTINGS_FILE", str(path))
    assert load_settings().kafka.partitions == 3
    assert load_settings(None).kafka.topic_prefix == "file."


def test_defaults_without_a_file():
    kafka = load_settings().kafka
    assert (kafka.bootstrap_servers, kafka.topic_prefix, kafka.security_protocol) == ("localhost:9092", "", "PLAINTEXT")


def test_secrets_never_show_and_sasl_options_reach_aiokafka(monkeypatch):
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_USERNAME", "pipeline")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_PASSWORD", "hunter2")
    settings = load_settings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    options = settings.kafka.client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("pipeline", "hunter2")
    assert "ssl_context" not in options


def test_tls_builds_a_verifying_context():
    options = KafkaSettings(security_protocol="SSL").client_options()
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with pytest.raises(ConfigError, match="kafka TLS"):
        KafkaSettings(security_protocol="SSL", ssl_cafile="/nonexistent/ca.pem").client_options()


@pytest.mark.parametrize("fields, message", [
    ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism, sasl_username and sasl_password"),
    ({"sasl_mechanism": "PLAIN"}, "needs security_protocol SASL_PLAINTEXT or SASL_SSL"),
    ({"ssl_certfile": "/c.pem"}, "set both ssl_certfile and ssl_keyfile"),
    ({"topic_prefix": "bad prefix"}, "kafka.topic_prefix"),
    ({"partitions": 0}, "kafka.partitions"),
])
def test_invalid_settings_are_one_line_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(kafka=fields)
    assert "\n" not in str(info.value)


def test_a_missing_or_broken_settings_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="settings file not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(bad)


def test_upsert_topics_are_compacted_and_names_prefixed():
    settings = KafkaSettings(topic_prefix="depot-1.", min_insync_replicas=2)
    assert topic_configs("ocpp.setpoint.commands", settings) == {"cleanup.policy": "compact",
                                                                 "min.insync.replicas": "2"}
    assert topic_configs("bems.site.demand", settings)["cleanup.policy"] == "delete"
    assert topic_configs("ocpp.setpoint.commands.dlq", settings)["cleanup.policy"] == "delete"
    transport = KafkaTransport(settings)
    assert transport.physical("site.topology") == "depot-1.site.topology"
    assert transport.logical("depot-1.site.topology") == "site.topology"
    assert transport.group_id("executor") == "depot-1.executor"
    assert "ocpp.setpoint.commands.dlq" in transport.all_topics()


@pytest.mark.parametrize("args", [
    ["executor", "--port", "0"],
    ["engine"],
    ["signal", "dr", "--site", "s1", "--curtailment-pct", "10", "--transport", "kafka"],
])
def test_an_unreachable_broker_is_one_line_and_exit_1(args, monkeypatch):
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("PIPELINE_KAFKA__RETRY_S", "0")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: kafka at 127.0.0.1:1:") and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_bad_settings_on_the_command_line_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["executor", "--settings", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and result.output == f"Error: {tmp_path / 'none.yaml'}: settings file not found\n"
    result = CliRunner().invoke(main, ["engine", "--transport", "memory"])
    assert result.exit_code == 2 and "'memory' is not 'kafka'" in result.output
