"""``pipeline signal``: records as the contracts want them; DR events print their id and can be cancelled."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pipeline.cli.main import main


def test_signal_dr_prints_its_event_id_and_cancel_needs_no_curtailment():
    result = CliRunner().invoke(main, ["signal", "dr", "--site", "s1", "--curtailment-pct", "20", "--dry-run"])
    assert result.exit_code == 0, result.output
    value = json.loads(result.output)["value"]
    assert value["dr_event_id"].startswith("dr-") and value["curtailment_pct"] == 20
    result = CliRunner().invoke(main, ["signal", "dr", "--site", "s1", "--cancel", "dr-1", "--dry-run"])
    assert result.exit_code == 0, result.output
    value = json.loads(result.output)["value"]
    assert value["dr_event_id"] == "dr-1" and value["curtailment_pct"] == 0
    assert value["event_end"] <= value["signal_at"]  # the window is over: the event is no longer in force
    result = CliRunner().invoke(main, ["signal", "dr", "--site", "s1", "--cancel", "dr-1", "--limit-kw", "5"])
    assert result.exit_code == 2 and "--cancel takes no" in result.output


def test_the_cli_imports_no_engine_executor_or_client_library_before_a_command_needs_it():
    """`pipeline signal` and the other short commands start fast: importing the command group loads none
    of the heavy stacks (the OCPP server, DuckDB, sqlglot, psycopg, aiokafka, matplotlib)."""
    import subprocess
    import sys

    heavy = ("executor.service", "duckdb", "sqlglot", "psycopg", "aiokafka", "ocpp", "matplotlib")
    code = f"import sys, pipeline.cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
