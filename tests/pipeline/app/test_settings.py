"""Deployment settings: env vars over the settings file over defaults for every section, secrets kept secret
(also in `pipeline config show`), SASL/TLS checked, bad values one line,
and the Kafka CLI options failing with one line (no broker needed)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.app.settings import KafkaSettings, Settings, load_settings
from pipeline.app.site import ConfigError
from pipeline.cli.main import main
from pipeline.transport.kafka import KafkaTransport, topic_configs

SITE = str(Path(__file__).resolve().parents[3] / "examples" / "site.yaml")


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
        "env:9092",
        "cli.",
        3,
    )
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


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism, sasl_username and sasl_password"),
        ({"sasl_mechanism": "PLAIN"}, "needs security_protocol SASL_PLAINTEXT or SASL_SSL"),
        ({"ssl_certfile": "/c.pem"}, "set both ssl_certfile and ssl_keyfile"),
        ({"topic_prefix": "bad prefix"}, "kafka.topic_prefix"),
        ({"partitions": 0}, "kafka.partitions"),
    ],
)
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
    assert topic_configs("ocpp.setpoint.commands", settings) == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "2",
    }
    assert topic_configs("bems.site.demand", settings)["cleanup.policy"] == "delete"
    assert topic_configs("ocpp.setpoint.commands.dlq", settings)["cleanup.policy"] == "delete"
    transport = KafkaTransport(settings)
    assert transport.physical("site.topology") == "depot-1.site.topology"
    assert transport.logical("depot-1.site.topology") == "site.topology"
    assert transport.group_id("executor") == "depot-1.executor"
    assert "ocpp.setpoint.commands.dlq" in transport.all_topics()


@pytest.mark.parametrize(
    "args",
    [
        ["executor", "--port", "0"],
        ["engine"],
        ["signal", "dr", "--site", "s1", "--curtailment-pct", "10", "--transport", "kafka"],
    ],
)
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


def test_each_section_is_its_components_own_config_with_its_defaults():
    from executor import ExecutorConfig
    from pipeline.engine.config import EngineConfig
    from pipeline.pgwire.config import PgwireSettings
    from pipeline.transport.config import KafkaSettings

    settings = load_settings()
    # one home for each component's defaults: the settings hold those models themselves
    assert settings.executor == ExecutorConfig() and settings.engine == EngineConfig()
    assert settings.kafka == KafkaSettings() and settings.pgwire == PgwireSettings()
    # the deployed service serves status and metrics on 127.0.0.1:9002
    assert (settings.executor.http_host, settings.executor.http_port, settings.executor.metrics) == (
        "127.0.0.1",
        9002,
        True,
    )
    assert (settings.executor.host, settings.executor.port, settings.executor.group) == ("127.0.0.1", 9000, "executor")
    assert (settings.gateway.host, settings.gateway.port) == ("127.0.0.1", 9001)
    assert (settings.pgwire.host, settings.pgwire.port, settings.pgwire.enabled) == ("127.0.0.1", 4566, True)
    assert (settings.log.level, settings.log.format) == (None, "text")


def test_every_section_reads_env_and_file_and_command_flags_win(tmp_path, monkeypatch):
    from pipeline.cli.transport import TransportChoice

    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "executor:\n  port: 9100\n  deadband_a: 0.5\n  setpoint_ttl_s: null\n"
        "engine:\n  tick_s: 2\ngateway:\n  port: 9101\n"
    )
    monkeypatch.setenv("PIPELINE_EXECUTOR__DEADBAND_A", "0.25")
    monkeypatch.setenv("PIPELINE_ENGINE__BATCH_MAX", "100")
    monkeypatch.setenv("PIPELINE_PGWIRE__PASSWORD", "s3cret")
    settings = TransportChoice("memory", str(path)).settings(executor={"port": 9200, "host": None})
    assert (settings.executor.port, settings.executor.host, settings.executor.deadband_a) == (9200, "127.0.0.1", 0.25)
    assert settings.executor.setpoint_ttl_s is None
    assert (settings.engine.tick_s, settings.engine.batch_max, settings.gateway.port) == (2.0, 100, 9101)
    assert settings.pgwire.password.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)
    monkeypatch.setenv("PIPELINE_EXECUTOR__SETPOINT_TTL_S", "null")
    assert load_settings().executor.setpoint_ttl_s is None


def test_run_takes_its_options_from_the_settings(tmp_path, monkeypatch):
    calls = []

    async def fake_start_loop(transport, **kwargs):
        calls.append(kwargs)
        raise KeyboardInterrupt  # as if Ctrl-C ended it at once

    monkeypatch.setattr("pipeline.app.loop.start_loop", fake_start_loop)
    monkeypatch.setenv("PIPELINE_EXECUTOR__PORT", "9100")
    monkeypatch.setenv("PIPELINE_EXECUTOR__INCREASE_DEBOUNCE_S", "3")
    monkeypatch.setenv("PIPELINE_ENGINE__TICK_S", "2")
    monkeypatch.setenv("PIPELINE_GATEWAY__HOST", "0.0.0.0")
    result = CliRunner().invoke(main, ["run", "--config", SITE, "--gateway-port", "9300"])
    assert result.exit_code == 130, result.output
    [kwargs] = calls
    assert (
        kwargs["executor"].host,
        kwargs["executor"].port,
        kwargs["gateway"].host,
        kwargs["gateway"].port,
        kwargs["engine"].tick_s,
    ) == ("127.0.0.1", 9100, "0.0.0.0", 9300, 2.0)
    assert kwargs["executor"].increase_debounce_s == 3.0
    assert kwargs["engine"].tick_s == 2.0 and kwargs["engine"].sql_dir is None
    result = CliRunner().invoke(main, ["run", "--config", SITE, "--port", "70000"])
    assert result.exit_code == 1 and result.output == (
        "Error: settings executor.port: Input should be less than or equal to 65535\n"
    )


def test_config_show_masks_secrets_and_says_where_values_come_from(tmp_path, monkeypatch):
    import json

    import yaml

    path = tmp_path / "pipeline.yaml"
    path.write_text("kafka:\n  topic_prefix: file.\nexecutor:\n  deadband_a: 0.5\n")
    env = {
        "PIPELINE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PIPELINE_KAFKA__SASL_MECHANISM": "PLAIN",
        "PIPELINE_KAFKA__SASL_USERNAME": "pipeline",
        "PIPELINE_KAFKA__SASL_PASSWORD": "hunter2",
        "PIPELINE_PGWIRE__PASSWORD": "s3cret",
        "PIPELINE_EXECUTOR__DEADBAND_A": "0.25",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["config", "show", "--settings", str(path)])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "s3cret" not in result.output
    shown = yaml.safe_load(result.output)
    assert (shown["kafka"]["sasl_password"], shown["pgwire"]["password"]) == ("***", "***")
    assert (shown["executor"]["deadband_a"], shown["kafka"]["topic_prefix"], shown["executor"]["port"]) == (
        0.25,
        "file.",
        9000,
    )
    lines = result.output.splitlines()
    assert "  deadband_a: 0.25  # env" in lines and "  topic_prefix: file.  # file" in lines
    assert "  port: 9000  # default" in lines
    monkeypatch.setenv("PIPELINE_SETTINGS_FILE", str(path))
    result = CliRunner().invoke(main, ["config", "show", "--json"])
    data = json.loads(result.output)
    assert data["kafka"]["sasl_password"] == "***" and data["kafka"]["topic_prefix"] == "file."
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PIPELINE_EXECUTOR__PORT": "ninety"}, "PIPELINE_EXECUTOR__PORT: Input should be a valid integer"),
        (
            {"PIPELINE_EXECUTOR__FAILSAFE_FRACTION": "2"},
            "PIPELINE_EXECUTOR__FAILSAFE_FRACTION: Input should be less than",
        ),
        ({"PIPELINE_EXECUTOR__RETRY_MAX_S": "0.5"}, "settings executor: retry_max_s must be at least retry_initial_s"),
        ({"PIPELINE_ENGINE": "fast"}, "PIPELINE_ENGINE: a section must be a JSON object"),
        ({"PIPELINE_GATEWAY__PROT": "1"}, "PIPELINE_GATEWAY__PROT: Extra inputs are not permitted"),
    ],
)
def test_a_bad_env_value_is_one_line_and_exit_1(env, message, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for args in (["config", "show"], ["run", "--config", SITE], ["executor"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: {message}") and result.output.count("\n") == 1, result.output


def test_a_bad_settings_file_value_names_the_file(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("executor:\n  charging_rate_unit: kW\n")
    result = CliRunner().invoke(main, ["config", "show", "--settings", str(path)])
    assert result.exit_code == 1
    assert result.output == f"Error: {path}: settings executor.charging_rate_unit: Input should be 'A' or 'W'\n"


def _sasl_env(monkeypatch) -> None:
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_USERNAME", "pipeline")


def test_a_secret_comes_from_the_file_its_FILE_variable_names(tmp_path, monkeypatch):
    """Docker and compose hand secrets over as files (/run/secrets/...), so every secret setting also reads
    PIPELINE_<SECTION>__<NAME>_FILE; the value never shows, and config show says it came from env."""
    from pipeline.cli.migrate import connector_settings

    kafka_secret, pg_secret = tmp_path / "kafka_password", tmp_path / "pg_password"
    kafka_secret.write_text("hunter2\n")  # the trailing newline of `echo ... > file` is not part of it
    pg_secret.write_text("s3cret")
    _sasl_env(monkeypatch)
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_PASSWORD_FILE", str(kafka_secret))
    monkeypatch.setenv("PIPELINE_PGWIRE__PASSWORD_FILE", str(pg_secret))
    settings = load_settings()
    assert settings.kafka.client_options()["sasl_plain_password"] == "hunter2"
    assert settings.pgwire.password.get_secret_value() == "s3cret"
    assert connector_settings().properties["properties.sasl.password"] == "hunter2"
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "s3cret" not in result.output
    assert "  sasl_password: '***'  # env" in result.output.splitlines()


@pytest.mark.parametrize(
    "setup, message",
    [
        (
            lambda tmp: {"PIPELINE_KAFKA__SASL_PASSWORD_FILE": str(tmp / "missing")},
            "PIPELINE_KAFKA__SASL_PASSWORD_FILE: cannot read {tmp}/missing",
        ),
        (
            lambda tmp: {"PIPELINE_KAFKA__SASL_PASSWORD_FILE": str(tmp)},
            "PIPELINE_KAFKA__SASL_PASSWORD_FILE: cannot read {tmp}",
        ),
        (
            lambda tmp: (tmp / "empty").write_text("\n") and {"PIPELINE_KAFKA__SASL_PASSWORD_FILE": str(tmp / "empty")},
            "PIPELINE_KAFKA__SASL_PASSWORD_FILE: {tmp}/empty is empty",
        ),
        (
            lambda tmp: (
                (tmp / "pw").write_text("hunter2")
                and {"PIPELINE_KAFKA__SASL_PASSWORD_FILE": str(tmp / "pw"), "PIPELINE_KAFKA__SASL_PASSWORD": "hunter2"}
            ),
            "set PIPELINE_KAFKA__SASL_PASSWORD or PIPELINE_KAFKA__SASL_PASSWORD_FILE, not both",
        ),
        (
            lambda tmp: {"PIPELINE_KAFKA__CLIENT_ID_FILE": str(tmp)},
            "PIPELINE_KAFKA__CLIENT_ID_FILE: Extra inputs are not permitted",
        ),
    ],
)
def test_a_secret_file_that_cannot_be_used_is_one_line_and_exit_1(setup, message, tmp_path, monkeypatch):
    _sasl_env(monkeypatch)
    for name, value in setup(tmp_path).items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {message.format(tmp=tmp_path)}"), result.output
    assert result.output.count("\n") == 1 and "hunter2" not in result.output


@pytest.mark.parametrize("section", ["kafka", "engine", "executor", "gateway", "pgwire"])
def test_every_command_line_override_names_a_field_of_its_section(section):
    import typing

    from pipeline.app import settings as module

    overrides = getattr(module, f"{section.capitalize()}Overrides")
    model = Settings.model_fields[section].annotation
    hints = typing.get_type_hints(overrides)
    assert hints and set(hints) <= set(model.model_fields), set(hints) - set(model.model_fields)
    for name, hint in hints.items():  # the flag's type, or None when the flag is not given
        field = model.model_fields[name].annotation
        assert set(typing.get_args(hint)) - {type(None)} <= set(typing.get_args(field) or (field,)), name


def test_flags_not_given_leave_the_settings_alone(monkeypatch):
    monkeypatch.setenv("PIPELINE_EXECUTOR__PORT", "9300")
    settings = load_settings(executor={"host": None, "port": None}, pgwire={"enabled": None, "port": 0})
    assert (settings.executor.port, settings.executor.host) == (9300, "127.0.0.1")
    assert (settings.pgwire.enabled, settings.pgwire.port) == (True, 0)
