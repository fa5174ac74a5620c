"""Simulated chargers reconnect as real ones do when the central system restarts: a growing, randomised
back-off (OCPP 2.0.1 Part 4 section 5.3), no BootNotification (a reconnect is not a reboot), a
StatusNotification, and the running transaction's meter values resume."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from datetime import timedelta

import pytest
from websockets.asyncio.server import serve

import pipeline.sim.run as run
from pipeline.contracts.clock import SimClock
from pipeline.sim import EV, ReconnectBackoff, SimulatedChargePoint
from tests.kits.csms import T0, TestCentral

FAST = ReconnectBackoff(wait_minimum_s=0.05, random_range_s=0.05, repeat_times=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def central_on(port: int):
    """A fresh test central system on ``port`` (a restart is a new one on the same port: it knows nothing)."""
    central = TestCentral()
    async with serve(central.handler, "127.0.0.1", port, subprotocols=["ocpp1.6"]):
        central.url = f"ws://127.0.0.1:{port}/ocpp"
        yield central


def test_the_backoff_grows_randomised_and_is_capped():
    backoff = ReconnectBackoff(wait_minimum_s=1.0, random_range_s=0.0, repeat_times=3)
    assert [backoff.delay_s(n) for n in range(7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    jittered = ReconnectBackoff(wait_minimum_s=1.0, random_range_s=2.0, repeat_times=3)
    rng = random.Random(1)
    delays = [jittered.delay_s(n, rng) for n in range(6)]
    assert all(f <= d <= f + 2.0 for d, f in zip(delays, [1, 2, 4, 8, 8, 8], strict=False))
    assert len({round(d - int(d), 6) for d in delays}) > 1  # not the same wait every time


async def test_a_charger_reconnects_after_the_central_system_restarts_and_its_transaction_goes_on():
    port = free_port()
    clock = SimClock(T0, speed=600)  # a meter value every 0.1 s real
    async with central_on(port) as first:
        cp = SimulatedChargePoint(
            "CP1",
            first.url,
            clock,
            meter_interval_s=60,
            auto_reconnect=True,
            reconnect_backoff=FAST,
            response_timeout_s=5,
        )
        await cp.start()
        now = clock.now()
        tx = await cp.plug_in(EV("EV1", "test", 60.0, 11.0, 20.0, 40.0, now, now + timedelta(hours=8)))
        await first.message("CP1", "MeterValues", lambda p: p["transaction_id"] == tx)
    # the first central system is gone (its server closed every connection); a new one starts later
    await first.wait_for(lambda: not cp._online.is_set(), timeout=5)
    await asyncio.sleep(0.2)  # a few refused attempts while nothing listens
    async with central_on(port) as second:
        try:
            await second.message("CP1", "StatusNotification", lambda p: p["status"] == "Charging", timeout=10)
            await second.message("CP1", "MeterValues", lambda p: p["transaction_id"] == tx, timeout=10)
            side = second.chargers["CP1"]
            assert side.of("BootNotification") == [] and side.of("StartTransaction") == []
            assert cp.reconnects == 1 and cp.session_active()
        finally:
            await cp.stop()
        stop = await second.message("CP1", "StopTransaction")
        assert stop["transaction_id"] == tx


async def test_the_fleet_of_pipeline_simulate_waits_for_a_central_system_that_is_not_up_yet(monkeypatch):
    monkeypatch.setattr(run, "FLEET_BACKOFF", FAST)
    port = free_port()
    fleet = asyncio.create_task(run.simulate(f"ws://127.0.0.1:{port}/ocpp", 2, speed=600, duration_s=600))
    await asyncio.sleep(0.3)  # the chargers' first attempts are refused
    async with central_on(port) as central:
        await central.wait_for(
            lambda: len(central.chargers) == 2 and all(s.of("StartTransaction") for s in central.chargers.values()),
            timeout=10,
        )
        summary = await asyncio.wait_for(fleet, 10)
    assert summary["chargers_failed"] == [] and summary["sessions"] >= 2


async def test_without_auto_reconnect_a_refused_start_still_raises():
    cp = SimulatedChargePoint("CP1", f"ws://127.0.0.1:{free_port()}/ocpp", SimClock(T0, speed=600))
    with pytest.raises(OSError):
        await cp.start()
