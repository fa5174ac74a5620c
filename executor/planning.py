"""What one charger should be sent next, decided from plain values: no I/O, no asyncio, no clock reads.

:class:`executor.dispatch.ChargerDispatcher` owns a charger's connection: it sends calls, waits for their
answers, publishes acks and schedules retries. Which call to make next is a question of values only (the
desired setpoints, what the charger accepted, what the ledger allows, the policy and the time), so it is
answered here by :func:`plan_charger`, which can be tested call by call without a charger, a socket or an
event loop. The rules (OCPP 1.6 section 3.13 and 2.0.1 functional block K, smart charging):

1. **Decreases** of TxProfiles first, the largest cut first; a ClearChargingProfile for a withdrawn
   setpoint before any cut; a resend of what is already in force (after a reconnect) after the cuts.
2. **Fail-safe** station-wide profiles: the station maximum at the charger's safe share (ChargePointMaxProfile
   on connector 0 in 1.6, ChargingStationMaxProfile on EVSE 0 in 2.0.1, stackLevel 0, ``Absolute``: 2.0.1
   K01.FR.38) and the TxDefaultProfile at the floor (6 A x phases, stackLevel 0) so a new transaction starts
   low until its setpoint arrives. While the setpoints are fresh and the TxDefaultProfile is in place, a
   *lift* (a station maximum at the rating, stackLevel 1, which takes precedence over stackLevel 0: OCPP 1.6
   section 7.8, ``validTo`` = now + TTL, renewed at half-life) lets TxProfiles use the allocation. When a
   setpoint is older than the TTL the lift is cleared first, so the safe share applies again, and each
   TxProfile falls back to min(setpoint, safe share / connectors).
3. **Increases** (more kW, or in A more current per phase than the limit in force), the largest first, once the
   debounce has passed (the desired value unchanged for ``increase_debounce_s``) and the ledger allows them
   (:meth:`executor.ledger.Ledger.check_increase`: break before make, in-flight accounting). A held-back increase
   gets a reason.

**Schedule periods.** A setpoint that carries the next known decrease (``next_change_at``,
``next_setpoint_a`` / ``next_setpoint_kw``) goes out as a TxProfile with a second chargingSchedulePeriod from
that instant, so the charger cuts on time on its own (docs/architecture.md, "Schedule periods"), when the
charger takes two periods per schedule (``schedule_periods``; 1 while unknown: the flat limit alone). Such a
profile is ``Absolute`` from a day before now (a charger whose clock lags ours still has it in force), and
the period's startPeriod is rounded down to whole seconds, so the cut is never late on our clock. A next
change already passed makes the lower value the flat limit.

A deadband skips increases smaller than ``deadband_a`` (A; for W scaled by phases x voltage); decreases
always go out, so a skipped cut can never hold headroom another connector was given. A call whose value
failed before waits for its retry time; a new value is not held by an older value's failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from executor.config import ExecutorConfig
from executor.ledger import Blocked, NextPeriod
from executor.ocpp.station import ClearRequest, ProfileRequest, RateUnit
from executor.topology import ChargerInfo
from pipeline.contracts.topics import SetpointCommand

__all__ = [
    "FLOOR_A",
    "LIFT_CLEARED",
    "STATION_LIFT_ID",
    "STATION_MAX_ID",
    "TX_DEFAULT_ID",
    "TX_PROFILE_ID_BASE",
    "Call",
    "ConnectorState",
    "DeadbandSkip",
    "HeldBack",
    "IncreaseCheck",
    "Installed",
    "Key",
    "Plan",
    "RetryState",
    "Sent",
    "floor01",
    "next_period",
    "plan_charger",
    "profile_id_for",
    "schedule_anchor",
    "to_unit",
    "tx_limit",
    "why_blocked",
    "within_deadband",
]

STATION_MAX_ID: Final = 1
"""chargingProfileId of the fail-safe station maximum (stackLevel 0)."""
STATION_LIFT_ID: Final = 2
"""chargingProfileId of the lift: the station maximum at the rating (stackLevel 1)."""
TX_DEFAULT_ID: Final = 3
"""chargingProfileId of the TxDefaultProfile at the floor."""
TX_PROFILE_ID_BASE: Final = 1000
"""A connector's TxProfile has chargingProfileId ``1000 + connector_id``."""
FLOOR_A: Final = 6.0
"""The lowest non-zero current per phase an EV is asked to draw (A); a limit is 0 or at least this."""
_EPS: Final = 1e-9
_EPS_KW: Final = 1e-6

