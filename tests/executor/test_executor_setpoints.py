"""Desired-state rules, the ledger's accounting and dispatcher choices, without a network."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from prometheus_client import CollectorRegistry

from executor.config import ExecutorConfig
from executor.desired import SetpointTable
from executor.dispatch import ChargerDispatcher, DispatchContext
from executor.ledger import Ledger
from executor.metrics import ExecutorStats
from executor.ocpp.station import CallOutcome, ClearRequest, ProfileRequest
from executor.topology import Topology
from pipeline.contracts.topics import TopologyNode
from tests.kits.ocpp import SITE_NODES, T0, FixedClock, at, command, wait_for


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


def test_tombstone_clears_only_its_own_session_and_marks_the_profile_for_clearing():
    t, _ = table()
    t.apply("CP1-1", command(tx=1, setpoint_a=10, computed_at=at(1)))
    t.apply("CP1-2", command(tx=2, setpoint_a=12, computed_at=at(2)))  # new transaction on the connector
    t.apply("CP1-1", None)
    assert t.slot("CP1", 1).command.session_id == "CP1-2"
    assert t.apply("CP1-2", None) == "CP1"
    assert (t.slot("CP1", 1).command, t.slot("CP1", 1).cleared_tx) == (None, "2")


def test_newest_node_and_site_limits_win():
    t, _ = table()
    t.apply("CP1-1", command(tx=1, computed_at=at(5), node_limit_kw=20.0, site_limit_kw=50.0))
    t.apply("CP2-1", command(cp="CP2", tx=1, computed_at=at(3), node_limit_kw=99.0, site_limit_kw=99.0))
    assert (t.node_limit_kw("panel-a"), t.site_limit_kw("depot-1")) == (20.0, 50.0)
    t.apply("CP2-1", command(cp="CP2", tx=1, computed_at=at(6), node_limit_kw=15.0))
    assert t.node_limit_kw("panel-a") == 15.0


def node_32a() -> tuple[Topology, Ledger]:
    """Two 22 kW chargers on a 32 A (22.08 kW) panel; node limit 22.08 kW, site limit 100 kW."""
    topology = Topology()
    for node in [
        TopologyNode(node_id="s", site_id="s", kind="site", limit_kw=100),
        TopologyNode(node_id="p", site_id="s", parent_id="s", kind="panel", limit_kw=22.08),
        TopologyNode(node_id="A", site_id="s", parent_id="p", kind="charger", limit_kw=22.08),
        TopologyNode(node_id="B", site_id="s", parent_id="p", kind="charger", limit_kw=22.08),
    ]:
        topology.apply(node.node_id, node)
    ledger = Ledger(
        topology, lambda node: 22.08 if node == "p" else None, lambda site: 100.0 if site == "s" else None, lag_s=10.0
    )
    return topology, ledger


def kw(amps: float) -> float:
    return amps * 3 * 230 / 1000


def test_break_before_make_waits_for_the_ack_and_the_ev_lag():
    _, ledger = node_32a()
    for cp in "AB":
        ledger.transaction_started(cp, 1, "1")
    assert ledger.bound_kw("A", 1, T0) == 22.08  # nothing known in force yet: the rating
    ledger.station_profile("A", "TxDefault", kw(6), at(-20))
    ledger.station_profile("B", "TxDefault", kw(6), at(-20))
    ledger.answered("A", 1, "1", kw(20), "Accepted", T0)  # up from the floor: no lag
    ledger.answered("B", 1, "1", kw(12), "Accepted", T0)
    # B wants 20 A, A is cut to 12 A: B must wait for A's cut to be acknowledged and followed.
    assert ledger.check_increase("B", 1, kw(20), T0) is not None
    ledger.sending("A", 1, kw(12))
    blocked = ledger.check_increase("B", 1, kw(20), T0)
    assert blocked is not None and blocked.until is None  # in flight: only the ack can help
    ledger.answered("A", 1, "1", kw(12), "Accepted", at(1))
    blocked = ledger.check_increase("B", 1, kw(20), at(1))
    assert blocked is not None and blocked.until == at(11).timestamp()  # acknowledged; the EV is slower
    assert ledger.check_increase("B", 1, kw(20), at(10.9)) is not None
    assert ledger.check_increase("B", 1, kw(20), at(11)) is None


def test_an_increase_within_what_a_transaction_started_unprotected_may_draw_waits_only_for_its_own_lag():
    """A started before any profile of its charger was acknowledged (bounded by its rating), so its TxDefault
    cut at 2 s bounds it at the rating until 12 s: raising it to 20 A adds nothing before then, and B's cut
    (acknowledged at 0 s) has passed its lag by 12 s, so the increase goes at once instead of at 10 s. The
    same increase from a connector without such a cover still waits for B's lag."""
    _, ledger = node_32a()
    for cp in "AB":
        ledger.transaction_started(cp, 1, "1")
    ledger.station_profile("B", "TxDefault", kw(6), at(-40))
    ledger.answered("B", 1, "1", kw(16), "Accepted", at(-30))
    ledger.answered("B", 1, "1", kw(10), "Accepted", T0)  # B cut 16 -> 10 A: B may draw 16 A until 10 s
    ledger.station_profile("A", "TxDefault", kw(6), at(2))  # A: the rating -> the floor, lag until 12 s
    assert ledger.check_increase("A", 1, kw(20), at(3)) is None
    blocked = ledger.check_increase("A", 1, kw(32.1), at(3))  # more than the rating cover: waits for B
    assert blocked is not None and blocked.until == at(10).timestamp()
    assert ledger.bound_kw("B", 1, at(3)) == kw(16)  # the look-ahead pruned nothing
    _, plain = node_32a()
    for cp in "AB":
        plain.transaction_started(cp, 1, "1")
        plain.station_profile(cp, "TxDefault", kw(6), at(-40))
    plain.answered("B", 1, "1", kw(16), "Accepted", at(-30))
    plain.answered("B", 1, "1", kw(10), "Accepted", T0)
    blocked = plain.check_increase("A", 1, kw(20), at(3))
    assert blocked is not None and blocked.until == at(10).timestamp()


