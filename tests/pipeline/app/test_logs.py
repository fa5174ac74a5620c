"""Structured logs: JSON lines with timestamp, level, logger, message and extra fields; text for people; and
the level and format chosen by command flag > group flag > env > settings file > default."""

from __future__ import annotations

import io
import json
import logging
import os
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from pipeline.app.logs import JsonLineFormatter, configure_logging
from pipeline.cli.main import main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def root_logger():
    """The root logger's handlers and level, restored after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name in ("ocpp", "websockets"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_json_lines_carry_timestamp_level_logger_message_and_extras(root_logger):
    out = io.StringIO()
    configure_logging("debug", "json", stream=out, force=True)
    log = logging.getLogger("executor.dispatch")
    log.debug(
        "%s: connector %s held back",
        "CP1",
        1,
        extra={"charge_point_id": "CP1", "reason": "held_back", "needed_kw": 23.5, "at": datetime(2024, 6, 3)},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("pipeline.x").exception("failed")
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert list(first)[:4] == ["timestamp", "level", "logger", "message"]
    assert first | {"timestamp": None} == {
        "timestamp": None,
        "level": "DEBUG",
        "logger": "executor.dispatch",
        "message": "CP1: connector 1 held back",
        "charge_point_id": "CP1",
        "reason": "held_back",
        "needed_kw": 23.5,
        "at": "2024-06-03T00:00:00",
    }
    stamp = datetime.fromisoformat(first["timestamp"])
    assert first["timestamp"].endswith("Z") and stamp.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc_info"]


def test_debug_is_off_above_debug_and_libraries_stay_quiet(root_logger):
    out = io.StringIO()
    configure_logging("info", "json", stream=out, force=True)
    logging.getLogger("executor.dispatch").debug("hidden")
    logging.getLogger("ocpp.frames").info("a frame")
    logging.getLogger("pipeline.runner").info("shown")
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == ["shown"]
    configure_logging("debug", "text", stream=out, force=True)  # replaces the handler it installed
    assert sum(getattr(h, "_pipeline_handler", False) for h in root_logger.handlers) == 1
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        configure_logging("info", "xml")


def test_the_formatter_alone_formats_any_record():
    record = logging.LogRecord(
        "executor.ocpp.ocppj", logging.INFO, __file__, 1, "%s: received %s", ("CP1", "Heartbeat"), None
    )
    record.charge_point_id = "CP1"
    line = json.loads(JsonLineFormatter().format(record))
    assert (line["message"], line["charge_point_id"], line["logger"]) == (
        "CP1: received Heartbeat",
        "CP1",
        "executor.ocpp.ocppj",
    )


@pytest.fixture
def chosen(monkeypatch):
    """What ``configure_logging`` was called with by a command (which then fails at the unreachable broker)."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr("pipeline.app.logs.configure_logging", lambda level, fmt, **_: calls.append((level, fmt)))
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("PIPELINE_KAFKA__RETRY_S", "0")
    return calls


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["engine"], {}, ("info", "text")),
        (["--log-format", "json", "engine"], {}, ("info", "json")),
        (["engine"], {"PIPELINE_LOG__FORMAT": "JSON", "PIPELINE_LOG__LEVEL": "warning"}, ("warning", "json")),
        (["--log-level", "error", "engine"], {"PIPELINE_LOG__LEVEL": "warning"}, ("error", "text")),
        (["--log-level", "error", "engine", "--log-level", "DEBUG"], {}, ("debug", "text")),
    ],
)
def test_log_options_and_settings_choose_level_and_format(chosen, monkeypatch, args, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and result.output.startswith("Error: kafka at 127.0.0.1:1:"), result.output
    assert chosen == [expected]


def test_log_settings_from_the_file_and_bad_values(chosen, tmp_path, monkeypatch):
    path = tmp_path / "pipeline.yaml"
    path.write_text("log:\n  format: json\n  level: debug\n")
    CliRunner().invoke(main, ["executor", "--port", "0", "--settings", str(path)])
    assert chosen == [("debug", "json")]
    monkeypatch.setenv("PIPELINE_LOG__FORMAT", "xml")
    result = CliRunner().invoke(main, ["engine"])
    assert result.exit_code == 1 and result.output.startswith("Error: PIPELINE_LOG__FORMAT: Input should be 'text'")
    assert result.output.count("\n") == 1
    result = CliRunner().invoke(main, ["--log-format", "xml", "engine"])
    assert result.exit_code == 2 and "'xml' is not one of 'text', 'json'" in result.output


def test_text_logs_go_to_stderr_one_record_per_line_when_not_a_terminal(capsys):
    from pipeline.app.logs import make_handler

    handler = make_handler("text")
    logger = logging.getLogger("tests.text-logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("a long message " + "x" * 300)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.rstrip().endswith("x" * 300) and "WARNING tests.text-logs:" in err