Key = tuple[str, int]
"""``(kind, connector_id)`` of a call: kind ``Tx``, ``ClearTx``, ``StationMax``, ``TxDefault``, ``Lift`` or
``ClearLift``; station-wide calls have connector 0."""

LIFT_CLEARED: Final = "cleared"
"""What :data:`Sent` holds under ``("Lift", 0)`` once the lift was cleared on this connection."""


@dataclass(frozen=True)
class Installed:
    """A SetChargingProfile the charger accepted on the current connection.

    ``limit`` is in ``unit`` (A per phase, or W); ``transaction_id`` is the transaction of a TxProfile
    (``None`` for station-wide profiles); ``accepted_at`` (clock) is when a lift was accepted, from which it
    is renewed at half its TTL (``None`` for every other profile); ``next_at`` and ``next_limit`` a TxProfile's
    later schedule period (when it starts, and its limit in ``unit``), if it has one.
    """

    limit: float
    unit: RateUnit
    transaction_id: str | None = None
    accepted_at: datetime | None = None
    next_at: datetime | None = None
    next_limit: float | None = None

    def from_now(self, now: datetime) -> tuple[float, tuple[datetime, float] | None]:
        """What the charger holds from ``now`` on: the limit in force and the later period still ahead."""
        if self.next_at is None or self.next_limit is None:
            return self.limit, None
        if self.next_at <= now:
            return self.next_limit, None
        return self.limit, (self.next_at, self.next_limit)


Sent = Mapping[Key, Installed | Literal["cleared"]]
"""What the charger accepted on this connection, by :data:`Key`: ``("Tx", c)``, ``("StationMax", 0)``,
``("TxDefault", 0)`` and ``("Lift", 0)`` (an :class:`Installed`, or :data:`LIFT_CLEARED`)."""


@dataclass(frozen=True)
class RetryState:
    """A failed call waiting to be retried: the ``value`` it tried to install (compared with the value
    planned now: a different value is not held back), ``failures`` in a row, ``ready_at`` (monotonic
    seconds) and ``retryable`` (``False`` after ``NotSupported``: never again for this value)."""

    value: object
    failures: int
    ready_at: float
    retryable: bool


@dataclass(frozen=True)
class ConnectorState:
    """One connector as the planner sees it.

    ``command`` is the latest setpoint (``None`` after its tombstone), ``changed_at`` (clock) when its
    value last changed, ``pending`` whether it has not been taken up yet, ``cleared_tx`` a transaction
    whose setpoint was withdrawn while it runs; ``active_transaction`` is the connector's open transaction
    (or ``None``) and ``in_force_kw`` the ledger's limit in force for it (kW, 0 without a transaction),
    ``in_force_a`` the same in A per phase when it was sent in A (``None`` otherwise).
    """

    connector_id: int
    command: SetpointCommand | None
    changed_at: datetime | None
    pending: bool
    cleared_tx: str | None
    active_transaction: str | None
    in_force_kw: float
    in_force_a: float | None = None


@dataclass(frozen=True)
class Call:
    """One call to make: ``request`` under ``key`` because of ``reason`` (see :mod:`executor.dispatch_log`:
    ``decrease``, ``resend``, ``increase``, ``ttl_fallback``, ``failsafe``, ``lift``, ``clear_lift`` or
    ``clear_tx``). A TxProfile carries its limit in kW (``kw``), the ``command`` it implements and, with a
    later schedule period, ``then`` for the ledger: when it starts, its kW and its A per phase (A only)."""

    key: Key
    request: ProfileRequest | ClearRequest
    reason: str
    kw: float | None = None
    command: SetpointCommand | None = None
    then: NextPeriod | None = None


@dataclass(frozen=True)
class HeldBack:
    """Why an increase waits: ``why`` is ``debounce``, or :func:`why_blocked` of the ledger's ``blocked``."""

    why: str
    blocked: Blocked | None = None


