"""The per-charger dispatcher: one call in flight, decreases first, increases only when they are safe.

Each connected charger has one :class:`ChargerDispatcher`. After the connection opens it waits for the
charger's first message (a BootNotification, normally), asks which charging rate units it accepts, installs
the fail-safe profiles, and from then on plans one call at a time from the desired state
(:mod:`executor.desired`) and the ledger (:mod:`executor.ledger`):

1. **Decreases** of TxProfiles go out at once, the largest cut first (and so does a resend of what is
   already in force, after a reconnect).
2. **Fail-safe** station-wide profiles (:class:`executor.config.ExecutorConfig`): the station maximum at the charger's safe share
   (:meth:`executor.topology.Topology.safe_share_kw`; ChargePointMaxProfile on connector 0 in 1.6,
   ChargingStationMaxProfile on EVSE 0 in 2.0.1, stack level 0), and the TxDefaultProfile at the floor
   (6 A x phases) so a new transaction starts low until its setpoint arrives. While the charger's setpoints
   are fresh and its TxDefaultProfile is in place, a *lift* (a station maximum at its rating, stack level 1,
   ``validTo`` = now + TTL, renewed at half-life) lets TxProfiles use the allocation; when a setpoint is older
   than the TTL the lift is cleared (and lapses by itself if the executor is gone), so the safe share
   applies again, and each TxProfile falls back to min(setpoint, safe share / connectors).
3. **Increases** wait for the debounce (the desired value unchanged for ``increase_debounce_s``) and for
   the ledger: on the charger's node and site, every other connector's bound plus the new limit must fit
   the latest ``node_limit_kw`` / ``site_limit_kw`` (break before make, in-flight accounting).

A deadband skips increases smaller than ``deadband_a`` (A; for W scaled by phases x voltage); decreases
always go out, so a skipped cut can never hold headroom another connector was given. While a call is in
flight newer setpoints overwrite the desired value, so rapid changes collapse into one more call with the
latest value. Rejected, CallError and Timeout answers are retried after ``retry_initial_s`` x 2^(n-1) real
seconds (at most ``retry_max_s``); a newer value goes out at once. Every SetChargingProfile and
ClearChargingProfile answer is published on ``ocpp.setpoint.acks``, and every decision and call is a
DEBUG record with the charger and the reason (:mod:`executor.dispatch_log`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from websockets.exceptions import ConnectionClosed

from executor.config import ExecutorConfig
from executor.desired import SetpointTable, Slot
from executor.dispatch_log import call_answered, call_sent, deadband_skipped, hold, retry_scheduled, why_blocked
from executor.ledger import Ledger
from executor.metrics import ExecutorStats
from executor.ocpp.station import CallOutcome, ClearRequest, ProfileRequest, RateUnit, Station
from executor.topology import Topology
from pipeline.contracts.topics import SetpointAck, SetpointCommand

__all__ = ["ChargerDispatcher", "DispatchContext", "profile_id_for"]

log = logging.getLogger(__name__)

STATION_MAX_ID, STATION_LIFT_ID, TX_DEFAULT_ID, TX_PROFILE_ID_BASE = 1, 2, 3, 1000
FLOOR_A = 6.0
EPS = 1e-9


def profile_id_for(connector_id: int) -> int:
    """The chargingProfileId of a connector's TxProfile: ``1000 + connector_id`` (stable, so each new
    profile replaces the previous one: OCPP 1.6 section 5.16.2, OCPP 2.0.1 K01.FR.05)."""
    return TX_PROFILE_ID_BASE + connector_id


def floor01(value: float) -> float:
    """Round down to 0.1 (the resolution both versions accept), so rounding never lifts a limit."""
    return math.floor(value * 10 + 1e-6) / 10


@dataclass
class DispatchContext:
    """What every dispatcher shares (built by :class:`executor.service.Executor`)."""

    table: SetpointTable
    ledger: Ledger
    topology: Topology
    active_transaction: Callable[[str, int], str | None]
    publish_ack: Callable[[SetpointAck], Awaitable[None]]
    changed: Callable[[str], None]  # ledger moved for this charger: wake its site
    clock: Any
    stats: ExecutorStats
    config: ExecutorConfig


@dataclass
class _Job:
    key: tuple[str, int]  # (purpose or "Lift" / "ClearLift" / "ClearTx", connector)
    request: ProfileRequest | ClearRequest
    kw: float | None = None
    command: SetpointCommand | None = None
    slot: Slot | None = None
    reason: str = ""  # why it is sent (executor.dispatch_log)


@dataclass
class _Retry:
    value: Any
    failures: int
    ready_at: float  # monotonic
    retryable: bool


class ChargerDispatcher:
    """Reconciles one connected charger towards its desired profiles; at most one call in flight."""

    def __init__(self, charge_point_id: str, station: Station, epoch: int, ctx: DispatchContext) -> None:
        self.charge_point_id = charge_point_id
        self.station = station
        self.epoch = epoch
        self._ctx = ctx
        self.unit: RateUnit = ctx.config.charging_rate_unit
        self._sent: dict[tuple[str, int], Any] = {}  # what the charger accepted on this connection
        self._retries: dict[tuple[str, int], _Retry] = {}
        self._stale = False
        self._prepared = False
        self.held_back: dict[int, str] = {}
        self.release_at: datetime | None = None  # when a held-back increase may go (debounce / lag)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.busy = True  # planning or calling; False only while it sleeps with nothing due
        self._due: tuple[datetime | None, float | None] = (None, None)

    def start(self) -> asyncio.Task[None]:
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

    def rebooted(self) -> None:
        """A BootNotification on this connection: profiles may be gone, install everything again."""
        if self._prepared:
            self._sent.clear()
            self._retries.clear()
            self._ctx.ledger.rebooted(self.charge_point_id)
        self.wake()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # -- the loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self.station.wait_first_message(self._ctx.config.boot_wait_s)
            await self._negotiate_unit()
            self._prepared = True
            while True:
                self._wake.clear()
                job, clock_at, real_at = self._plan()
                if job is None:
                    self.busy = self._wake.is_set()
                    self._due = (clock_at, real_at)
                    await self._sleep(clock_at, real_at)
                    self.busy = True
                    continue
                try:
                    await self._execute(job)
                except ConnectionClosed:
                    raise
                except Exception:
                    log.exception("%s: dispatch failed", self.charge_point_id)
                    await asyncio.sleep(1.0)
        except ConnectionClosed:
            log.info("%s: connection closed; dispatcher stops", self.charge_point_id)

    async def _sleep(self, clock_at: datetime | None, real_at: float | None) -> None:
        waits = [asyncio.ensure_future(self._wake.wait())]
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
        await self._ctx.clock.sleep(max(0.0, (when - self._ctx.clock.now()).total_seconds()))

    async def _negotiate_unit(self) -> None:
        """Use the preferred unit if the charger accepts it, else one it does (unknown: the preferred)."""
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
        if units and preferred not in units:
            self.unit = units[0]
        log.info("%s: charging rate unit %s (charger accepts %s)", self.charge_point_id, self.unit, units)

    # -- planning --------------------------------------------------------------------------------------

    def _to_unit(self, kw: float, phases: int, voltage_v: float) -> tuple[float, float]:
        """(limit in the charger's unit rounded down, the kW that limit allows)."""
        if self.unit == "A":
            limit = floor01(kw * 1000.0 / (phases * voltage_v))
            return limit, limit * phases * voltage_v / 1000.0
        limit = floor01(kw * 1000.0)
        return limit, limit / 1000.0

    def desired_limit(
        self, command: SetpointCommand, stale: bool, safe_kw: float | None, connectors: int
    ) -> tuple[float, float]:
        """The TxProfile limit for a command, ``(limit in unit, kW)``: ``setpoint_a`` or ``setpoint_kw`` x
        1000 rounded down to 0.1; when the setpoint is older than the TTL, at most the safe share per
        connector (0 if that is below the floor: never between 0 and the floor)."""
        if self.unit == "A":
            limit = floor01(command.setpoint_a)
            kw = limit * command.phases * command.voltage_v / 1000.0
        else:
            limit = floor01(command.setpoint_kw * 1000.0)
            kw = limit / 1000.0
        if stale and safe_kw is not None and kw > safe_kw / connectors + EPS:
            cap = safe_kw / connectors
            if cap * 1000.0 < FLOOR_A * command.phases * command.voltage_v - EPS:
                return 0.0, 0.0
            return self._to_unit(cap, command.phases, command.voltage_v)
        return limit, kw

    def _retry_gate(self, key: tuple[str, int], value: Any, real: list[float]) -> bool:
        """True if ``key`` may be sent with ``value`` now (no failed attempt of the same value waiting)."""
        retry = self._retries.get(key)
        if retry is None or retry.value != value:
            self._retries.pop(key, None)
            return True
        if not retry.retryable:
            return False
        if time.monotonic() < retry.ready_at:
            real.append(retry.ready_at)
            return False
        return True

    def _plan(self) -> tuple[_Job | None, datetime | None, float | None]:
        """The next call to make, else when to look again (clock time, monotonic time)."""
        ctx, cp = self._ctx, self.charge_point_id
        now = ctx.clock.now()
        clock: list[datetime] = []
        real: list[float] = []
        release: list[datetime] = []
        previous, self.held_back = self.held_back, {}
        info = ctx.topology.charger(cp)
        if info is not None and not info.managed:
            return None, None, None
        phases, voltage = (info.phases, info.voltage_v) if info else (3, 230.0)
        connectors = info.connectors if info else 1
        safe_kw = ctx.topology.safe_share_kw(cp, ctx.config.failsafe_fraction)
        ttl = ctx.config.setpoint_ttl_s
        decreases: list[tuple[float, _Job]] = []
        increases: list[tuple[float, _Job]] = []
        stale_any = False
        for connector_id, slot in list(ctx.table.slots(cp).items()):
            active = ctx.active_transaction(cp, connector_id)
            command = slot.command
            if command is None:
                job = self._clear_tx_job(connector_id, slot, active, real)
                if job is not None:
                    decreases.append((-math.inf, job))
                continue
            if active != command.transaction_id:
                continue
            age = (now - command.computed_at).total_seconds()
            stale = ttl is not None and age > ttl
            stale_any |= stale
            if ttl is not None and not stale:
                clock.append(command.computed_at + timedelta(seconds=ttl + 0.001))
            limit, kw = self.desired_limit(command, stale, safe_kw, connectors)
            key = ("Tx", connector_id)
            value = (command.transaction_id, limit, self.unit)
            held = self._sent.get(key)
            in_force = ctx.ledger.in_force_kw(cp, connector_id)
            increase = kw > in_force + 1e-6
            if (
                held is not None
                and held[0] == command.transaction_id
                and (held[1] == limit or (increase and self._within_deadband(held[1], limit, command)))
            ):
                if slot.pending and held[1] != limit:
                    deadband_skipped(cp, connector_id, held[1], limit, self.unit)
                slot.pending = False
                continue
            if not self._retry_gate(key, value, real):
                continue
            request = ProfileRequest(
                purpose="Tx",
                connector_id=connector_id,
                profile_id=profile_id_for(connector_id),
                stack_level=1,
                limit=limit,
                unit=self.unit,
                number_phases=command.phases,
                transaction_id=command.transaction_id,
            )
            job = _Job(key, request, kw, command, slot, "ttl_fallback" if stale else "increase")
            if not increase:
                job.reason = job.reason if stale else "decrease" if kw < in_force - 1e-6 else "resend"
                decreases.append((kw - in_force, job))
                continue
            debounce_end = (slot.changed_at or now) + timedelta(seconds=ctx.config.increase_debounce_s)
            if debounce_end > now:
                hold(cp, self.held_back, previous, connector_id, "debounce")
                release.append(debounce_end)
                continue
            blocked = ctx.ledger.check_increase(cp, connector_id, kw, now)
            if blocked is not None:
                hold(cp, self.held_back, previous, connector_id, why_blocked(blocked), blocked)
                if blocked.until is not None:
                    release.append(datetime.fromtimestamp(blocked.until, now.tzinfo))
                continue
            increases.append((kw - in_force, job))
        if stale_any and not self._stale:
            ctx.stats.failsafe("stale")
            log.warning(
                "%s: setpoints older than %ss: falling back to the safe share",
                cp,
                ttl,
                extra={"charge_point_id": cp, "reason": "ttl_expired"},
            )
        self._stale = stale_any
        station = self._station_jobs(safe_kw, info, phases, voltage, stale_any, now, clock, real)
        self.release_at = min(release) if release else None
        clock += release
        order = (
            [j for _, j in sorted(decreases, key=lambda d: d[0])]
            + station
            + [j for _, j in sorted(increases, key=lambda d: -d[0])]
        )
        return (order[0] if order else None), (min(clock) if clock else None), (min(real) if real else None)

    def _within_deadband(self, held: float, wanted: float, command: SetpointCommand) -> bool:
        band = self._ctx.config.deadband_a
        if self.unit == "W":
            band *= command.phases * command.voltage_v
        return abs(held - wanted) < band - 1e-9

    def _clear_tx_job(self, connector_id: int, slot: Slot, active: str | None, real: list[float]) -> _Job | None:
        """ClearChargingProfile for a TxProfile whose setpoint was tombstoned while its transaction runs."""
        key = ("ClearTx", connector_id)
        if slot.cleared_tx is None or active != slot.cleared_tx or ("Tx", connector_id) not in self._sent:
            return None
        if not self._retry_gate(key, slot.cleared_tx, real):
            return None
        return _Job(key, ClearRequest(profile_id_for(connector_id), connector_id), reason="clear_tx")

    def _station_jobs(
        self,
        safe_kw: float | None,
        info,
        phases: int,
        voltage: float,
        stale: bool,
        now: datetime,
        clock: list[datetime],
        real: list[float],
    ) -> list[_Job]:
        """Fail-safe station maximum and TxDefaultProfile, then clearing or renewing the lift."""
        if safe_kw is None or info is None:
            return []
        jobs: list[_Job] = []
        anchor = (now - timedelta(days=1)).replace(microsecond=0)
        safe_limit, _ = self._to_unit(safe_kw, phases, voltage)
        floor_limit = FLOOR_A if self.unit == "A" else floor01(FLOOR_A * phases * voltage)
        wanted = [
            (
                ("StationMax", 0),
                ProfileRequest(
                    "StationMax", 0, STATION_MAX_ID, 0, safe_limit, self.unit, phases, start_schedule=anchor
                ),
            ),
            (("TxDefault", 0), ProfileRequest("TxDefault", 0, TX_DEFAULT_ID, 0, floor_limit, self.unit, phases)),
        ]
        for key, request in wanted:
            if self._sent.get(key) != (request.limit, self.unit) and self._retry_gate(
                key, (request.limit, self.unit), real
            ):
                jobs.append(_Job(key, request, reason="failsafe"))
        ttl = self._ctx.config.setpoint_ttl_s
        lift = self._sent.get(("Lift", 0))
        if stale:
            if lift != "cleared" and self._retry_gate(("ClearLift", 0), None, real):
                jobs.insert(0, _Job(("ClearLift", 0), ClearRequest(STATION_LIFT_ID, 0), reason="clear_lift"))
            return jobs
        if self._sent.get(("TxDefault", 0)) != (floor_limit, self.unit):
            return jobs  # no lift until new transactions are known to start at the floor
        rating_limit, _ = self._to_unit(info.rated_power_kw, phases, voltage)
        renew_at = None
        if isinstance(lift, tuple) and ttl is not None:
            renew_at = lift[2] + timedelta(seconds=ttl / 2)
        if not isinstance(lift, tuple) or lift[:2] != (rating_limit, self.unit) or (renew_at and now >= renew_at):
            valid_to = None if ttl is None else now + timedelta(seconds=ttl)
            request = ProfileRequest(
                "StationMax",
                0,
                STATION_LIFT_ID,
                1,
                rating_limit,
                self.unit,
                phases,
                start_schedule=anchor,
                valid_to=valid_to,
            )
            if self._retry_gate(("Lift", 0), (rating_limit, self.unit), real):
                jobs.append(_Job(("Lift", 0), request, reason="lift"))
        elif renew_at is not None:
            clock.append(renew_at)
        return jobs

    # -- sending ---------------------------------------------------------------------------------------

    async def _execute(self, job: _Job) -> None:
        ctx, cp = self._ctx, self.charge_point_id
        request = job.request
        is_tx = job.key[0] == "Tx"
        purpose = request.purpose if isinstance(request, ProfileRequest) else None
        label = "StationMaxLift" if job.key[0] == "Lift" else purpose
        action = "SetChargingProfile" if purpose else "ClearChargingProfile"
        if is_tx:
            ctx.ledger.sending(cp, request.connector_id, job.kw or 0.0)
            if job.slot is not None:
                job.slot.pending = False
        sent_at = ctx.clock.now()
        started = time.monotonic()
        ctx.stats.call_sent(action, label)
        call_sent(cp, action, request, job.reason)
        try:
            if isinstance(request, ProfileRequest):
                outcome: CallOutcome = await self.station.set_profile(request)
            else:
                outcome = await self.station.clear_profile(request)
        except BaseException:
            ctx.stats.call_abandoned()
            if is_tx:
                ctx.ledger.answered(
                    cp, request.connector_id, request.transaction_id, job.kw or 0.0, "Lost", ctx.clock.now()
                )
                ctx.changed(cp)
            raise
        now = ctx.clock.now()
        ctx.stats.call_answered(action, outcome.status, time.monotonic() - started, label)
        call_answered(cp, action, request, outcome, time.monotonic() - started)
        self._record(job, outcome, now)
        ctx.changed(cp)
        if outcome.status != "Accepted":
            what = f"{label} connector {request.connector_id}" + (
                f" {request.limit}{request.unit}" if isinstance(request, ProfileRequest) else ""
            )
            log.warning(
                "%s: %s %s: %s %s",
                cp,
                action,
                what,
                outcome.status,
                outcome.error or "",
                extra={"charge_point_id": cp, "action": action, "status": outcome.status},
            )
        await self._ack(job, outcome, action, sent_at, None if outcome.status == "Timeout" else now)

    def _record(self, job: _Job, outcome: CallOutcome, now: datetime) -> None:
        ctx, cp, request = self._ctx, self.charge_point_id, job.request
        kind = job.key[0]
        if kind == "Tx":
            ctx.ledger.answered(cp, request.connector_id, request.transaction_id, job.kw or 0.0, outcome.status, now)
        if outcome.status != "Accepted":
            value: Any = None
            if isinstance(request, ProfileRequest):
                value = (
                    (request.transaction_id, request.limit, request.unit)
                    if kind == "Tx"
                    else (request.limit, request.unit)
                )
            elif kind == "ClearTx":
                value = ctx.table.slot(cp, request.connector_id).cleared_tx
            previous = self._retries.get(job.key)
            failures = previous.failures + 1 if previous is not None and previous.value == value else 1
            delay = min(ctx.config.retry_max_s, ctx.config.retry_initial_s * 2 ** (failures - 1))
            unsupported = outcome.status == "NotSupported" or (outcome.error or "").startswith(
                ("NotImplemented", "NotSupported")
            )
            self._retries[job.key] = _Retry(value, failures, time.monotonic() + delay, retryable=not unsupported)
            retry_scheduled(cp, kind, request.connector_id, outcome.status, failures, None if unsupported else delay)
            return
        self._retries.pop(job.key, None)
        if kind == "Tx":
            self._sent[job.key] = (request.transaction_id, request.limit, request.unit)
            if job.slot is not None and job.slot.command == job.command:
                ctx.stats.dispatched(time.monotonic() - job.slot.received_mono)
        elif kind == "ClearTx":
            self._sent.pop(("Tx", request.connector_id), None)
            ctx.table.slot(cp, request.connector_id).cleared_tx = None
            ctx.ledger.tx_cleared(cp, request.connector_id, now)
        elif kind == "ClearLift":
            self._sent[("Lift", 0)] = "cleared"
        elif kind == "Lift":
            self._sent[("Lift", 0)] = (request.limit, request.unit, now)
        else:
            self._sent[job.key] = (request.limit, request.unit)
            kw = request.limit * (request.number_phases * self._voltage() if request.unit == "A" else 1) / 1000.0
            ctx.ledger.station_profile(cp, request.purpose, kw, now)
            if kind == "StationMax":
                ctx.stats.failsafe("boot")

    def _voltage(self) -> float:
        info = self._ctx.topology.charger(self.charge_point_id)
        return info.voltage_v if info is not None else 230.0

    async def _ack(
        self, job: _Job, outcome: CallOutcome, action: str, sent_at: datetime, answered_at: datetime | None
    ) -> None:
        request, command = job.request, job.command
        is_set = isinstance(request, ProfileRequest)
        purpose = {"Lift": "StationMaxLift", "ClearLift": "StationMaxLift", "ClearTx": "Tx"}.get(job.key[0], job.key[0])
        ack = SetpointAck(
            charge_point_id=self.charge_point_id,
            connector_id=request.connector_id or 0,
            session_id=command.session_id if command is not None else None,
            action=action,
            purpose=purpose,
            setpoint_kw=command.setpoint_kw if command is not None else None,
            limit=request.limit if is_set else None,
            charging_rate_unit=request.unit if is_set else None,
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
