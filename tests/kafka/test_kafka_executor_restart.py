"""Restart semantics over Kafka : a restarted executor reads the compacted setpoint topic to
its end before it serves anyone, then reconciles each charger to its latest setpoint; stale and duplicate
records are ignored, and a tombstone clears the session's desired profile for good."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from executor import ExecutorConfig
from pipeline.app.loop import start_loop
from pipeline.contracts.topics import SetpointCommand, TopologyNode
from pipeline.transport import publish, publish_tombstone
from pipeline.transport.kafka import KafkaTransport
from tests.kits.recording_charger import RecordingCharger

pytestmark = pytest.mark.kafka

T0 = datetime.now(UTC).replace(microsecond=0)
NODES = [
    TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=100),
    TopologyNode(node_id="CP1", site_id="s1", parent_id="s1", kind="charger", limit_kw=22),
]


def setpoint(tx: int, amps: float, seconds: float) -> SetpointCommand:
    return SetpointCommand(
        session_id=f"CP1-{tx}",
        charge_point_id="CP1",
        connector_id=1,
        transaction_id=str(tx),
        site_id="s1",
        node_id="s1",
        setpoint_kw=round(amps * 3 * 230 / 1000, 4),
        setpoint_a=amps,
        phases=3,
        voltage_v=230,
        node_limit_kw=100.0,
        site_limit_kw=100.0,
        binding="headroom",
        computed_at=T0 + timedelta(seconds=seconds),
    )


async def wait_for(predicate, timeout_s: float = 15.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def probe(kafka_settings):
    """A separate client on the same topics (as the engine would be)."""
    transport = KafkaTransport(kafka_settings)
    for node in NODES:
        await publish(transport, "site.topology", node)
    yield transport
    await transport.close()


async def open_session(port: int, probe: KafkaTransport) -> tuple[RecordingCharger, int]:
    charger = RecordingCharger("CP1")
    await charger.connect(port)
    tx = await charger.start_transaction()
    consumer = await probe.consumer(["ocpp.active.sessions"], "probe-sessions")
    try:
        deadline = asyncio.get_running_loop().time() + 15
        keys: set[str] = set()
        while f"CP1-{tx}" not in keys:
            assert asyncio.get_running_loop().time() < deadline, "the executor did not publish the session"
            keys |= {r.key for r in await consumer.getmany(timeout_s=0.5)}
    finally:
        await consumer.close()
    return charger, tx


async def test_restarted_executor_rebuilds_to_the_end_and_never_regresses(kafka_settings, probe):
    first = await start_loop(KafkaTransport(kafka_settings), executor=ExecutorConfig(port=0, metrics=False))
    charger, tx = await open_session(first.port, probe)
    await publish(probe, "ocpp.setpoint.commands", setpoint(tx, 10, 1))
    await wait_for(lambda: charger.limits == [10], what="the first setpoint")
    await charger.disconnect()
    await first.stop()

    # While the executor is down the engine moves on; a replayed stale record and a duplicate follow.
    await publish(probe, "ocpp.setpoint.commands", setpoint(tx, 16, 3))
    await publish(probe, "ocpp.setpoint.commands", setpoint(tx, 8, 2))  # stale: older computed_at
    await publish(probe, "ocpp.setpoint.commands", setpoint(tx, 16, 3))  # duplicate

    second = await start_loop(KafkaTransport(kafka_settings), executor=ExecutorConfig(port=0, metrics=False))
    try:
        # start() returns only after the compacted topic was read to its end: the latest value is known
        # before any charger is served, not the first, not the stale one.
        assert second.executor.desired_setpoints() == {("CP1", 1): 16}
        await charger.connect(second.port)
        await wait_for(lambda: charger.limits == [10, 16], what="the latest setpoint after the restart")
        await asyncio.sleep(1.0)  # the live consumer replays 16, 8, 16 from the group's offsets: ignored
        assert charger.limits == [10, 16]

        await publish(probe, "ocpp.setpoint.commands", setpoint(tx, 6, 2.5))  # stale, live
        await publish(probe, "ocpp.setpoint.commands", setpoint(tx, 12, 4))
        await wait_for(lambda: charger.limits == [10, 16, 12], what="a newer setpoint")
        await asyncio.sleep(0.5)
        assert charger.limits == [10, 16, 12]
        assert second.executor.stats.stale_ignored >= 2
    finally:
        await charger.disconnect()
        await second.stop()


async def test_a_tombstone_clears_the_sessions_profile_across_restarts(kafka_settings, probe):
    first = await start_loop(KafkaTransport(kafka_settings), executor=ExecutorConfig(port=0, metrics=False))
    charger, tx = await open_session(first.port, probe)
    await publish(probe, "ocpp.setpoint.commands", setpoint(tx, 10, 1))
    await wait_for(lambda: charger.limits == [10])
    await publish_tombstone(probe, "ocpp.setpoint.commands", f"CP1-{tx}")
    await wait_for(lambda: first.executor.desired_setpoints() == {}, what="the tombstone to clear the setpoint")
    await wait_for(lambda: charger.cleared, what="ClearChargingProfile at the charger")
    await charger.disconnect()
    await first.stop()

    second = await start_loop(KafkaTransport(kafka_settings), executor=ExecutorConfig(port=0, metrics=False))
    try:
        assert second.executor.desired_setpoints() == {}  # the tombstone won in the rebuild too
        await charger.connect(second.port)
        await asyncio.sleep(1.0)
        assert charger.limits == [10]  # nothing re-installed for the cleared session
    finally:
        await charger.disconnect()
        await second.stop()
    acks = await probe.consumer(["ocpp.setpoint.acks"], "probe-acks")
    records = [json.loads(r.value) for r in await acks.read_to_end()]
    await acks.close()
    assert [
        (a["status"], a["limit"])
        for a in records
        if a["action"] == "SetChargingProfile" and a["session_id"] == f"CP1-{tx}"
    ] == [("Accepted", 10.0)]