def test_in_flight_and_unknown_answers_count_as_drawing():
    _, ledger = node_32a()
    for cp in "AB":
        ledger.transaction_started(cp, 1, "1")
        ledger.station_profile(cp, "TxDefault", kw(6), at(-20))
    ledger.sending("A", 1, kw(20))
    assert ledger.check_increase("B", 1, kw(16), T0) is not None  # 20 A in flight + 16 A > 32 A
    ledger.answered("A", 1, "1", kw(20), "Timeout", T0)  # it may have been applied
    assert ledger.in_force_kw("A", 1) == kw(20)
    ledger.answered("A", 1, "1", kw(20), "Rejected", T0)
    assert ledger.check_increase("B", 1, kw(12), T0) is None
    ledger.transaction_ended("A", 1)
    assert ledger.check_increase("B", 1, kw(32), T0) is None  # the EV left: it draws nothing


def test_safe_share_is_the_rating_share_of_the_tightest_breaker():
    topology = Topology()
    for node in SITE_NODES:
        topology.apply(node.node_id, node)
    # CP1 (22 kW) on panel-a (60 kW) with no other charger there; the site (100 kW) has CP1 and CP2 (11 kW).
    assert round(topology.safe_share_kw("CP1"), 3) == 22.0
    assert round(topology.safe_share_kw("CP2"), 3) == 11.0
    topology.apply("site", TopologyNode(node_id="depot-1", site_id="depot-1", kind="site", limit_kw=30))
    topology.apply("depot-1", TopologyNode(node_id="depot-1", site_id="depot-1", kind="site", limit_kw=30))
    assert round(topology.safe_share_kw("CP1"), 3) == 20.0  # 30 x 22 / 33
    assert round(topology.safe_share_kw("CP2", fraction=0.5), 3) == 5.0


class FakeStation:
    id = "CP1"
    subprotocol = "ocpp1.6"

    def __init__(self) -> None:
        self.calls: list[ProfileRequest | ClearRequest] = []

    async def wait_first_message(self, timeout_s: float) -> None:
        return None

    async def rate_units(self):
        return ("A", "W")

    async def set_profile(self, request: ProfileRequest) -> CallOutcome:
        self.calls.append(request)
        return CallOutcome("Accepted")

    async def clear_profile(self, request: ClearRequest) -> CallOutcome:
        self.calls.append(request)
        return CallOutcome("Accepted")