@dataclass(frozen=True)
class DeadbandSkip:
    """A new setpoint whose increase from ``held`` to ``wanted`` (in the charger's unit) is not sent."""

    connector_id: int
    held: float
    wanted: float


@dataclass
class Plan:
    """The outcome of :func:`plan_charger`.

    ``calls`` in the order they are due (the dispatcher makes the first, then plans again); ``held_back``
    the connectors whose increase waits; ``settled`` the connectors whose desired value is in force (or
    within the deadband of it), so it is no longer pending; ``deadband`` the skips of new setpoints (to log);
    ``forget_retries`` the retry records superseded by a different value; ``stale`` whether any setpoint is
    older than the TTL; ``release_at`` (clock) the earliest time a held-back increase may go; ``wake_at``
    (clock) and ``retry_at`` (monotonic seconds) when to plan again if nothing else happens.
    """

    calls: list[Call] = field(default_factory=list)
    held_back: dict[int, HeldBack] = field(default_factory=dict)
    settled: list[int] = field(default_factory=list)
    deadband: list[DeadbandSkip] = field(default_factory=list)
    forget_retries: list[Key] = field(default_factory=list)
    stale: bool = False
    release_at: datetime | None = None
    wake_at: datetime | None = None
    retry_at: float | None = None


IncreaseCheck = Callable[[int, float, float | None], Blocked | None]
"""``check(connector_id, new_kw, new_a)``: the ledger's verdict on raising a connector to ``new_kw`` (kW;
``new_a`` the limit in A per phase when the unit is A, else ``None``) now, ``None`` when it fits
(:meth:`executor.ledger.Ledger.check_increase` bound to the charger and the time). Asked only for increases past their
debounce."""


def profile_id_for(connector_id: int) -> int:
    """The chargingProfileId of a connector's TxProfile: ``1000 + connector_id`` (stable, so each new
    profile replaces the previous one: OCPP 1.6 section 5.16.2, OCPP 2.0.1 K01.FR.05)."""
    return TX_PROFILE_ID_BASE + connector_id


def floor01(value: float) -> float:
    """``value`` rounded down to 0.1, the resolution both versions accept (a schedule period's ``limit`` is
    ``multipleOf 0.1`` in the 1.6 SetChargingProfile schema, and "at most one digit fraction" in 2.0.1), so
    rounding never lifts a limit."""
    return math.floor(value * 10 + 1e-6) / 10


def to_unit(kw: float, unit: RateUnit, phases: int, voltage_v: float) -> tuple[float, float]:
    """``(limit, kW)``: ``kw`` as a limit in ``unit`` (A per phase over ``phases`` x ``voltage_v``, or W),
    rounded down to 0.1, and the kW that limit allows."""
    if unit == "A":
        limit = floor01(kw * 1000.0 / (phases * voltage_v))
        return limit, limit * phases * voltage_v / 1000.0
    limit = floor01(kw * 1000.0)
    return limit, limit / 1000.0


def tx_limit(
    command: SetpointCommand, unit: RateUnit, stale: bool, safe_kw: float | None, connectors: int
) -> tuple[float, float]:
    """The TxProfile limit for a command, ``(limit in unit, kW)``: ``setpoint_a`` (A) or ``setpoint_kw`` x
    1000 (W) rounded down to 0.1. When the setpoint is ``stale`` (older than the TTL) it is at most the safe
    share per connector, ``safe_kw / connectors``, and 0 if that is below the floor (6 A x phases): a limit
    is never between 0 and the floor."""
    if unit == "A":
        limit = floor01(command.setpoint_a)
        kw = limit * command.phases * command.voltage_v / 1000.0
    else:
        limit = floor01(command.setpoint_kw * 1000.0)
        kw = limit / 1000.0
    if stale and safe_kw is not None and kw > safe_kw / connectors + _EPS:
        cap = safe_kw / connectors
        if cap * 1000.0 < FLOOR_A * command.phases * command.voltage_v - _EPS:
            return 0.0, 0.0
        return to_unit(cap, unit, command.phases, command.voltage_v)
    return limit, kw


