"""Desired state: the latest setpoint per connector, and the latest node and site limits.

The engine publishes the setpoint it wants for every session on ``ocpp.setpoint.commands``; the executor
is level-triggered (docs/architecture.md, "Executor"): it keeps only the latest :class:`pipeline.contracts.topics.SetpointCommand`
per connector. Each command also carries the EV headroom of the breaker its charger hangs on
(``node_limit_kw``) and of its site (``site_limit_kw``); the newest value per node and per site is what the
ledger holds increases to.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from executor.dispatch_log import decision
from executor.metrics import ExecutorStats
from pipeline.contracts.topics import SetpointCommand

__all__ = ["Slot", "SetpointTable"]

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One connector's desired state.

    ``command`` is the latest setpoint (``None`` after its tombstone); ``changed_at`` the clock time its
    value last changed (increases are debounced from it); ``received_mono`` the monotonic time it arrived
    (for the dispatch-latency histogram); ``cleared_tx`` a transaction whose setpoint was tombstoned while
    it still runs (its TxProfile is to be cleared).
    """

    command: SetpointCommand | None = None
    changed_at: datetime | None = None
    received_mono: float = 0.0
    pending: bool = False
    cleared_tx: str | None = None


class SetpointTable:
    """Latest setpoint per ``(charge_point_id, connector_id)``; tombstones are keyed by ``session_id``.

    A command older (``computed_at``) than the one held for its connector is ignored, whichever session
    it belongs to, so out-of-order and replayed records never move a connector backwards.
    """

    def __init__(self, stats: ExecutorStats) -> None:
        self._stats = stats
        self._slots: dict[str, dict[int, Slot]] = {}
        self._by_session: dict[str, tuple[str, int]] = {}
        self._node_limits: dict[str, tuple[datetime, float | None]] = {}
        self._site_limits: dict[str, tuple[datetime, float | None]] = {}

    def slot(self, charge_point_id: str, connector_id: int) -> Slot:
        return self._slots.setdefault(charge_point_id, {}).setdefault(connector_id, Slot())

    def slots(self, charge_point_id: str) -> dict[int, Slot]:
        return self._slots.get(charge_point_id, {})

    def items(self) -> list[tuple[tuple[str, int], Slot]]:
        return [((cp, conn), s) for cp, by_conn in self._slots.items() for conn, s in by_conn.items()]

    def setpoint_at(self, session_id: str) -> datetime | None:
        """``computed_at`` of the newest setpoint held for ``session_id`` (``None`` when none is)."""
        where = self._by_session.get(session_id)
        if where is None:
            return None
        slot = self._slots.get(where[0], {}).get(where[1])
        command = slot.command if slot is not None else None
        return command.computed_at if command is not None and command.session_id == session_id else None

    def node_limit_kw(self, node_id: str | None) -> float | None:
        """The newest ``node_limit_kw`` published for ``node_id`` (kW), if any."""
        found = self._node_limits.get(node_id or "")
        return None if found is None else found[1]

    def site_limit_kw(self, site_id: str | None) -> float | None:
        """The newest ``site_limit_kw`` published for ``site_id`` (kW), if any."""
        found = self._site_limits.get(site_id or "")
        return None if found is None else found[1]

    @staticmethod
    def _newest(
        limits: dict[str, tuple[datetime, float | None]], key: str | None, at: datetime, kw: float | None
    ) -> None:
        """Keep the newest limit per key; a newer record without a limit makes it unknown (``None``)."""
        if key is None:
            return
        current = limits.get(key)
        if current is None or at >= current[0]:
            limits[key] = (at, kw)

    def apply(
        self, key: str | None, command: SetpointCommand | None, now: datetime | None = None, count: bool = True
    ) -> str | None:
        """Apply one decoded ``ocpp.setpoint.commands`` record; returns the charger to wake, if any.

        ``now`` (clock) stamps a changed value for the increase debounce; ``count=False`` (the start-up
        rebuild) does not count collapsed updates.
        """
        if command is None:
            return self._tombstone(key)
        self._newest(self._node_limits, command.node_id, command.computed_at, command.node_limit_kw)
        self._newest(self._site_limits, command.site_id, command.computed_at, command.site_limit_kw)
        slot = self.slot(command.charge_point_id, command.connector_id)
        current = slot.command
        if current is not None:
            if command.computed_at < current.computed_at:
                self._stats.stale()
                log.debug(
                    "stale setpoint for %s ignored (%s < %s)",
                    command.session_id,
                    command.computed_at,
                    current.computed_at,
                )
                return None
            if command == current:
                return None
            if slot.pending and count:
                self._stats.collapsed()
                decision(
                    command.charge_point_id,
                    "collapsed",
                    "connector %s: setpoint %s A replaces %s A (not sent)",
                    command.connector_id,
                    command.setpoint_a,
                    current.setpoint_a,
                    connector_id=command.connector_id,
                    setpoint_a=command.setpoint_a,
                )
        if current is not None and current.session_id != command.session_id:
            self._by_session.pop(current.session_id, None)
        if current is None or (current.setpoint_a, current.setpoint_kw, current.transaction_id) != (
            command.setpoint_a,
            command.setpoint_kw,
            command.transaction_id,
        ):
            slot.changed_at = now or command.computed_at
            slot.received_mono = time.monotonic()
        slot.command = command
        slot.pending = True
        slot.cleared_tx = None
        self._by_session[command.session_id] = (command.charge_point_id, command.connector_id)
        return command.charge_point_id

    def _tombstone(self, session_id: str | None) -> str | None:
        where = self._by_session.pop(session_id or "", None)
        if where is None:
            return None
        charge_point_id, connector_id = where
        slot = self._slots.get(charge_point_id, {}).get(connector_id)
        if slot is not None and slot.command is not None and slot.command.session_id == session_id:
            slot.cleared_tx = slot.command.transaction_id
            slot.command = None
            slot.pending = False
            return charge_point_id
        return None

    def clear_connector(self, charge_point_id: str, connector_id: int) -> None:
        """Forget desired state of a connector whose transaction ended (its TxProfile is gone)."""
        slot = self._slots.get(charge_point_id, {}).pop(connector_id, None)
        if slot is not None and slot.command is not None:
            self._by_session.pop(slot.command.session_id, None)
