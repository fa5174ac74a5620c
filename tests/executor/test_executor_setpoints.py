"""Desired-state rules and dispatcher choices, without a network: a fake station records the calls."""

from __future__ import annotations

import asyncio

from ocpp_testkit import FixedClock, at, command, wait_for
from prometheus_client import CollectorRegistry

from executor.dispatch import ChargerDispatcher, Held, SetpointTable
from executor.metrics import ExecutorStats
from executor.station import CallOutcome, LimitRequest


def table() -> tuple[SetpointTable, ExecutorStats]:
    stats = ExecutorStats(CollectorRegistry())
    return SetpointTable(stats), stats


def test_latest_per_connector_and_stale_records_across_sessions():
    t, stats = table()
    assert t.apply("CP1-1", command(tx=1, setpoint_a=10, computed_at=at(10))) == "CP1"
    assert t.apply("CP1-2", command(tx=2, setpoint_a=12, computed_at=at(5))) is None  # older, other session
    assert t.slot("CP1", 1).command.setpoint_a == 10
    assert stats.stale_ignored == 1


def test_replayed_record_is_not_a_collapse_but_a_superseded_one_is():
    t, stats = table()
    first = command(tx=1, setpoint_a=10, computed_at=at(1))
    t.apply("CP1-1", first)
    assert t.apply("CP1-1", first) is None  # duplicate (replay after restart)
    assert stats.updates_collapsed == 0
    t.apply("CP1-1", command(tx=1, setpoint_a=11, computed_at=at(2)))
    assert stats.updates_collapsed == 1
    t.apply("CP1-1", command(tx=1, setpoint_a=12, computed_at=at(3)), count=False)
    assert stats.updates_collapsed == 1


def test_tombstone_clears_only_its_own_session():
    t, _ = table()
    t.apply("CP1-1", command(tx=1, setpoint_a=10, computed_at=at(1)))
    t.apply("CP1-2", command(tx=2, setpoint_a=12, computed_at=at(2)))  # new transaction on the connector
    t.apply("CP1-1", None)
    assert t.slot("CP1", 1).command.session_id == "CP1-2"
    t.apply("CP1-2", None)
    assert t.slot("CP1", 1).command is None


class FakeStation:
    id = "CP1"

    def __init__(self) -> None:
        self.calls: list[LimitRequest] = []

    async def serve(self) -> None:  # pragma: no cover - not used
        await asyncio.Event().wait()

    async def set_limit(self, request: LimitRequest) -> CallOutcome:
        self.calls.append(request)
        return CallOutcome("Accepted")


async def test_decreases_go_before_increases():
    t, stats = table()
    for connector in (1, 2):
        t.apply(f"CP1-{connector}", command(connector=connector, tx=connector, setpoint_a=16, computed_at=at(0)))
        t.slot("CP1", connector).held = Held(16.0, "A", str(connector), epoch=1)
    t.apply("CP1-1", command(connector=1, tx=1, setpoint_a=20, computed_at=at(1)))  # increase
    t.apply("CP1-2", command(connector=2, tx=2, setpoint_a=10, computed_at=at(1)))  # decrease
    acks = []

    async def publish_ack(ack):
        acks.append(ack)

    station = FakeStation()
    dispatcher = ChargerDispatcher(
        "CP1", station, 1, t, active_transaction=lambda cp, conn: str(conn), is_managed=lambda cp: True,
        publish_ack=publish_ack, clock=FixedClock(), stats=stats,
    )
    dispatcher.start()
    try:
        await wait_for(lambda: len(acks) == 2, what="two acks")
    finally:
        dispatcher.cancel()
    assert [(c.connector_id, c.limit) for c in station.calls] == [(2, 10.0), (1, 20.0)]
    assert [c.profile_id for c in station.calls] == [1002, 1001]