async def test_decreases_go_before_fail_safe_and_increases():
    t, stats = table()
    topology = Topology()
    for node in SITE_NODES:
        topology.apply(node.node_id, node)
    ledger = Ledger(topology, t.node_limit_kw, t.site_limit_kw, lag_s=0.0)
    for connector in (1, 2):
        ledger.transaction_started("CP1", connector, str(connector))
        ledger.answered("CP1", connector, str(connector), kw(16), "Accepted", T0)
    t.apply("CP1-1", command(connector=1, tx=1, setpoint_a=20, computed_at=at(1)))  # increase
    t.apply("CP1-2", command(connector=2, tx=2, setpoint_a=10, computed_at=at(1)))  # decrease
    acks = []

    async def publish_ack(ack):
        acks.append(ack)

    ctx = DispatchContext(
        table=t,
        ledger=ledger,
        topology=topology,
        active_transaction=lambda cp, conn: str(conn),
        publish_ack=publish_ack,
        changed=lambda cp: None,
        clock=FixedClock(at(1) + timedelta(seconds=5)),
        stats=stats,
        config=ExecutorConfig(increase_debounce_s=0, ev_response_lag_s=0),
    )
    station = FakeStation()
    dispatcher = ChargerDispatcher("CP1", station, 1, ctx)
    dispatcher.start()
    try:
        await wait_for(lambda: len(acks) == 5, what="five acks")
        await asyncio.sleep(0.05)
    finally:
        dispatcher.cancel()
    assert [(c.purpose, c.connector_id, c.limit, c.stack_level) for c in station.calls] == [
        ("Tx", 2, 10.0, 1),
        ("StationMax", 0, 31.8, 0),
        ("TxDefault", 0, 6.0, 0),
        ("StationMax", 0, 31.8, 1),
        ("Tx", 1, 20.0, 1),
    ]
    assert [c.profile_id for c in station.calls] == [1002, 1, 3, 2, 1001]
    assert [a.purpose for a in acks] == ["Tx", "StationMax", "TxDefault", "StationMaxLift", "Tx"]


def test_a_node_or_site_with_no_known_limit_holds_increases_instead_of_being_unlimited():
    """A missing node_limit_kw / site_limit_kw means no headroom is known: hold, never spend without limit.
    The newest record wins even when it carries no limit (an older known limit no longer holds)."""
    t, _ = table()
    topology = Topology()
    for node in SITE_NODES:
        topology.apply(node.node_id, node)
    ledger = Ledger(topology, t.node_limit_kw, t.site_limit_kw, lag_s=0.0)
    ledger.transaction_started("CP1", 1, "1")
    ledger.answered("CP1", 1, "1", kw(6), "Accepted", T0)
    t.apply("CP1-1", command(tx=1, setpoint_a=6, computed_at=at(1), node_limit_kw=None, site_limit_kw=None))
    blocked = ledger.check_increase("CP1", 1, kw(16), at(2))
    assert blocked is not None and (blocked.level, blocked.group, blocked.limit_kw) == ("node", "panel-a", 0.0)
    t.apply("CP1-1", command(tx=1, setpoint_a=6, computed_at=at(3), node_limit_kw=50.0, site_limit_kw=None))
    blocked = ledger.check_increase("CP1", 1, kw(16), at(4))
    assert blocked is not None and (blocked.level, blocked.group) == ("site", "depot-1")
    t.apply("CP1-1", command(tx=1, setpoint_a=6, computed_at=at(5), node_limit_kw=50.0, site_limit_kw=80.0))
    assert ledger.check_increase("CP1", 1, kw(16), at(6)) is None
    t.apply("CP1-1", command(tx=1, setpoint_a=6, computed_at=at(7), node_limit_kw=None, site_limit_kw=80.0))
    assert ledger.check_increase("CP1", 1, kw(16), at(8)) is not None
