"""Analysts' history over Postgres wire: a charging session that ends on a simulated charger reaches
``session_history`` and ``charger_daily_energy``, queried with psycopg and psql as on RisingWave."""

from __future__ import annotations

import asyncio
import subprocess

import psycopg

from tests.kits.live import live_pipeline, wait_for


async def test_an_ended_session_is_history_that_psql_and_psycopg_can_query(psql):
    async with live_pipeline() as live:
        cp = live.chargers[2]  # CP3
        session = cp.connectors[1].session
        assert session is not None and session.transaction_id is not None
        await asyncio.sleep(1.5)  # a meter value or two
        assert cp.request_stop(session.transaction_id)
        await cp.wait_done(1)

        async def ended() -> list[tuple]:
            async with await psycopg.AsyncConnection.connect(live.dsn, autocommit=True) as conn:
                cur = await conn.execute(
                    "SELECT charge_point_id, site_id, started_at, ended_at, duration_s, energy_kwh, peak_power_kw,"
                    " cost, stop_reason, binding FROM session_history WHERE ended_at IS NOT NULL"
                )
                return await cur.fetchall()

        [row] = await wait_for(ended, what="the ended session in session_history")
        charger, site, started, stopped, duration_s, energy_kwh, peak_kw, cost, reason, binding = row
        assert (charger, site, reason) == ("CP3", "depot-t", "Remote")
        assert stopped >= started and duration_s >= 0 and energy_kwh >= 0 and peak_kw is not None
        assert cost is not None and cost >= 0  # the ON_PEAK price of the live pipeline covers the session
        assert binding is not None  # the DR event or the breakers limited it
        done = await asyncio.to_thread(
            subprocess.run,
            [psql, "-X", "-h", "127.0.0.1", "-p", str(live.service.pg_port), "-d", "dev", "-U", "root", "-A", "-t"]
            + ["-c", "SELECT charge_point_id, sessions FROM charger_daily_energy"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stdout.split()) == (0, ["CP3|1"]), done.stderr


async def test_param_list_shows_every_parameter_with_its_default_and_bounds():
    from click.testing import CliRunner

    from pipeline.cli.main import main
    from pipeline.contracts.topics import PARAMETERS

    async with live_pipeline() as live:
        result = await asyncio.to_thread(CliRunner().invoke, main, ["param", "list", "--dsn", live.dsn])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(" = ")[0] for line in lines] == sorted(PARAMETERS)
    assert "alert.clock_skew.threshold_s = 60 (default; bounds 1 .. 86400)" in lines
    assert "tariff.multiplier.ON_PEAK = 0.5 (default; bounds 0 .. 1)" in lines
