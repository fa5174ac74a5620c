"""A running pipeline for client tests: ``pipeline run``'s service with its Postgres-wire port on a free
port, three simulated chargers with EVs plugged in, a DR event and an ON_PEAK price in force."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from executor import ExecutorConfig
from pipeline.app.loop import Loop, start_loop
from pipeline.app.signals import dr_signal, price_signal
from pipeline.app.site import parse_config
from pipeline.contracts.clock import SystemClock
from pipeline.engine.config import EngineConfig
from pipeline.pgwire.config import PgwireSettings
from pipeline.sim import SimulatedChargePoint
from pipeline.sim.ev import EV
from pipeline.transport.base import publish
from pipeline.transport.memory import MemoryTransport

SITE = "depot-t"
CONFIG = parse_config(
    {
        "sites": [
            {
                "site_id": SITE,
                "limit_kw": 50,
                "nodes": [{"node_id": "panel-t", "limit_kw": 30}],
                "chargers": [
                    {"id": "CP1", "node": "panel-t", "max_power_kw": 22},
                    {"id": "CP2", "node": "panel-t", "max_power_kw": 22},
                    {"id": "CP3", "max_power_kw": 22},
                ],
            }
        ]
    }
)
CHARGERS = ("CP1", "CP2", "CP3")


@dataclass
class Live:
    service: Loop
    chargers: list[SimulatedChargePoint]

    @property
    def dsn(self) -> str:
        return f"postgresql://root@127.0.0.1:{self.service.pg_port}/dev"

    @property
    def executor_url(self) -> str:
        return self.service.executor.http_url


def free_port() -> int:
    """A TCP port nobody listens on (for 'unreachable' cases and for options that take a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ev(i: int) -> EV:
    now = datetime.now(UTC)
    return EV(
        ev_id=f"EV{i}",
        model="test",
        battery_kwh=60,
        max_ac_kw=22,
        arrival_soc_pct=20 + i,
        energy_need_kwh=40,
        arrival_at=now,
        departure_at=now + timedelta(hours=4),
    )


async def wait_for(predicate, timeout_s: float = 15.0, what: str = "condition"):
    """Await ``predicate()`` (sync or async) turning true."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met in {timeout_s}s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def live_pipeline() -> AsyncIterator[Live]:
    service = await start_loop(
        MemoryTransport(),
        site=CONFIG,
        engine=EngineConfig(tick_s=0.2),
        executor=ExecutorConfig(port=0, http_port=0),
        pgwire=PgwireSettings(port=0),
    )
    cps = [
        SimulatedChargePoint(cp, f"ws://127.0.0.1:{service.port}/ocpp", SystemClock(), meter_interval_s=1)
        for cp in CHARGERS
    ]
    try:
        await asyncio.gather(*(cp.start() for cp in cps))
        for topic, record in (
            dr_signal(SITE, curtailment_pct=20, duration_min=60, event_id="dr-test"),
            price_signal(SITE, price_per_kwh=0.31, tier="ON_PEAK"),
        ):
            await publish(service.transport, topic, record)
        for i, cp in enumerate(cps):
            await cp.plug_in(ev(i))
        await wait_for(lambda: all(cp.held_limit(1) is not None for cp in cps), what="every charger holds a setpoint")
        yield Live(service, cps)
    finally:
        await asyncio.gather(*(cp.stop() for cp in cps), return_exceptions=True)
        await service.stop()