def next_period(command: SetpointCommand, unit: RateUnit, limit: float) -> tuple[datetime, float, float] | None:
    """The command's next known decrease as ``(starts at, limit in unit, kW)``, rounded down like
    :func:`tx_limit`; ``None`` when it has none or it is not below ``limit`` (only decreases are scheduled)."""
    at, kw_next, a_next = command.next_change_at, command.next_setpoint_kw, command.next_setpoint_a
    if at is None or kw_next is None or a_next is None:
        return None
    if unit == "A":
        lower = floor01(a_next)
        kw = lower * command.phases * command.voltage_v / 1000.0
    else:
        lower = floor01(kw_next * 1000.0)
        kw = lower / 1000.0
    return (at, lower, kw) if lower < limit - _EPS else None


def schedule_anchor(now: datetime) -> datetime:
    """startSchedule of an ``Absolute`` profile sent at ``now``: a day before, in whole seconds, so a charger
    whose clock lags ours still has the profile in force."""
    return (now - timedelta(days=1)).replace(microsecond=0)


def within_deadband(held: float, wanted: float, command: SetpointCommand, unit: RateUnit, deadband_a: float) -> bool:
    """Whether ``held`` and ``wanted`` (in ``unit``) differ by less than ``deadband_a`` (A per phase; in W
    the band is ``deadband_a`` x phases x voltage of the command)."""
    band = deadband_a * (command.phases * command.voltage_v if unit == "W" else 1)
    return abs(held - wanted) < band - _EPS


def why_blocked(blocked: Blocked) -> str:
    """The held-back reason of a blocked increase: ``"lag: node panel-a 23.000 > 22.000 kW"`` (``lag`` when
    a cut's EV response lag ends at a known time, else ``headroom``), ``"headroom: node panel-a L2 33.0 >
    32.0 A"`` for a grid phase over the node's ``limit_a``, or ``"headroom: <level> <id> has no known
    limit"``."""
    if blocked.phase is not None and blocked.limit_a is not None and blocked.needed_a is not None:
        wait = "lag" if blocked.until is not None else "headroom"
        return (
            f"{wait}: {blocked.level} {blocked.group} {blocked.phase} {blocked.needed_a:.1f} > {blocked.limit_a:.1f} A"
        )
    if not blocked.known:
        return f"headroom: {blocked.level} {blocked.group} has no known limit"
    wait = "lag" if blocked.until is not None else "headroom"
    return f"{wait}: {blocked.level} {blocked.group} {blocked.needed_kw:.3f} > {blocked.limit_kw:.3f} kW"


class _RetryGate:
    """Which keys may be sent now given the failed calls waiting for a retry; collects what it finds."""

    def __init__(self, retries: Mapping[Key, RetryState], now_mono: float) -> None:
        self._retries = retries
        self._now = now_mono
        self.forget: list[Key] = []
        self.ready_at: list[float] = []

    def open(self, key: Key, value: object) -> bool:
        """True if ``key`` may be sent with ``value`` now (no failed attempt of the same value waiting)."""
        retry = self._retries.get(key)
        if retry is None or retry.value != value:
            if retry is not None:
                self.forget.append(key)
            return True
        if not retry.retryable:
            return False
        if self._now < retry.ready_at:
            self.ready_at.append(retry.ready_at)
            return False
        return True


