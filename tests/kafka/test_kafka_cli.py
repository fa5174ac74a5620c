"""The production commands over Kafka as an operator runs them: ``pipeline engine`` and ``pipeline executor``
as separate processes, ``pipeline signal --transport kafka`` publishing straight to the broker, and
``pipeline run --transport kafka``; Ctrl-C (SIGTERM) stops each cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.contracts.clock import SystemClock
from pipeline.sim import SimulatedChargePoint
from pipeline.sim.ev import EV
from tests.kits.kafka_broker import free_port

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
SITE = """sites:
  - site_id: s1
    limit_kw: 30
    chargers:
      - {id: CP1, max_power_kw: 22}
      - {id: CP2, max_power_kw: 22}
"""


def command_env(settings) -> dict[str, str]:
    env = dict(
        os.environ,
        PIPELINE_KAFKA__BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        PIPELINE_KAFKA__TOPIC_PREFIX=settings.topic_prefix,
        PIPELINE_KAFKA__SESSION_TIMEOUT_S="6",
    )
    env.pop("PIPELINE_SETTINGS_FILE", None)
    return env


def spawn(settings, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        env=command_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def pipeline(settings, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        env=command_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"exited {process.returncode}: {process.stdout.read()[-2000:]}") from None
            assert asyncio.get_running_loop().time() < deadline, f"port {port} never opened"
            await asyncio.sleep(0.2)


def interrupt(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    return process.returncode, out


async def wait_for(predicate, timeout_s: float = 45.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def ev(i: int) -> EV:
    now = datetime.now(UTC)
    return EV(
        ev_id=f"EV{i}",
        model="test",
        battery_kwh=60,
        max_ac_kw=22,
        arrival_soc_pct=20,
        energy_need_kwh=40,
        arrival_at=now,
        departure_at=now + timedelta(hours=4),
    )


def held_kw(cp: SimulatedChargePoint) -> float:
    return (cp.held_limit(1) or 0.0) * 3 * 230 / 1000


async def test_engine_and_executor_processes_serve_chargers_and_take_signals_from_kafka(kafka_settings, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    port = free_port()
    engine = spawn(kafka_settings, "engine", "--config", str(site), "--tick", "0.5")
    executor = spawn(kafka_settings, "executor", "--port", str(port))
    chargers: list[SimulatedChargePoint] = []
    try:
        await wait_for_port(port, executor)
        chargers = [
            SimulatedChargePoint(f"CP{i}", f"ws://127.0.0.1:{port}/ocpp", SystemClock(), meter_interval_s=1)
            for i in (1, 2)
        ]
        for i, cp in enumerate(chargers):
            await cp.start()
            await cp.plug_in(ev(i))
        await wait_for(lambda: 29 < sum(held_kw(cp) for cp in chargers) <= 30 + 1e-6, what="the 30 kW breaker shared")

        done = await pipeline(
            kafka_settings, "signal", "dr", "--site", "s1", "--limit-kw", "12", "--transport", "kafka"
        )
        assert done.returncode == 0, done.stderr
        assert re.fullmatch(
            rf"published dr-[0-9a-f]{{8}} to utility\.dr\.signals on kafka \({re.escape(kafka_settings.bootstrap_servers)}\)",
            done.stdout.strip(),
        ), done.stdout
        refused = await pipeline(
            kafka_settings, "signal", "dr", "--site", "nowhere", "--limit-kw", "12", "--transport", "kafka"
        )
        assert refused.returncode == 1 and "unknown site 'nowhere' (known: s1)" in refused.stderr, refused.stderr
        await wait_for(lambda: 11 < sum(held_kw(cp) for cp in chargers) <= 12 + 1e-6, what="the DR limit")
    finally:
        await asyncio.gather(*(cp.stop() for cp in chargers), return_exceptions=True)
        executor_status, executor_out = interrupt(executor)
        engine_status, engine_out = interrupt(engine)
    assert executor_status == 0, executor_out[-2000:]
    assert engine_status == 0, engine_out[-2000:]
    assert "Traceback" not in executor_out + engine_out


async def test_run_over_kafka_serves_a_charger(kafka_settings, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    port = free_port()
    run = spawn(
        kafka_settings,
        "run",
        "--config",
        str(site),
        "--port",
        str(port),
        "--gateway-port",
        str(free_port()),
        "--pg-port",
        "0",  # a free one: 4566 may be taken on this machine (a replay, a RisingWave)
        "--transport",
        "kafka",
        "--tick",
        "0.5",
    )
    cp = None
    try:
        await wait_for_port(port, run)
        cp = SimulatedChargePoint("CP1", f"ws://127.0.0.1:{port}/ocpp", SystemClock(), meter_interval_s=1)
        await cp.start()
        await cp.plug_in(ev(1))
        await wait_for(lambda: cp.held_limit(1) == pytest.approx(31.8), what="a 22 kW limit")
        done = await pipeline(
            kafka_settings,
            "signal",
            "demand",
            "--site",
            "s1",
            "--demand-kw",
            "18",
            "--ev-kw",
            "0",
            "--transport",
            "kafka",
        )
        assert done.returncode == 0, done.stderr
        await wait_for(lambda: held_kw(cp) <= 12 + 1e-6, what="the building load to take 18 kW")
    finally:
        if cp is not None:
            await cp.stop()
        status, out = interrupt(run)
    assert status == 0, out[-2000:]
