"""The pure planner (executor.planning.plan_charger): exact calls and held-back reasons from plain inputs.

No charger, socket, event loop or clock: every input is a value, so each test states the one call (or the
one order of calls) the rules require.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from executor.config import ExecutorConfig
from executor.ledger import Blocked
from executor.ocpp.station import ClearRequest, ProfileRequest
from executor.planning import (
    LIFT_CLEARED,
    Call,
    ConnectorState,
    DeadbandSkip,
    HeldBack,
    Installed,
    Key,
    Plan,
    RetryState,
    Sent,
    plan_charger,
)
from executor.topology import ChargerInfo
from pipeline.contracts.topics import SetpointCommand
from tests.kits.ocpp import at, command

NOW = at(100)
# CP1 of the test site: 22 kW, 3 phases at 230 V (1 A per phase = 0.69 kW), two connectors here
CP1 = ChargerInfo("depot-1", "panel-a", 22.0, 3, 230.0, True, 2)
SAFE_KW = 22.0  # its safe share: 31.8 A
ANCHOR = NOW - timedelta(days=1)  # the station maximum's startSchedule (whole seconds)


def kw(amps: float) -> float:
    return amps * 3 * 230 / 1000


def all_installed() -> dict[Key, Installed | Literal["cleared"]]:
    """A connection where the fail-safe profiles and a fresh lift are in place."""
    return {
        ("StationMax", 0): Installed(31.8, "A"),
        ("TxDefault", 0): Installed(6.0, "A"),
        ("Lift", 0): Installed(31.8, "A", accepted_at=NOW),
    }


def connector(
    connector_id: int,
    cmd: SetpointCommand | None,
    in_force_a: float,
    *,
    changed_at: datetime | None = None,
    **more: Any,
) -> ConnectorState:
    fields: dict[str, Any] = dict(
        connector_id=connector_id,
        command=cmd,
        changed_at=changed_at or (cmd.computed_at if cmd is not None else None),
        pending=True,
        cleared_tx=None,
        active_transaction=str(connector_id),
        in_force_kw=kw(in_force_a),
    )
    fields.update(more)
    return ConnectorState(**fields)


def plan(
    connectors: list[ConnectorState],
    *,
    sent: Sent | None = None,
    retries: dict[Key, RetryState] | None = None,
    config: ExecutorConfig | None = None,
    verdicts: dict[int, Blocked] | None = None,
    asked: list[tuple[int, float]] | None = None,
    safe_kw: float | None = SAFE_KW,
    info: ChargerInfo | None = CP1,
) -> Plan:
    def check_increase(connector_id: int, new_kw: float, new_a: float | None = None) -> Blocked | None:
        if asked is not None:
            asked.append((connector_id, new_kw))
        return (verdicts or {}).get(connector_id)

    result = plan_charger(
        unit="A",
        info=info,
        safe_kw=safe_kw,
        connectors=connectors,
        sent=all_installed() if sent is None else sent,
        retries=retries or {},
        config=config or ExecutorConfig(),
        now=NOW,
        now_mono=1000.0,
        check_increase=check_increase,
    )
    assert result is not None
    return result


def tx_call(cmd: SetpointCommand, limit: float, reason: str) -> Call:
    """The exact TxProfile call for ``cmd`` at ``limit`` A."""
    c = cmd.connector_id
    request = ProfileRequest("Tx", c, 1000 + c, 1, limit, "A", 3, transaction_id=cmd.transaction_id)
    return Call(("Tx", c), request, reason, kw(limit), cmd)


def test_a_decrease_goes_before_an_increase():
    up = command(connector=1, tx=1, setpoint_a=20, computed_at=at(0))
    down = command(connector=2, tx=2, setpoint_a=10, computed_at=at(0))
    result = plan([connector(1, up, 16), connector(2, down, 16)])
    assert result.calls == [tx_call(down, 10.0, "decrease"), tx_call(up, 20.0, "increase")]
    assert result.held_back == {}


def test_the_largest_cut_goes_first_and_a_resend_after_the_cuts():
    small = command(connector=1, tx=1, setpoint_a=12, computed_at=at(0))
    large = command(connector=2, tx=2, setpoint_a=8, computed_at=at(0))
    same = command(connector=3, tx=3, setpoint_a=16, computed_at=at(0))  # in force, not on this connection
    info = ChargerInfo("depot-1", "panel-a", 22.0, 3, 230.0, True, 3)
    result = plan([connector(3, same, 16), connector(1, small, 16), connector(2, large, 16)], info=info)
    assert result.calls == [
        tx_call(large, 8.0, "decrease"),
        tx_call(small, 12.0, "decrease"),
        tx_call(same, 16.0, "resend"),
    ]


def test_fail_safe_profiles_go_between_the_decreases_and_the_increases():
    """Nothing installed yet: withdrawn setpoint's clear, cut, station maximum at the safe share (stack
    level 0, Absolute), TxDefaultProfile at 6 A, then the increase; no lift before the TxDefaultProfile."""
    up = command(connector=1, tx=1, setpoint_a=20, computed_at=at(0))
    down = command(connector=2, tx=2, setpoint_a=10, computed_at=at(0))
    withdrawn = connector(3, None, 16, cleared_tx="3")
    sent = {("Tx", 3): Installed(16.0, "A", transaction_id="3")}
    info = ChargerInfo("depot-1", "panel-a", 22.0, 3, 230.0, True, 3)
    result = plan([connector(1, up, 16), connector(2, down, 16), withdrawn], sent=sent, info=info)
    assert result.calls == [
        Call(("ClearTx", 3), ClearRequest(1003, 3), "clear_tx"),
        tx_call(down, 10.0, "decrease"),
        Call(
            ("StationMax", 0),
            ProfileRequest("StationMax", 0, 1, 0, 31.8, "A", 3, start_schedule=ANCHOR),
            "failsafe",
        ),
        Call(("TxDefault", 0), ProfileRequest("TxDefault", 0, 3, 0, 6.0, "A", 3), "failsafe"),
        tx_call(up, 20.0, "increase"),
    ]


def test_the_lift_follows_the_tx_default_profile_and_is_valid_for_the_ttl():
    sent = {("StationMax", 0): Installed(31.8, "A"), ("TxDefault", 0): Installed(6.0, "A")}
    result = plan([], sent=sent)
    lift = ProfileRequest("StationMax", 0, 2, 1, 31.8, "A", 3, start_schedule=ANCHOR, valid_to=at(1900))
    assert result.calls == [Call(("Lift", 0), lift, "lift")]


def test_an_increase_inside_the_debounce_is_held_back_until_it_ends():
    up = command(connector=1, tx=1, setpoint_a=20, computed_at=at(0))
    asked: list[tuple[int, float]] = []
    result = plan([connector(1, up, 16, changed_at=at(99.5))], asked=asked)
    assert result.calls == []
    assert result.held_back == {1: HeldBack("debounce")}
    assert result.release_at == at(100.5) and result.wake_at == at(100.5)
    assert asked == []  # the ledger is not asked before the debounce has passed


def test_an_increase_within_the_deadband_is_skipped_but_a_decrease_is_not():
    config = ExecutorConfig(deadband_a=0.5)
    up = command(connector=1, tx=1, setpoint_a=16.3, computed_at=at(0))
    down = command(connector=2, tx=2, setpoint_a=15.8, computed_at=at(0))
    sent = {
        **all_installed(),
        ("Tx", 1): Installed(16.0, "A", transaction_id="1"),
        ("Tx", 2): Installed(16.0, "A", transaction_id="2"),
    }
    result = plan([connector(1, up, 16), connector(2, down, 16)], sent=sent, config=config)
    assert result.calls == [tx_call(down, 15.8, "decrease")]
    assert result.deadband == [DeadbandSkip(1, 16.0, 16.3)]
    assert result.settled == [1]


def test_an_increase_the_ledger_blocks_is_held_back_with_its_reason():
    up = command(connector=1, tx=1, setpoint_a=20, computed_at=at(0))
    blocked = Blocked("node", "panel-a", 22.0, 23.0, until=at(105).timestamp())
    asked: list[tuple[int, float]] = []
    result = plan([connector(1, up, 16)], verdicts={1: blocked}, asked=asked)
    assert asked == [(1, kw(20))]
    assert result.calls == []
    assert result.held_back == {1: HeldBack("lag: node panel-a 23.000 > 22.000 kW", blocked)}
    assert result.release_at == at(105)


def test_a_node_without_a_known_limit_holds_the_increase_for_headroom():
    up = command(connector=1, tx=1, setpoint_a=20, computed_at=at(0))
    blocked = Blocked("node", "panel-a", 0.0, kw(20), None, known=False)
    result = plan([connector(1, up, 16)], verdicts={1: blocked})
    assert result.held_back == {1: HeldBack("headroom: node panel-a has no known limit", blocked)}
    assert result.release_at is None


def test_a_setpoint_older_than_the_ttl_falls_back_to_the_safe_share_and_clears_the_lift_first():
    """22 kW safe share over 2 connectors: 11 kW each, 15.9 A; the lift is cleared before the increase."""
    old = command(connector=1, tx=1, setpoint_a=20, computed_at=NOW - timedelta(seconds=1801))
    result = plan([connector(1, old, 6)])
    assert result.stale
    assert result.calls == [
        Call(("ClearLift", 0), ClearRequest(2, 0), "clear_lift"),
        tx_call(old, 15.9, "ttl_fallback"),
    ]


def test_a_ttl_fallback_below_the_floor_is_zero():
    old = command(connector=1, tx=1, setpoint_a=16, computed_at=NOW - timedelta(seconds=1801))
    sent = {**all_installed(), ("Lift", 0): LIFT_CLEARED}
    result = plan([connector(1, old, 16)], sent=sent, safe_kw=8.0)  # 4 kW each: below 6 A x 3 x 230 V
    assert result.calls[0] == Call(
        ("Tx", 1), ProfileRequest("Tx", 1, 1001, 1, 0.0, "A", 3, transaction_id="1"), "ttl_fallback", 0.0, old
    )


def test_a_failed_value_waits_for_its_retry_and_a_new_value_does_not():
    down = command(connector=1, tx=1, setpoint_a=10, computed_at=at(0))
    waiting = {("Tx", 1): RetryState(("1", 10.0, "A"), 1, ready_at=1002.0, retryable=True)}
    result = plan([connector(1, down, 16)], retries=waiting)
    assert (result.calls, result.retry_at, result.forget_retries) == ([], 1002.0, [])
    older = {("Tx", 1): RetryState(("1", 12.0, "A"), 1, ready_at=1002.0, retryable=True)}
    result = plan([connector(1, down, 16)], retries=older)
    assert (result.calls, result.forget_retries) == ([tx_call(down, 10.0, "decrease")], [("Tx", 1)])


def test_an_unmanaged_charger_gets_no_plan():
    unmanaged = ChargerInfo("depot-1", "panel-a", 22.0, 3, 230.0, False, 1)
    down = command(connector=1, tx=1, setpoint_a=10, computed_at=at(0))
    result = plan_charger(
        unit="A",
        info=unmanaged,
        safe_kw=SAFE_KW,
        connectors=[connector(1, down, 16)],
        sent={},
        retries={},
        config=ExecutorConfig(),
        now=NOW,
        now_mono=0.0,
        check_increase=lambda connector_id, new_kw, new_a: None,
    )
    assert result is None