def plan_charger(
    *,
    unit: RateUnit,
    info: ChargerInfo | None,
    safe_kw: float | None,
    connectors: Sequence[ConnectorState],
    sent: Sent,
    retries: Mapping[Key, RetryState],
    config: ExecutorConfig,
    now: datetime,
    now_mono: float,
    check_increase: IncreaseCheck,
    schedule_periods: int = 1,
) -> Plan | None:
    """Plan a charger's calls (the rules are in the module docstring); ``None`` for an unmanaged charger
    (nothing is ever sent to it).

    ``unit`` is the chargingRateUnit agreed with the charger; ``info`` its topology facts (``None``: not in
    topology, so 3 phases at 230 V, one connector and no station-wide profiles); ``safe_kw`` its safe share
    (kW, :meth:`executor.topology.Topology.safe_share_kw`, ``None`` when unknown); ``connectors`` in the order
    ties are broken; ``sent`` and ``retries`` the dispatcher's state on this connection; ``config`` the policy
    (``setpoint_ttl_s``, ``increase_debounce_s``, ``deadband_a``); ``now`` the clock time and ``now_mono``
    the monotonic time (for retries). ``check_increase`` is called at most once per connector;
    ``schedule_periods`` is how many chargingSchedulePeriods the charger takes (a later period is sent only
    when it takes 2 or more). Raises nothing for well-formed inputs.
    """
    if info is not None and not info.managed:
        return None
    phases, voltage = (info.phases, info.voltage_v) if info else (3, 230.0)
    per_charger = info.connectors if info else 1
    ttl = config.setpoint_ttl_s
    gate = _RetryGate(retries, now_mono)
    plan = Plan()
    wake: list[datetime] = []
    release: list[datetime] = []
    decreases: list[tuple[float, Call]] = []
    increases: list[tuple[float, Call]] = []
    for state in connectors:
        c, command = state.connector_id, state.command
        if command is None:
            clear = _clear_tx(state, sent, gate)
            if clear is not None:
                decreases.append((-math.inf, clear))
            continue
        if state.active_transaction != command.transaction_id:
            continue
        stale = ttl is not None and (now - command.computed_at).total_seconds() > ttl
        plan.stale |= stale
        if ttl is not None and not stale:
            wake.append(command.computed_at + timedelta(seconds=ttl + 0.001))
        limit, kw = tx_limit(command, unit, stale, safe_kw, per_charger)
        ahead = next_period(command, unit, limit)
        if ahead is not None and ahead[0] <= now:  # already due: the lower value is the limit
            limit, kw, ahead = ahead[1], ahead[2], None
        elif ahead is not None and schedule_periods < 2:
            wake.append(ahead[0])  # the charger takes one period: the cut goes out as a flat limit then
            ahead = None
        key = ("Tx", c)
        held = sent.get(key)
        held_now = held.from_now(now) if isinstance(held, Installed) else None
        if held_now is not None and held_now[1] is not None:
            wake.append(held_now[1][0])  # re-plan when the charger's own cut starts
        in_force = state.in_force_kw
        # more power, or (in A) more current per phase: a 1-phase EV at 10 A after a 3-phase 6 A floor
        in_force_a = state.in_force_a if unit == "A" else None
        increase = kw > in_force + _EPS_KW or (in_force_a is not None and limit > in_force_a + _EPS)
        wanted_ahead = None if ahead is None else (ahead[0], ahead[1])
        if (
            isinstance(held, Installed)
            and held_now is not None
            and held.transaction_id == command.transaction_id
            and held_now[1] == wanted_ahead
            and (
                held_now[0] == limit
                or (increase and within_deadband(held_now[0], limit, command, unit, config.deadband_a))
            )
        ):
            if state.pending and held_now[0] != limit:
                plan.deadband.append(DeadbandSkip(c, held_now[0], limit))
            plan.settled.append(c)
            continue
        value = (command.transaction_id, limit, unit) + (() if wanted_ahead is None else (wanted_ahead,))
        if not gate.open(key, value):
            continue
        anchor = schedule_anchor(now) if ahead is not None else None
        request = ProfileRequest(
            purpose="Tx",
            connector_id=c,
            profile_id=profile_id_for(c),
            stack_level=1,
            limit=limit,
            unit=unit,
            number_phases=command.phases,
            transaction_id=command.transaction_id,
            start_schedule=anchor,
            next_period=None
            if ahead is None or anchor is None
            else (math.floor((ahead[0] - anchor).total_seconds()), ahead[1]),
        )
        then = None if ahead is None else (ahead[0], ahead[2], ahead[1] if unit == "A" else None)
        if not increase:
            reason = "ttl_fallback" if stale else "decrease" if kw < in_force - _EPS_KW else "resend"
            decreases.append((kw - in_force, Call(key, request, reason, kw, command, then)))
            continue
        debounce_end = (state.changed_at or now) + timedelta(seconds=config.increase_debounce_s)
        if debounce_end > now:
            plan.held_back[c] = HeldBack("debounce")
            release.append(debounce_end)
            continue
        blocked = check_increase(c, kw, limit if unit == "A" else None)
        if blocked is not None:
            plan.held_back[c] = HeldBack(why_blocked(blocked), blocked)
            if blocked.until is not None:
                release.append(datetime.fromtimestamp(blocked.until, now.tzinfo))
            continue
        increases.append(
            (kw - in_force, Call(key, request, "ttl_fallback" if stale else "increase", kw, command, then))
        )
    station = _station_calls(unit, info, safe_kw, phases, voltage, plan.stale, sent, ttl, now, gate, wake)
    plan.calls = (
        [call for _, call in sorted(decreases, key=lambda d: d[0])]
        + station
        + [call for _, call in sorted(increases, key=lambda d: -d[0])]
    )
    plan.forget_retries = gate.forget
    plan.release_at = min(release) if release else None
    wake += release
    plan.wake_at = min(wake) if wake else None
    plan.retry_at = min(gate.ready_at) if gate.ready_at else None
    return plan


