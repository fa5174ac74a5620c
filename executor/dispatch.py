"""Desired state and the per-charger dispatcher that reconciles each charger towards it.

The engine publishes the setpoint it wants for every session; the executor is level-triggered: it keeps
only the latest :class:`pipeline.topics.SetpointCommand` per connector (:class:`SetpointTable`) and each
connected charger has one :class:`ChargerDispatcher` that compares desired with what the charger last
accepted and sends the difference, one OCPP call at a time. While a call is in flight newer setpoints
simply overwrite the desired value, so a burst of changes collapses into one more call with the latest
value. Failed calls are retried with backoff and every answer is published on ``ocpp.setpoint.acks``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed

from pipeline.topics import SetpointAck, SetpointCommand

from executor.metrics import ExecutorStats
from executor.station import CallOutcome, LimitRequest, RateUnit, Station

__all__ = [
    "ACKS_TOPIC", "COMMANDS_TOPIC", "ChargerDispatcher", "Held", "SetpointTable", "Slot", "profile_id_for",
]

log = logging.getLogger(__name__)

COMMANDS_TOPIC = "ocpp.setpoint.commands"
ACKS_TOPIC = "ocpp.setpoint.acks"
TX_PROFILE_ID_BASE = 1000
ACTION = "SetChargingProfile"


def profile_id_for(connector_id: int) -> int:
    """The chargingProfileId used for a connector's TxProfile: ``1000 + connector_id``.

    Stable per connector so each new profile replaces the previous one (OCPP 1.6 section 5.16: a profile
    with the same chargingProfileId replaces the installed one).
    """
    return TX_PROFILE_ID_BASE + connector_id


@dataclass(frozen=True)
class Held:
    """The limit a charger accepted for a transaction on a connection (``epoch`` counts connections)."""

    limit: float
    unit: RateUnit
    transaction_id: str
    epoch: int


@dataclass
class Slot:
    """One connector's desired state: the latest command, whether it awaits the dispatcher, what is held."""

    command: SetpointCommand | None = None
    pending: bool = False
    held: Held | None = None


class SetpointTable:
    """Latest setpoint per ``(charge_point_id, connector_id)``; tombstones are keyed by ``session_id``.

    A command older (``computed_at``) than the one held for its connector is ignored, whichever session
    it belongs to, so out-of-order and replayed records never move a connector backwards.
    """

    def __init__(self, stats: ExecutorStats) -> None:
        self._stats = stats
        self._slots: dict[str, dict[int, Slot]] = {}
        self._by_session: dict[str, tuple[str, int]] = {}

    def slot(self, charge_point_id: str, connector_id: int) -> Slot:
        return self._slots.setdefault(charge_point_id, {}).setdefault(connector_id, Slot())

    def slots(self, charge_point_id: str) -> dict[int, Slot]:
        return self._slots.get(charge_point_id, {})

    def items(self) -> list[tuple[tuple[str, int], Slot]]:
        return [((cp, conn), s) for cp, by_conn in self._slots.items() for conn, s in by_conn.items()]

    def apply(self, key: str | None, command: SetpointCommand | None, count: bool = True) -> str | None:
        """Apply one decoded ``ocpp.setpoint.commands`` record; returns the charger to wake, if any.

        ``count=False`` (the start-up rebuild) does not count collapsed updates.
        """
        if command is None:
            self._tombstone(key)
            return None
        slot = self.slot(command.charge_point_id, command.connector_id)
        current = slot.command
        if current is not None:
            if command.computed_at < current.computed_at:
                self._stats.stale()
                log.debug("stale setpoint for %s ignored (%s < %s)", command.session_id,
                          command.computed_at, current.computed_at)
                return None
            if command == current:
                return None
            if slot.pending and count:
                self._stats.collapsed()
        if current is not None and current.session_id != command.session_id:
            self._by_session.pop(current.session_id, None)
        slot.command = command
        slot.pending = True
        self._by_session[command.session_id] = (command.charge_point_id, command.connector_id)
        return command.charge_point_id

    def _tombstone(self, session_id: str | None) -> None:
        where = self._by_session.pop(session_id or "", None)
        slot = self._slots.get(where[0], {}).get(where[1]) if where is not None else None
        if slot is not None and slot.command is not None and slot.command.session_id == session_id:
            slot.command = None
            slot.pending = False

    def clear_connector(self, charge_point_id: str, connector_id: int) -> None:
        """Forget desired and held state of a connector whose transaction ended (its TxProfile is gone)."""
        slot = self._slots.get(charge_point_id, {}).pop(connector_id, None)
        if slot is not None and slot.command is not None:
            self._by_session.pop(slot.command.session_id, None)


