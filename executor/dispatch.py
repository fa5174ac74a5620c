"""The per-charger dispatcher: the async loop that makes one call at a time on a charger's connection.

Each connected charger has one :class:`ChargerDispatcher`. After the connection opens it waits for the
charger's first message (a BootNotification, normally), asks which charging rate units it accepts
(GetConfiguration ``ChargingScheduleAllowedChargingRateUnit`` in 1.6, GetVariables
``SmartChargingCtrlr.RateUnit`` in 2.0.1), and from then on loops: plan, send, record the answer, plan
again; with nothing due it sleeps until woken, until a debounce, lag, TTL or lift renewal is due on the
clock, or until a retry is due. What to send is decided by :func:`executor.planning.plan_charger` from the
desired state (:mod:`executor.desired`), the ledger (:mod:`executor.ledger`) and what this connection
installed: decreases first (the largest cut first), then the fail-safe station-wide profiles and the lift,
then increases that are debounced and fit the ledger. This module owns what needs the connection and time:

- at most one call in flight; while it is, newer setpoints overwrite the desired value, so rapid changes
  collapse into one more call with the latest value;
- the ledger hears of every TxProfile call when it is sent and when it is answered (in-flight accounting;
  a dropped connection counts as ``Lost``: it may have been applied);
- Rejected, CallError and Timeout answers are retried after ``retry_initial_s`` x 2^(n-1) real seconds (at
  most ``retry_max_s``); ``NotSupported`` (or a CALLERROR ``NotImplemented`` / ``NotSupported``) is not
  retried for the same value; a newer value goes out at once;
- every SetChargingProfile and ClearChargingProfile answer is published on ``ocpp.setpoint.acks``, and every
  decision and call is a DEBUG record with the charger and the reason (:mod:`executor.dispatch_log`);
- a BootNotification on the connection (the charger may have rebooted) forgets what was installed, so
  everything is installed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from websockets.exceptions import ConnectionClosed

from executor.config import ExecutorConfig
from executor.desired import SetpointTable, Slot
from executor.dispatch_log import call_answered, call_sent, deadband_skipped, hold, retry_scheduled
from executor.ledger import Ledger
from executor.metrics import ExecutorStats
from executor.ocpp.station import CallOutcome, ProfileRequest, RateUnit, Station
from executor.planning import (
    LIFT_CLEARED,
    Call,
    ConnectorState,
    Installed,
    Key,
    RetryState,
    plan_charger,
)
from executor.topology import Topology
from pipeline.contracts.topics import SetpointAck

__all__ = ["ChargerDispatcher", "DispatchContext"]

log = logging.getLogger(__name__)

_URGENT = frozenset({"decrease", "resend", "clear_tx"})
"""Call reasons that go before the rate unit is asked again when the charger's unit is already known: what
only lowers or restates a limit (:mod:`executor.planning`, rule 1)."""


@dataclass
class DispatchContext:
    """What every dispatcher shares (built by :class:`executor.service.Executor`).

    ``active_transaction(charge_point_id, connector_id)`` is the connector's open transaction id or
    ``None``; ``publish_ack`` puts a record on ``ocpp.setpoint.acks``; ``changed(charge_point_id)`` says the
    ledger moved for that charger (its site re-plans); ``clock`` has ``now()`` (aware datetime) and
    ``async sleep(seconds)``.
    """

    table: SetpointTable
    ledger: Ledger
    topology: Topology
    active_transaction: Callable[[str, int], str | None]
    publish_ack: Callable[[SetpointAck], Awaitable[None]]
    changed: Callable[[str], None]  # ledger moved for this charger: wake its site
    clock: Any
    stats: ExecutorStats
    config: ExecutorConfig
    known_units: dict[str, RateUnit] = field(default_factory=dict)
    """The chargingRateUnit each charger last accepted a profile in (this run, or a previous run's acks)."""


class ChargerDispatcher:
    """Reconciles one connected charger towards its desired profiles; at most one call in flight.

    ``epoch`` numbers the charger's connections (a newer connection replaces this dispatcher); ``unit`` is
    the chargingRateUnit agreed with the charger; ``held_back`` maps a connector whose increase waits to why
    (``debounce``, ``lag: ...`` or ``headroom: ...``, :func:`executor.planning.why_blocked`) and
    ``release_at`` (clock) is the earliest time one of them may go.
    """

    def __init__(self, charge_point_id: str, station: Station, epoch: int, ctx: DispatchContext) -> None:
        self.charge_point_id = charge_point_id
        self.station = station
        self.epoch = epoch
        self._ctx = ctx
        self.unit: RateUnit = ctx.config.charging_rate_unit
        self._sent: dict[Key, Installed | Literal["cleared"]] = {}  # accepted on this connection (planning.Sent)
        self._retries: dict[Key, RetryState] = {}
        self._stale = False
        self._prepared = False
        self.held_back: dict[int, str] = {}
        self.release_at: datetime | None = None  # when a held-back increase may go (debounce / lag)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.busy = True  # planning or calling; False only while it sleeps with nothing due
        self._due: tuple[datetime | None, float | None] = (None, None)

    def start(self) -> asyncio.Task[None]:
        """Start the loop as a task (stopped by :meth:`cancel`, or ends when the connection closes)."""
        self._task = asyncio.create_task(self._run(), name=f"dispatch-{self.charge_point_id}")
        return self._task

    def wake(self) -> None:
        """Re-plan (call after any change that may make a send due)."""
        self.busy = True
        self._wake.set()

    def idle(self, now: datetime) -> bool:
        """Asleep, and nothing it sleeps towards is due at ``now`` (clock) or now (monotonic)."""
        clock_at, real_at = self._due
        return (
            not self.busy and (clock_at is None or clock_at > now) and (real_at is None or real_at > time.monotonic())
        )

    def busy_with(self, now: datetime) -> str:
        """Why :meth:`idle` is false at ``now``, for a log line."""
        clock_at, real_at = self._due
        if self.busy:
            return "planning or calling"
        if clock_at is not None and clock_at <= now:
            return f"due at {clock_at.isoformat()} (clock)"
        if real_at is not None:
            return f"due {real_at - time.monotonic():.3f} s from now (real)"
        return "idle"

    def rebooted(self) -> None:
        """A BootNotification on this connection: profiles may be gone, install everything again."""
        if self._prepared:
            self._sent.clear()
            self._retries.clear()
            self._ctx.ledger.rebooted(self.charge_point_id)
        self.wake()

    def installed_tx(self) -> dict[int, Installed]:
        """``{connector_id: TxProfile}`` the charger accepted on this connection (limit in its unit)."""
        return {key[1]: sent for key, sent in self._sent.items() if key[0] == "Tx" and isinstance(sent, Installed)}

    def cancel(self) -> None:
        """Stop the loop (a call in flight is abandoned)."""
        if self._task is not None:
            self._task.cancel()

    # -- the loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self.station.wait_first_message(self._ctx.config.boot_wait_s)
            known = self._ctx.known_units.get(self.charge_point_id)
            if known is None:
                await self._negotiate_unit()
            else:
                self.unit = known
            self._prepared = True
            while True:
                self._wake.clear()
                try:  # a defect in planning or sending must not stop the charger's dispatcher for good
                    call, slot, clock_at, real_at = self._plan()
                    if known is not None and (call is None or call.reason not in _URGENT):
                        known = None  # the urgent calls went in the unit the charger last accepted; now ask
                        await self._verify_unit()
                        continue
                    if call is None:
                        self.busy = self._wake.is_set()
                        self._due = (clock_at, real_at)
                        await self._sleep(clock_at, real_at)
                        self.busy = True
                        continue
                    await self._execute(call, slot)
                except ConnectionClosed:
                    raise
                except Exception:
                    log.exception("%s: dispatch failed", self.charge_point_id)
                    await asyncio.sleep(1.0)
        except ConnectionClosed:
            log.info("%s: connection closed; dispatcher stops", self.charge_point_id)

    async def _sleep(self, clock_at: datetime | None, real_at: float | None) -> None:
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if clock_at is not None:
            waits.append(asyncio.ensure_future(self._sleep_until(clock_at)))
        if real_at is not None:
            waits.append(asyncio.ensure_future(asyncio.sleep(max(0.0, real_at - time.monotonic()))))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _sleep_until(self, when: datetime) -> None:
        # The delay is taken when this coroutine runs, not when it was created: a clock that moved
        # in between (a busy loop under a fast simulated clock) must not push the wake-up later.
        await self._ctx.clock.sleep_until(when)

    async def _verify_unit(self) -> None:
        """Ask the charger for its units after starting in the unit it last accepted a profile in
        (:attr:`DispatchContext.known_units`); if the negotiated unit differs, everything this connection
        installed is forgotten so it is sent again in the new unit."""
        before = self.unit
        await self._negotiate_unit(keep=before)
        if self.unit != before:
            log.warning(
                "%s: charging rate unit is now %s (was %s): profiles are sent again",
                self.charge_point_id,
                self.unit,
                before,
            )
            self._sent.clear()
            self._retries.clear()

    async def _negotiate_unit(self, keep: RateUnit | None = None) -> None:
        """Use the preferred unit if the charger accepts it, else one it does; when it does not say, the
        preferred unit, or ``keep`` (a unit it accepted a profile in before)."""
        started = time.monotonic()
        action = "GetConfiguration" if self.station.subprotocol == "ocpp1.6" else "GetVariables"
        self._ctx.stats.call_sent(action)
        call_sent(self.charge_point_id, action, None, "rate_unit")
        try:
            units = await self.station.rate_units()
        except BaseException:
            self._ctx.stats.call_abandoned()
            raise
        status, elapsed = "Accepted" if units else "Unknown", time.monotonic() - started
        self._ctx.stats.call_answered(action, status, elapsed)
        call_answered(self.charge_point_id, action, None, status, elapsed)
        preferred = self._ctx.config.charging_rate_unit
        if not units:
            self.unit = keep or preferred
        else:
            self.unit = preferred if preferred in units else units[0]
        log.info("%s: charging rate unit %s (charger accepts %s)", self.charge_point_id, self.unit, units)

    # -- planning --------------------------------------------------------------------------------------

    def _plan(self) -> tuple[Call | None, Slot | None, datetime | None, float | None]:
        """The next call to make and the slot it takes up, else when to look again (clock time, monotonic
        time). The decision is :func:`executor.planning.plan_charger`'s; this applies it to the
        dispatcher's state and logs it."""
        ctx, cp = self._ctx, self.charge_point_id
        now = ctx.clock.now()
        previous, self.held_back = self.held_back, {}
        slots = ctx.table.slots(cp)
        connectors = [
            ConnectorState(
                connector_id=connector_id,
                command=slot.command,
                changed_at=slot.changed_at,
                pending=slot.pending,
                cleared_tx=slot.cleared_tx,
                active_transaction=ctx.active_transaction(cp, connector_id),
                in_force_kw=ctx.ledger.in_force_kw(cp, connector_id, now),
                in_force_a=ctx.ledger.in_force_a(cp, connector_id, now),
            )
            for connector_id, slot in slots.items()
        ]
        plan = plan_charger(
            unit=self.unit,
            info=ctx.topology.charger(cp),
            safe_kw=ctx.topology.safe_share_kw(cp, ctx.config.failsafe_fraction),
            connectors=connectors,
            sent=self._sent,
            retries=self._retries,
            config=ctx.config,
            now=now,
            now_mono=time.monotonic(),
            check_increase=lambda connector_id, kw, a: ctx.ledger.check_increase(cp, connector_id, kw, now, a),
            schedule_periods=getattr(self.station, "schedule_periods", 1),
        )
        if plan is None:  # unmanaged: nothing is sent
            return None, None, None, None
        for key in plan.forget_retries:
            self._retries.pop(key, None)
        for skip in plan.deadband:
            deadband_skipped(cp, skip.connector_id, skip.held, skip.wanted, self.unit)
        for connector_id in plan.settled:
            slots[connector_id].pending = False
        for connector_id, held in plan.held_back.items():
            hold(cp, self.held_back, previous, connector_id, held.why, held.blocked)
        if plan.stale and not self._stale:
            ctx.stats.failsafe("stale")
            log.warning(
                "%s: setpoints older than %ss: falling back to the safe share",
                cp,
                ctx.config.setpoint_ttl_s,
                extra={"charge_point_id": cp, "reason": "ttl_expired"},
            )
        self._stale = plan.stale
        self.release_at = plan.release_at
        call = plan.calls[0] if plan.calls else None
        slot = slots.get(call.key[1]) if call is not None and call.key[0] == "Tx" else None
        return call, slot, plan.wake_at, plan.retry_at

    # -- sending ---------------------------------------------------------------------------------------

    async def _execute(self, call: Call, slot: Slot | None) -> None:
        """Make ``call`` (``slot`` is the connector's desired state a TxProfile takes up), record the
        answer, publish its ack. Raises ``ConnectionClosed`` if the connection is gone."""
        ctx, cp = self._ctx, self.charge_point_id
        request = call.request
        kind, connector_id = call.key
        command = call.command if kind == "Tx" else None
        purpose = request.purpose if isinstance(request, ProfileRequest) else None
        label = "StationMaxLift" if kind == "Lift" else purpose
        action = "SetChargingProfile" if purpose else "ClearChargingProfile"
        if command is not None:
            ctx.ledger.sending(cp, connector_id, call.kw or 0.0, _limit_a(request), call.then)
            if slot is not None:
                slot.pending = False
        sent_at = ctx.clock.now()
        started = time.monotonic()
        ctx.stats.call_sent(action, label)
        call_sent(cp, action, request, call.reason)
        try:
            if isinstance(request, ProfileRequest):
                outcome: CallOutcome = await self.station.set_profile(request)
            else:
                outcome = await self.station.clear_profile(request)
        except BaseException:
            ctx.stats.call_abandoned()
            if command is not None:
                ctx.ledger.answered(
                    cp,
                    connector_id,
                    command.transaction_id,
                    call.kw or 0.0,
                    "Lost",
                    ctx.clock.now(),
                    _limit_a(request),
                    call.then,
                )
                ctx.changed(cp)
            raise
        now = ctx.clock.now()
        ctx.stats.call_answered(action, outcome.status, time.monotonic() - started, label)
        call_answered(cp, action, request, outcome, time.monotonic() - started)
        self._record(call, slot, outcome, now)
        ctx.changed(cp)
        if outcome.status != "Accepted":
            what = f"{label} connector {connector_id}" + (
                f" {request.limit}{request.unit}" if isinstance(request, ProfileRequest) else ""
            )
            # a TxProfile the charger refused as its transaction ended meanwhile (it needs its transaction: OCPP
            # 1.6 section 3.13.1, 2.0.1 K01.FR.03) is a race, not a fault: INFO
            ended = (
                isinstance(request, ProfileRequest)
                and request.transaction_id is not None
                and ctx.active_transaction(cp, connector_id) != request.transaction_id
            )
            log.log(
                logging.INFO if ended else logging.WARNING,
                "%s: %s %s: %s %s%s",
                cp,
                action,
                what,
                outcome.status,
                outcome.error or "",
                " (its transaction has ended)" if ended else "",
                extra={"charge_point_id": cp, "action": action, "status": outcome.status},
            )
        await self._ack(call, outcome, action, sent_at, None if outcome.status == "Timeout" else now)

    def _record(self, call: Call, slot: Slot | None, outcome: CallOutcome, now: datetime) -> None:
        """Apply an answer: the ledger, a retry after a failure, else what is installed on this connection."""
        ctx, cp, request = self._ctx, self.charge_point_id, call.request
        kind, connector_id = call.key
        command = call.command if kind == "Tx" else None
        if command is not None:
            a = _limit_a(request)
            ctx.ledger.answered(
                cp, connector_id, command.transaction_id, call.kw or 0.0, outcome.status, now, a, call.then
            )
        if outcome.status != "Accepted":
            self._schedule_retry(call, outcome)
            return
        self._retries.pop(call.key, None)
        if isinstance(request, ProfileRequest):
            ctx.known_units[cp] = request.unit
            if kind == "Tx":
                ahead = request.next_period
                self._sent[call.key] = Installed(
                    request.limit,
                    request.unit,
                    transaction_id=request.transaction_id,
                    next_at=call.then[0] if call.then is not None else None,
                    next_limit=ahead[1] if ahead is not None else None,
                )
                if slot is not None and slot.command == call.command:
                    ctx.stats.dispatched(time.monotonic() - slot.received_mono)
            elif kind == "Lift":
                self._sent[call.key] = Installed(request.limit, request.unit, accepted_at=now)
            else:
                self._sent[call.key] = Installed(request.limit, request.unit)
                scale = request.number_phases * self._voltage() if request.unit == "A" else 1
                ctx.ledger.station_profile(cp, request.purpose, request.limit * scale / 1000.0, now, _limit_a(request))
                if kind == "StationMax":
                    ctx.stats.failsafe("boot")
        elif kind == "ClearTx":
            self._sent.pop(("Tx", connector_id), None)
            ctx.table.slot(cp, connector_id).cleared_tx = None
            ctx.ledger.tx_cleared(cp, connector_id, now)
        else:  # ClearLift
            self._sent[("Lift", 0)] = LIFT_CLEARED

    def _schedule_retry(self, call: Call, outcome: CallOutcome) -> None:
        """A failed call waits ``retry_initial_s`` x 2^(n-1) real seconds (at most ``retry_max_s``) before
        the same value is tried again; ``NotSupported`` (or a CALLERROR ``NotImplemented`` /
        ``NotSupported``) never retries it."""
        ctx, request = self._ctx, call.request
        kind, connector_id = call.key
        value: object = None
        if isinstance(request, ProfileRequest):
            ahead = (call.then[0], request.next_period[1]) if call.then and request.next_period else None
            value = (
                (request.transaction_id, request.limit, request.unit) + (() if ahead is None else (ahead,))
                if kind == "Tx"
                else (request.limit, request.unit)
            )
        elif kind == "ClearTx":
            value = ctx.table.slot(self.charge_point_id, connector_id).cleared_tx
        previous = self._retries.get(call.key)
        failures = previous.failures + 1 if previous is not None and previous.value == value else 1
        delay = min(ctx.config.retry_max_s, ctx.config.retry_initial_s * 2 ** (failures - 1))
        unsupported = outcome.status == "NotSupported" or (outcome.error or "").startswith(
            ("NotImplemented", "NotSupported")
        )
        self._retries[call.key] = RetryState(value, failures, time.monotonic() + delay, retryable=not unsupported)
        retry_scheduled(
            self.charge_point_id, kind, connector_id, outcome.status, failures, None if unsupported else delay
        )

    def _voltage(self) -> float:
        info = self._ctx.topology.charger(self.charge_point_id)
        return info.voltage_v if info is not None else 230.0

    async def _ack(
        self, call: Call, outcome: CallOutcome, action: str, sent_at: datetime, answered_at: datetime | None
    ) -> None:
        """Publish the answer on ``ocpp.setpoint.acks`` (a failure to publish is logged, not raised)."""
        request, command = call.request, call.command
        profile = request if isinstance(request, ProfileRequest) else None
        kind, connector_id = call.key
        purpose = {"Lift": "StationMaxLift", "ClearLift": "StationMaxLift", "ClearTx": "Tx"}.get(kind, kind)
        ack = SetpointAck(
            charge_point_id=self.charge_point_id,
            connector_id=connector_id,
            session_id=command.session_id if command is not None else None,
            action=action,
            purpose=purpose,
            setpoint_kw=command.setpoint_kw if command is not None else None,
            limit=profile.limit if profile is not None else None,
            charging_rate_unit=profile.unit if profile is not None else None,
            status=outcome.status,
            error=outcome.error,
            computed_at=command.computed_at if command else None,
            sent_at=sent_at,
            answered_at=answered_at,
        )
        try:
            await self._ctx.publish_ack(ack)
        except Exception:
            log.exception("%s: could not publish ack", self.charge_point_id)


def _limit_a(request: object) -> float | None:
    """A profile's limit in A per phase (the ledger's per-phase accounting), ``None`` for W or a clear."""
    return request.limit if isinstance(request, ProfileRequest) and request.unit == "A" else None