def _clear_tx(state: ConnectorState, sent: Sent, gate: _RetryGate) -> Call | None:
    """ClearChargingProfile of a TxProfile whose setpoint was tombstoned while its transaction runs (OCPP 1.6
    section 5.5, 2.0.1 K10), if this connection installed one."""
    c, cleared = state.connector_id, state.cleared_tx
    if cleared is None or state.active_transaction != cleared or ("Tx", c) not in sent:
        return None
    if not gate.open(("ClearTx", c), cleared):
        return None
    return Call(("ClearTx", c), ClearRequest(profile_id_for(c), c), "clear_tx")


def _station_calls(
    unit: RateUnit,
    info: ChargerInfo | None,
    safe_kw: float | None,
    phases: int,
    voltage: float,
    stale: bool,
    sent: Sent,
    ttl: float | None,
    now: datetime,
    gate: _RetryGate,
    wake: list[datetime],
) -> list[Call]:
    """Fail-safe station maximum and TxDefaultProfile, then clearing or renewing the lift (appends the
    renewal time to ``wake``)."""
    if safe_kw is None or info is None:
        return []
    calls: list[Call] = []
    anchor = (now - timedelta(days=1)).replace(microsecond=0)
    safe_limit, _ = to_unit(safe_kw, unit, phases, voltage)
    floor_limit = FLOOR_A if unit == "A" else floor01(FLOOR_A * phases * voltage)
    wanted = [
        (
            ("StationMax", 0),
            ProfileRequest("StationMax", 0, STATION_MAX_ID, 0, safe_limit, unit, phases, start_schedule=anchor),
        ),
        (("TxDefault", 0), ProfileRequest("TxDefault", 0, TX_DEFAULT_ID, 0, floor_limit, unit, phases)),
    ]
    for key, request in wanted:
        if sent.get(key) != Installed(request.limit, unit) and gate.open(key, (request.limit, unit)):
            calls.append(Call(key, request, "failsafe"))
    lift = sent.get(("Lift", 0))
    if stale:
        if lift != LIFT_CLEARED and gate.open(("ClearLift", 0), None):
            calls.insert(0, Call(("ClearLift", 0), ClearRequest(STATION_LIFT_ID, 0), "clear_lift"))
        return calls
    if sent.get(("TxDefault", 0)) != Installed(floor_limit, unit):
        return calls  # no lift until new transactions are known to start at the floor
    rating_limit, _ = to_unit(info.rated_power_kw, unit, phases, voltage)
    installed = lift if isinstance(lift, Installed) else None
    renew_at = None
    if installed is not None and installed.accepted_at is not None and ttl is not None:
        renew_at = installed.accepted_at + timedelta(seconds=ttl / 2)
    if (
        installed is None
        or (installed.limit, installed.unit) != (rating_limit, unit)
        or (renew_at is not None and now >= renew_at)
    ):
        valid_to = None if ttl is None else now + timedelta(seconds=ttl)
        request = ProfileRequest(
            "StationMax",
            0,
            STATION_LIFT_ID,
            1,
            rating_limit,
            unit,
            phases,
            start_schedule=anchor,
            valid_to=valid_to,
        )
        if gate.open(("Lift", 0), (rating_limit, unit)):
            calls.append(Call(("Lift", 0), request, "lift"))
    elif renew_at is not None:
        wake.append(renew_at)
    return calls