@dataclass
class _Retry:
    limit: float
    unit: RateUnit
    failures: int
    ready: bool = False
    timer: asyncio.Task[None] | None = None


class ChargerDispatcher:
    """Reconciles one connected charger towards its desired setpoints; at most one call in flight.

    A connector is sent a limit when its latest command names the connector's active (confirmed)
    transaction, the charger is managed, and the limit differs from what the charger accepted on this
    connection for this transaction by at least the deadband (``deadband_a``; for ``W`` scaled by
    phases x voltage). Decreases go before increases when several connectors are due.

    Rejected, CallError and Timeout answers are retried after ``retry_backoff_s[n]`` seconds of the clock
    (the last value repeats); NotSupported is not retried. A newer value for the connector cancels the
    wait and goes out at once.
    """

    def __init__(
        self,
        charge_point_id: str,
        station: Station,
        epoch: int,
        table: SetpointTable,
        active_transaction: Callable[[str, int], str | None],
        is_managed: Callable[[str], bool],
        publish_ack: Callable[[SetpointAck], Awaitable[None]],
        clock,
        stats: ExecutorStats,
        *,
        charging_rate_unit: RateUnit = "A",
        deadband_a: float = 0.1,
        retry_backoff_s: Sequence[float] = (1, 2, 5, 10, 30),
    ) -> None:
        if charging_rate_unit not in ("A", "W"):
            raise ValueError(f"charging_rate_unit must be 'A' or 'W', not {charging_rate_unit!r}")
        self.charge_point_id = charge_point_id
        self.station = station
        self.epoch = epoch
        self._table = table
        self._active = active_transaction
        self._managed = is_managed
        self._publish_ack = publish_ack
        self._clock = clock
        self._stats = stats
        self._unit: RateUnit = charging_rate_unit
        self._deadband_a = deadband_a
        self._backoff = tuple(retry_backoff_s) or (1.0,)
        self._wake = asyncio.Event()
        self._retries: dict[int, _Retry] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"dispatch-{self.charge_point_id}")
        self._wake.set()  # a new connection gets its desired profiles at once
        return self._task

    def wake(self) -> None:
        """Re-evaluate desired state (call after any change that may make a send due)."""
        self._wake.set()

    def cancel(self) -> None:
        for retry in self._retries.values():
            if retry.timer is not None:
                retry.timer.cancel()
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            job = self._next_job()
            if job is None:
                await self._wake.wait()
                continue
            try:
                await self._send(*job)
            except ConnectionClosed:
                log.info("%s: connection closed; dispatcher stops", self.charge_point_id)
                return
            except Exception:
                log.exception("%s: dispatch failed", self.charge_point_id)
                await asyncio.sleep(1.0)

    # -- choosing what to send -------------------------------------------------------------------------

    def request_for(self, command: SetpointCommand) -> LimitRequest:
        """The limit for a command: ``setpoint_a`` rounded to 0.1 A, or ``setpoint_kw * 1000`` W to 0.1 W."""
        limit = round(command.setpoint_a, 1) if self._unit == "A" else round(command.setpoint_kw * 1000.0, 1)
        return LimitRequest(
            connector_id=command.connector_id, transaction_id=command.transaction_id,
            profile_id=profile_id_for(command.connector_id), limit=limit, unit=self._unit,
            number_phases=command.phases,
        )

    def _within_deadband(self, held: float, wanted: float, command: SetpointCommand) -> bool:
        """True when ``wanted`` equals ``held`` or differs by less than the deadband (in the sent unit)."""
        band = self._deadband_a if self._unit == "A" else self._deadband_a * command.phases * command.voltage_v
        return held == wanted or abs(held - wanted) < band - 1e-9

    def _next_job(self) -> tuple[Slot, SetpointCommand, LimitRequest] | None:
        best: tuple[float, Slot, SetpointCommand, LimitRequest] | None = None
        for connector_id, slot in list(self._table.slots(self.charge_point_id).items()):
            command = slot.command
            if command is None or self._active(self.charge_point_id, connector_id) != command.transaction_id:
                continue
            if not self._managed(self.charge_point_id):
                slot.pending = False
                continue
            request = self.request_for(command)
            retry = self._retries.get(connector_id)
            if retry is not None:
                if (retry.limit, retry.unit) == (request.limit, request.unit):
                    if not retry.ready:
                        continue
                else:  # a new value goes out now
                    self._drop_retry(connector_id)
            held = slot.held
            valid = held is not None and (held.transaction_id, held.epoch, held.unit) == (
                command.transaction_id, self.epoch, request.unit)
            if valid and self._within_deadband(held.limit, request.limit, command):
                slot.pending = False
                continue
            delta = request.limit - held.limit if valid else float("-inf")
            if best is None or delta < best[0]:
                best = (delta, slot, command, request)
        return None if best is None else best[1:]

    def _drop_retry(self, connector_id: int) -> None:
        retry = self._retries.pop(connector_id, None)
        if retry is not None and retry.timer is not None:
            retry.timer.cancel()

    # -- sending ---------------------------------------------------------------------------------------

    async def _send(self, slot: Slot, command: SetpointCommand, request: LimitRequest) -> None:
        slot.pending = False
        sent_at = self._clock.now()
        self._stats.call_sent(ACTION)
        try:
            outcome: CallOutcome = await self.station.set_limit(request)
        except BaseException:
            self._stats.call_abandoned()
            raise
        answered_at = None if outcome.status == "Timeout" else self._clock.now()
        self._stats.call_answered(ACTION, outcome.status)
        connector_id = request.connector_id
        still_active = self._active(self.charge_point_id, connector_id) == request.transaction_id
        if outcome.status == "Accepted":
            self._drop_retry(connector_id)
            if still_active:
                self._table.slot(self.charge_point_id, connector_id).held = Held(
                    request.limit, request.unit, request.transaction_id, self.epoch)
        else:
            log.warning("%s: SetChargingProfile connector %s limit %s%s: %s %s", self.charge_point_id,
                        connector_id, request.limit, request.unit, outcome.status, outcome.error or "")
            if still_active:
                self._schedule_retry(request, retryable=outcome.status != "NotSupported")
        ack = SetpointAck(
            charge_point_id=self.charge_point_id, connector_id=connector_id, session_id=command.session_id,
            action=ACTION, setpoint_kw=command.setpoint_kw, limit=request.limit,
            charging_rate_unit=request.unit, status=outcome.status, error=outcome.error,
            computed_at=command.computed_at, sent_at=sent_at, answered_at=answered_at,
        )
        try:
            await self._publish_ack(ack)
        except Exception:
            log.exception("%s: could not publish ack", self.charge_point_id)

    def _schedule_retry(self, request: LimitRequest, retryable: bool) -> None:
        previous = self._retries.get(request.connector_id)
        same = previous is not None and (previous.limit, previous.unit) == (request.limit, request.unit)
        failures = previous.failures + 1 if same else 1
        self._drop_retry(request.connector_id)
        retry = _Retry(request.limit, request.unit, failures)
        if retryable:
            delay = self._backoff[min(failures, len(self._backoff)) - 1]
            retry.timer = asyncio.create_task(self._retry_after(retry, delay))
        self._retries[request.connector_id] = retry

    async def _retry_after(self, retry: _Retry, delay: float) -> None:
        await self._clock.sleep(delay)
        retry.ready = True
        self.wake()
