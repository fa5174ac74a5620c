"""The whole loop over Kafka: simulated chargers -> executor -> Kafka -> embedded engine -> Kafka -> executor
-> SetChargingProfile, with the engine and the executor on separate Kafka clients (as separate processes
would be), a malformed record dead-lettered mid-run, and a broker restart survived."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from executor import ExecutorConfig
from pipeline.app.loop import start_loop
from pipeline.app.signals import demand_signal, dr_signal
from pipeline.contracts.clock import SystemClock
from pipeline.engine.config import EngineConfig
from pipeline.sim import SimulatedChargePoint
from pipeline.transport import publish
from pipeline.transport.kafka import KafkaTransport
from tests.kits.kafka_broker import settings_for
from tests.kits.loop import CONFIG, LIMIT_KW, ev

pytestmark = pytest.mark.kafka


def held_kw(cp: SimulatedChargePoint) -> float:
    limit = cp.held_limit(1)
    return 0.0 if limit is None else limit * 3 * 230 / 1000


async def wait_for(predicate, timeout_s: float = 30.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def latest(settings, topic: str) -> dict[str, dict]:
    """The compacted view of an upsert topic as a fresh reader sees it: latest value per key."""
    transport = KafkaTransport(settings)
    try:
        consumer = await transport.consumer([topic], f"inspect-{uuid.uuid4().hex[:8]}")
        out: dict[str, dict] = {}
        for r in await consumer.read_to_end():
            if r.value is None:
                out.pop(r.key, None)
            else:
                out[r.key] = json.loads(r.value)
        await consumer.close()
        return out
    finally:
        await transport.close()


class Loop:
    """Engine and executor on their own Kafka clients, chargers connected to the executor."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.chargers: list[SimulatedChargePoint] = []

    async def __aenter__(self) -> Loop:
        self.engine = await start_loop(KafkaTransport(self.settings), site=CONFIG, engine=EngineConfig(tick_s=0.2))
        self.executor = await start_loop(KafkaTransport(self.settings), executor=ExecutorConfig(port=0, metrics=False))
        self.signals = KafkaTransport(self.settings)
        self.chargers = [
            SimulatedChargePoint(
                f"CP{i}", f"ws://127.0.0.1:{self.executor.port}/ocpp", SystemClock(), meter_interval_s=1
            )
            for i in range(1, 5)
        ]
        await asyncio.gather(*(cp.start() for cp in self.chargers))
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.gather(*(cp.stop() for cp in self.chargers), return_exceptions=True)
        await self.executor.stop()
        await self.engine.stop()
        await self.signals.close()

    def total_held(self) -> float:
        return sum(held_kw(cp) for cp in self.chargers)

    async def converged(self, headroom_kw: float, what: str, charging: int = 4, timeout_s: float = 30) -> None:
        """The first ``charging`` chargers hold a limit, and together they use the headroom without
        exceeding it."""
        await wait_for(
            lambda: (
                all(cp.held_limit(1) is not None for cp in self.chargers[:charging])
                and headroom_kw - 1 < self.total_held() <= headroom_kw + 1e-6
            ),
            timeout_s,
            what,
        )


async def test_end_to_end_over_kafka_with_a_dead_letter_mid_run(kafka_settings):
    async with Loop(kafka_settings) as loop:
        for i, cp in enumerate(loop.chargers):
            await cp.plug_in(ev(i))
        await loop.converged(LIMIT_KW, "the chargers to share the breaker")
        assert sum(cp.power_kw(1) for cp in loop.chargers) <= LIMIT_KW + 1e-6

        # A malformed record on an input topic is dead-lettered; the loop goes on.
        await loop.signals.send("bems.site.demand", "s1", b'{"site_id": "s1", "current_demand_kw": -5}')
        ev_kw = sum(cp.power_kw(1) for cp in loop.chargers)
        _, demand = demand_signal("s1", current_demand_kw=10.0 + ev_kw, ev_load_kw=ev_kw)
        await publish(loop.signals, "bems.site.demand", demand)
        await loop.converged(LIMIT_KW - 10, "the building load to take 10 kW")
        _, dr = dr_signal("s1", curtailment_pct=50, duration_min=30)
        await publish(loop.signals, "utility.dr.signals", dr)
        await wait_for(lambda: loop.total_held() <= LIMIT_KW / 2 - 10 + 1e-6, what="the DR event")

        # Every charger holds exactly the latest setpoint on the compacted topic.
        setpoints = await latest(kafka_settings, "ocpp.setpoint.commands")
        assert {v["charge_point_id"]: v["setpoint_a"] for v in setpoints.values()} == {
            cp.charge_point_id: cp.held_limit(1) for cp in loop.chargers
        }

        # A session that ends is tombstoned on both upsert topics; the others keep their setpoints.
        ended = loop.chargers[0]
        await ended.stop()
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            sessions = await latest(kafka_settings, "ocpp.active.sessions")
            setpoints = await latest(kafka_settings, "ocpp.setpoint.commands")
            if len(sessions) == len(setpoints) == 3 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.25)
        assert {v["charge_point_id"] for v in sessions.values()} == {"CP2", "CP3", "CP4"}
        assert {v["charge_point_id"] for v in setpoints.values()} == {"CP2", "CP3", "CP4"}
    dead = KafkaTransport(kafka_settings)
    consumer = await dead.consumer(["bems.site.demand.dlq"], "inspect")
    (record,) = await consumer.read_to_end()
    await consumer.close()
    await dead.close()
    assert record.key == "s1" and dict(record.headers)["error"].startswith(b"current_demand_kw")


async def test_the_loop_survives_a_broker_restart(restartable_broker):
    settings = settings_for(restartable_broker)
    async with Loop(settings) as loop:
        for i, cp in enumerate(loop.chargers[:3]):
            await cp.plug_in(ev(i))
        await loop.converged(LIMIT_KW, "the loop before the restart", charging=3)

        await restartable_broker.astop()
        _, dr = dr_signal("s1", curtailment_pct=50, duration_min=30)
        sending = asyncio.create_task(publish(loop.signals, "utility.dr.signals", dr))  # retried meanwhile
        await asyncio.sleep(1.0)
        assert not sending.done()
        await restartable_broker.astart()
        await asyncio.wait_for(sending, 60)

        # The engine's and the executor's consumers resume; the loop converges to the DR limit.
        await loop.converged(LIMIT_KW / 2, "the DR event after the restart", charging=3, timeout_s=60)
        await loop.chargers[3].plug_in(ev(3))  # a new session after the restart is served too
        await loop.converged(LIMIT_KW / 2, "a new session after the restart")
