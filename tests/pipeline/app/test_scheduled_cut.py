"""A known cut lands on time on its own: a DR event announced ahead travels to the charger as a later
chargingSchedulePeriod of its TxProfile, so the charger's draw drops at the event start even though the
executor is down by then (the whole loop: engine, executor and a simulated 1.6 charger on one clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from executor import ExecutorConfig
from pipeline.app.loop import start_loop
from pipeline.app.site import parse_config
from pipeline.contracts.clock import SimClock
from pipeline.contracts.topics import DRSignal
from pipeline.engine.config import EngineConfig
from pipeline.sim import SimulatedChargePoint
from pipeline.sim.ev import EV
from pipeline.transport import MemoryTransport, publish
from tests.kits.ocpp import wait_for

T0 = datetime(2025, 1, 6, 8, tzinfo=UTC)
CONFIG = parse_config({"sites": [{"site_id": "s1", "limit_kw": 40, "chargers": [{"id": "CP1", "max_power_kw": 22}]}]})


async def test_a_dr_cut_announced_ahead_lands_on_time_with_the_executor_down():
    clock = SimClock(T0, speed=30)
    draws: list[tuple[datetime, float]] = []
    loop = await start_loop(
        MemoryTransport(),
        site=CONFIG,
        clock=clock,
        engine=EngineConfig(tick_s=5),
        executor=ExecutorConfig(port=0, metrics=False, boot_wait_s=0.1),
    )
    cp = SimulatedChargePoint(
        "CP1",
        f"ws://127.0.0.1:{loop.port}/ocpp",
        clock,
        rated_power_kw=22,
        meter_interval_s=30,
        on_power=lambda _cp, _c, kw, at: draws.append((at, kw)),
    )
    try:
        await cp.start()
        now = clock.now()
        await cp.plug_in(EV("EV1", "test", 60, 22, 20, 90, now, now + timedelta(hours=4)))
        await wait_for(lambda: cp.held_limit(1) == 31.8, timeout=20, what="the full 22 kW (31.8 A)")

        start = clock.now().replace(microsecond=0) + timedelta(minutes=3)
        await publish(
            loop.transport,
            "utility.dr.signals",
            DRSignal(
                site_id="s1",
                dr_event_id="dr-1",
                limit_kw=10,
                event_start=start,
                event_end=start + timedelta(hours=1),
                signal_at=clock.now(),
            ),
        )
        # the TxProfile now carries the cut as a second period: 31.8 A x 10/22 = 14.4 A from `start`
        installed = loop.executor._dispatchers["CP1"]._sent
        await wait_for(
            lambda: getattr(installed.get(("Tx", 1)), "next_at", None) == start, timeout=20, what="the cut ahead"
        )
        assert installed[("Tx", 1)].next_limit == 14.4
        await loop.executor.stop()  # the executor goes down before the event starts
        down_at = clock.now()
        assert down_at < start and cp.held_limit(1) == 31.8

        await wait_for(lambda: clock.now() > start + timedelta(seconds=30), timeout=20, what="the event start")
        assert cp.held_limit(1) == 14.4
        assert abs(cp.power_kw(1) - 14.4 * 3 * 230 / 1000) < 1e-6
        cut = next(at for at, kw in draws if at > down_at and kw < 10.0)
        assert start - timedelta(seconds=1) <= cut <= start  # on time, on the charger's own
    finally:
        await cp.stop()
        await loop.stop()
