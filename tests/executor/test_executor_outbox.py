"""The outbox: chargers are answered at once whatever the transport does; telemetry waits bounded, coalesced
per key for upsert topics, and nothing is lost or reordered per key once the transport is back."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from ocpp.v16 import call
from prometheus_client import CollectorRegistry

from executor.metrics import ExecutorStats
from executor.outbox import Outbox
from pipeline.contracts.topics import SetpointAck
from pipeline.transport import MemoryTransport
from tests.kits.ocpp import at, iso, wait_for

SESSIONS = "ocpp.active.sessions"
ACKS = "ocpp.setpoint.acks"


class GatedTransport(MemoryTransport):
    """A memory transport whose sends to ``gated`` topics block while ``gate`` is clear, or raise while
    ``failing`` is set (as the Kafka transport does when its brokers stay away)."""

    def __init__(self, gated: tuple[str, ...] = (SESSIONS, ACKS)) -> None:
        super().__init__()
        self.gated = gated
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False
        self.attempts = 0

    async def send(self, topic, key, value, headers=()):
        if topic in self.gated:
            self.attempts += 1
            await self.gate.wait()
            if self.failing:
                raise ConnectionError("kafka: no broker answers")
        await super().send(topic, key, value, headers)


def meter(tx: int, seconds: float, wh: float) -> call.MeterValues:
    return call.MeterValues(
        connector_id=1,
        transaction_id=tx,
        meter_value=[
            {
                "timestamp": iso(at(seconds)),
                "sampledValue": [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}],
            }
        ],
    )


def fast(outbox: Outbox) -> Outbox:
    outbox.retry_initial_s, outbox.retry_max_s = 0.01, 0.05
    return outbox


def ack(n: int, cp: str = "CP1") -> SetpointAck:
    return SetpointAck(
        session_id=f"{cp}-1",
        charge_point_id=cp,
        connector_id=1,
        action="SetChargingProfile",
        status="Accepted",
        limit=float(n),
        charging_rate_unit="A",
        sent_at=at(n),
        answered_at=at(n),
    )


# -- over a real websocket -------------------------------------------------------------------------------


@pytest.fixture
def transport() -> GatedTransport:  # overrides the conftest's: the executor publishes through the gate
    return GatedTransport()


async def test_a_transport_that_blocks_forever_does_not_delay_the_callresult(make_executor, transport):
    from tests.kits.ocpp import open_charge_point

    executor = await make_executor(outbox_drain_s=0.2, meter_heartbeat_s=0)  # every reading goes to the outbox
    fast(executor.outbox)
    async with open_charge_point(executor.port) as cp:
        await cp.boot()
        transport.gate.clear()  # the brokers go away: every send now hangs
        tx = await cp.start_tx(meter_start=1000)  # answered (the test charge point gives up after 2 s)
        for i in range(1, 6):
            await cp.call(meter(tx, 60 * i, 1000 + 100 * i))
        await cp.call(call.Heartbeat())
        assert transport.log(SESSIONS) == []
        # The first record went to the transport and hangs there; the five meter updates wait as one.
        assert executor.outbox.depth_of(SESSIONS) == 1
        assert executor.outbox.coalesced[SESSIONS] == 4
        _, text = executor._metrics()
        assert f'executor_outbox_records{{topic="{SESSIONS}"}} 1.0' in text.decode()
        assert f'executor_outbox_coalesced_total{{topic="{SESSIONS}"}} 4.0' in text.decode()

        await cp.call(call.StopTransaction(meter_stop=1600, timestamp=iso(at(400)), transaction_id=tx))
        transport.gate.set()  # the brokers are back
        assert await executor.outbox.flush(5.0)
    records = transport.log(SESSIONS)
    assert {r.key for r in records} == {f"CP1-{tx}"}
    assert records[-1].value is None  # the tombstone is last: nothing resurrects the ended session
    assert [json.loads(r.value)["energy_kwh"] for r in records[:-1]] in ([None], [None, 0.5])


async def test_a_failing_transport_loses_nothing_once_it_is_back(make_executor, transport):
    from tests.kits.ocpp import open_charge_point

    executor = await make_executor()
    fast(executor.outbox)
    async with open_charge_point(executor.port) as cp:
        await cp.boot()
        transport.failing = True
        tx = await cp.start_tx(meter_start=1000)
        await cp.call(meter(tx, 60, 1500))
        await wait_for(lambda: transport.attempts >= 3, what="retries")
        assert executor.outbox.failing and transport.log(SESSIONS) == []
        transport.failing = False
        assert await executor.outbox.flush(5.0)
        [record] = transport.log(SESSIONS)
        assert json.loads(record.value)["energy_kwh"] == 0.5  # the newest value of the key
        assert not executor.outbox.failing


# -- the outbox alone ------------------------------------------------------------------------------------


async def test_upserts_coalesce_and_a_tombstone_is_never_overtaken():
    transport = GatedTransport()
    outbox = fast(Outbox(transport))
    outbox.put(SESSIONS, "A", b"a1")
    await wait_for(lambda: transport.attempts == 1, what="a1 in flight")
    transport.gate.clear()
    await asyncio.sleep(0)
    # a1 is being sent (and hangs); meanwhile A is updated, deleted, and B comes and goes twice.
    outbox.put(SESSIONS, "A", b"a2")
    outbox.put(SESSIONS, "B", b"b1")
    outbox.put(SESSIONS, "A", None)
    outbox.put(SESSIONS, "B", b"b2")
    assert outbox.depth_of(SESSIONS) == 2 and outbox.coalesced[SESSIONS] == 2
    transport.gate.set()
    assert await outbox.flush(5.0)
    by_key: dict[str, list] = {}
    for r in transport.log(SESSIONS):
        by_key.setdefault(r.key, []).append(r.value)
    assert by_key == {"A": [b"a1", None], "B": [b"b2"]}
    await outbox.close()


async def test_a_failed_upsert_superseded_meanwhile_is_not_sent_after_its_tombstone():
    transport = GatedTransport()
    transport.failing = True
    outbox = fast(Outbox(transport))
    outbox.put(SESSIONS, "A", b"a1")
    await wait_for(lambda: transport.attempts >= 2, what="a1 failing")
    outbox.put(SESSIONS, "A", None)  # the session ends while its last upsert could not be delivered
    transport.failing = False
    assert await outbox.flush(5.0)
    values = [r.value for r in transport.log(SESSIONS)]
    assert values[-1] is None and b"a1" not in values[values.index(None) :]
    await outbox.close()


async def test_appends_keep_their_order_and_overflow_drops_the_oldest_counted(caplog):
    registry = CollectorRegistry()
    transport = GatedTransport()
    transport.failing = True
    outbox = fast(Outbox(transport, limit=3, stats=ExecutorStats(registry)))
    caplog.set_level(logging.WARNING, logger="executor.outbox")
    outbox.publish(ACKS, ack(1))
    await wait_for(lambda: transport.attempts >= 1, what="first attempt")
    for n in range(2, 9):
        outbox.publish(ACKS, ack(n, cp="CP1" if n % 2 else "CP2"))
    assert outbox.depth_of(ACKS) == 3
    dropped = outbox.overflowed[ACKS]
    assert registry.get_sample_value("executor_outbox_overflow_total", {"topic": ACKS}) == dropped
    assert registry.get_sample_value("executor_outbox_records", {"topic": ACKS}) == 3
    assert len([r for r in caplog.records if "outbox full" in r.getMessage()]) == 1  # rate-limited
    transport.failing = False
    assert await outbox.flush(5.0)
    limits = [json.loads(r.value)["limit"] for r in transport.log(ACKS)]
    assert limits == sorted(limits) and limits[-3:] == [6.0, 7.0, 8.0]
    assert len(limits) + dropped == 8
    await outbox.close()


async def test_an_upsert_topic_past_its_bound_drops_new_keys_but_keeps_tombstones():
    transport = GatedTransport()
    transport.gate.clear()
    outbox = Outbox(transport, limit=2)
    outbox.put(SESSIONS, "in-flight", b"x")
    await wait_for(lambda: transport.attempts == 1, what="first send hanging")
    outbox.put(SESSIONS, "A", b"a")
    outbox.put(SESSIONS, "B", b"b")
    outbox.put(SESSIONS, "C", b"c")  # no room: dropped and counted
    outbox.put(SESSIONS, "D", None)  # a deletion is kept past the bound
    outbox.put(SESSIONS, "A", b"a2")  # a known key is replaced, whatever the bound
    assert outbox.overflowed == {SESSIONS: 1} and outbox.depth_of(SESSIONS) == 3
    transport.gate.set()
    assert await outbox.flush(5.0)
    assert [(r.key, r.value) for r in transport.log(SESSIONS)] == [
        ("in-flight", b"x"),
        ("A", b"a2"),
        ("B", b"b"),
        ("D", None),
    ]
    await outbox.close()


async def test_an_outage_logs_one_line_going_away_one_coming_back_and_a_periodic_summary(caplog):
    now = [0.0]
    transport = GatedTransport()
    transport.failing = True
    outbox = fast(Outbox(transport, log_every_s=60.0, monotonic=lambda: now[0]))
    caplog.set_level(logging.INFO, logger="executor.outbox")
    outbox.put(SESSIONS, "A", b"a")
    await wait_for(lambda: transport.attempts >= 10, what="ten failed attempts")
    now[0] = 61.0
    seen = transport.attempts
    await wait_for(lambda: transport.attempts >= seen + 5, what="more failed attempts")
    transport.failing = False
    assert await outbox.flush(5.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "executor.outbox"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("publishing failed (kafka: no broker answers)")
    assert lines[1].startswith("publishing has failed for 61s")
    assert lines[2].startswith("publishing works again after 61s")
    await outbox.close()


async def test_close_delivers_what_it_can_and_reports_the_rest(caplog):
    transport = GatedTransport()
    outbox = Outbox(transport)
    outbox.put(SESSIONS, "A", b"a")
    assert await outbox.close(5.0) == 0
    assert [r.key for r in transport.log(SESSIONS)] == ["A"]

    stuck = GatedTransport()
    stuck.gate.clear()
    outbox = Outbox(stuck)
    outbox.put(SESSIONS, "A", b"a")
    outbox.put(ACKS, "CP1", b"{}")
    caplog.set_level(logging.ERROR, logger="executor.outbox")
    assert await outbox.close(0.05) == 2
    assert outbox.overflowed == {SESSIONS: 1, ACKS: 1}
    assert "2 records undelivered" in caplog.text
    with pytest.raises(RuntimeError):
        outbox.put(SESSIONS, "A", b"a")
