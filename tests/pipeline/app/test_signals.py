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


def _modules_after(code: str, modules: tuple[str, ...]) -> list[str]:
    import subprocess
    import sys

    probe = f"{code}\nimport sys\nprint([m for m in {modules!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return eval(done.stdout.strip().splitlines()[-1])  # a list literal printed by the probe


def test_the_command_group_loads_a_command_module_only_when_that_command_runs():
    """The group lists its commands without importing them (click's lazy subcommands), so `pipeline
    signal` pays neither for the deployment settings (pydantic-settings) nor for the other commands."""
    commands = ("pipeline.cli.migrate", "pipeline.cli.replay", "pipeline.cli.serve", "pipeline.cli.signal")
    assert _modules_after("import pipeline.cli.main", (*commands, "pydantic_settings")) == []
    signal = (
        "from pipeline.cli.main import main\n"
        "try:\n"
        "    main(['signal', 'dr', '--site', 's1', '--curtailment-pct', '20', '--dry-run'])\n"
        "except SystemExit:\n"
        "    pass"
    )
    assert _modules_after(signal, ("pipeline.cli.migrate", "pipeline.cli.serve", "pydantic_settings")) == []


async def test_a_gateway_that_never_answers_is_one_error_after_the_timeout_not_a_wait_forever():
    import asyncio

    import pytest
    from websockets.asyncio.server import serve

    from pipeline.app.gateway import GatewayError, send_record

    async def silent(ws) -> None:
        async for _ in ws:  # takes the record, never answers
            pass

    async with serve(silent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(GatewayError, match=r"no answer from the gateway at .* in 0.2 s"):
            await asyncio.wait_for(
                send_record(f"ws://127.0.0.1:{port}", "utility.dr.signals", b"{}", timeout_s=0.2), 30
            )
