"""Charging sessions: what the executor knows about chargers and their transactions, and what it publishes.

The engine learns about sessions only from ``ocpp.active.sessions``. This module keeps the charger facts from
``site.topology`` (site, panel, rating, phases, voltage), issues transaction ids, follows each transaction
from StartTransaction through MeterValues to StopTransaction, and publishes the matching upserts and the
final tombstone. It is protocol-neutral: the version modules hand it kWh, kW and UTC datetimes.

Restart: the executor re-reads its own ``ocpp.active.sessions`` (:meth:`Sessions.recover`) so transactions
that outlive a restart keep their topology facts, start time and energy count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from executor.ocpp.station import MeterSample
from executor.outbox import Outbox
from executor.topology import Topology
from pipeline.contracts.topics import ACTIVE_SESSIONS, ActiveSession

__all__ = ["OpenTransaction", "Sessions", "TransactionIds", "ACTIVE_SESSIONS"]

log = logging.getLogger(__name__)


class TransactionIds:
    """Integer transaction ids that do not repeat across restarts (OCPP 1.6 transactionId is an integer).

    Each id is ``max(previous + 1, whole seconds since 2020-01-01 UTC)`` on the wall clock (not the
    pipeline clock, which a replay may wind back). Ids track time while idle, so a restarted executor
    starts above every id the previous run issued unless that run averaged more than one transaction per
    second for its whole life. Values stay within a signed 32-bit integer until 2088.
    """

    EPOCH_S = datetime(2020, 1, 1, tzinfo=UTC).timestamp()

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall_clock = wall_clock
        self._last = 0

    def next(self) -> int:
        """A new id, strictly greater than every id this instance issued before."""
        self._last = max(self._last + 1, int(self._wall_clock() - self.EPOCH_S))
        return self._last


@dataclass
class OpenTransaction:
    """A running transaction on one connector.

    ``transaction_id`` is a string: a 1.6 integer id issued here, or a 2.0.1 id the charger chose.
    ``confirmed`` turns true once the charger knows the transaction id (only then may a profile name it).
    ``meter_start_kwh`` is ``None`` until the first energy reading when it is not known (a transaction
    recovered after a restart, or a 2.0.1 start without a reading); ``energy_offset_kwh`` is then the
    energy already counted.
    ``session`` is the last published record, ``None`` while the charger is missing from topology.
    """

    charge_point_id: str
    connector_id: int
    transaction_id: str
    started_at: datetime
    meter_start_kwh: float | None
    confirmed: bool = False
    energy_offset_kwh: float = 0.0
    session: ActiveSession | None = None

    @property
    def session_id(self) -> str:
        return f"{self.charge_point_id}-{self.transaction_id}"


def _clamp(value: float, low: float, high: float | None = None) -> float:
    value = max(low, value)
    return value if high is None else min(high, value)


class Sessions:
    """Open transactions per ``(charge_point_id, connector_id)``, and their ``ocpp.active.sessions`` records.

    Records go to the :class:`executor.outbox.Outbox`, which never waits for the transport, so the OCPP
    handler answers the charger at once even while the brokers are away; upserts of one session coalesce
    there (the newest wins) and its tombstone is delivered after them.
    """

    def __init__(self, outbox: Outbox, topology: Topology, ids: TransactionIds | None = None) -> None:
        self._outbox = outbox
        self._topology = topology
        self._ids = ids or TransactionIds()
        self._open: dict[tuple[str, int], OpenTransaction] = {}  # (charge_point_id, connector_id)
        self._by_id: dict[tuple[str, str], OpenTransaction] = {}  # (charge_point_id, transaction_id)

    # -- queries ---------------------------------------------------------------------------------------

    def find(self, charge_point_id: str, transaction_id: str) -> OpenTransaction | None:
        """The open transaction with this id on this charger, if any."""
        return self._by_id.get((charge_point_id, transaction_id))

    def active_transaction(self, charge_point_id: str, connector_id: int, confirmed_only: bool = True) -> str | None:
        """The connector's open transaction id as a string (as in ``SetpointCommand.transaction_id``)."""
        tx = self._open.get((charge_point_id, connector_id))
        if tx is None or (confirmed_only and not tx.confirmed):
            return None
        return tx.transaction_id

    def open_transactions(self) -> list[OpenTransaction]:
        return list(self._open.values())

    # -- lifecycle -------------------------------------------------------------------------------------

    def recover(self, session: ActiveSession) -> None:
        """Adopt a session published before a restart (read back from ``ocpp.active.sessions``)."""
        self._add(
            OpenTransaction(
                charge_point_id=session.charge_point_id,
                connector_id=session.connector_id,
                transaction_id=session.transaction_id,
                started_at=session.started_at,
                meter_start_kwh=None,
                confirmed=True,
                energy_offset_kwh=session.energy_kwh or 0.0,
                session=session,
            )
        )

    async def start(
        self,
        charge_point_id: str,
        connector_id: int,
        meter_start_kwh: float | None,
        started_at: datetime,
        transaction_id: str | None = None,
    ) -> str:
        """Open a transaction and publish its session; returns its id (a new integer id when
        ``transaction_id`` is ``None``, as 1.6 needs; the charger's own id otherwise, already confirmed).

        A transaction still open on the same connector (its StopTransaction was lost) is closed first and
        tombstoned. If the charger is not in topology the transaction is accepted but not published.
        """
        previous = self._open.get((charge_point_id, connector_id))
        if previous is not None:
            log.warning(
                "%s: connector %s starts a transaction while %s is open; closing it",
                charge_point_id,
                connector_id,
                previous.transaction_id,
            )
            await self._close(previous)
        tx = OpenTransaction(
            charge_point_id=charge_point_id,
            connector_id=connector_id,
            transaction_id=str(self._ids.next()) if transaction_id is None else transaction_id,
            started_at=started_at,
            meter_start_kwh=meter_start_kwh,
            confirmed=transaction_id is not None,
        )
        tx.session = self._initial_session(tx)
        if tx.session is not None:
            self._outbox.publish(ACTIVE_SESSIONS, tx.session)
            log.info(
                "%s: session %s started on connector %s",
                charge_point_id,
                tx.session_id,
                connector_id,
                extra={"charge_point_id": charge_point_id, "session_id": tx.session_id, "connector_id": connector_id},
            )
        else:
            log.warning(
                "%s: not in site.topology; transaction %s accepted but not published",
                charge_point_id,
                tx.transaction_id,
            )
        self._add(tx)
        return tx.transaction_id

    def confirm(self, charge_point_id: str, transaction_id: str) -> int | None:
        """Mark the transaction's id as delivered to the charger; returns its connector id."""
        tx = self.find(charge_point_id, transaction_id)
        if tx is None:
            return None
        tx.confirmed = True
        return tx.connector_id

    async def meter(
        self, charge_point_id: str, connector_id: int, transaction_id: str | None, samples: list[MeterSample]
    ) -> None:
        """Fold meter samples (oldest first) into the transaction's session and publish the upsert.

        ``current_power_kw`` and ``soc_pct`` are the latest reported values, ``energy_kwh`` is the import
        register minus the meter start (both kWh), ``sampled_at`` the latest sample time. Readings outside a
        known transaction are ignored.
        """
        if transaction_id is None or not samples:
            return
        tx = self.find(charge_point_id, transaction_id)
        if tx is None:
            log.info("%s: meter values for unknown transaction %s ignored", charge_point_id, transaction_id)
            return
        session = tx.session or self._initial_session(tx)
        if session is None:
            return
        update = session.model_dump()
        for sample in samples:
            if sample.power_kw is not None:
                update["current_power_kw"] = _clamp(sample.power_kw, 0.0)
            if sample.energy_register_kwh is not None:
                if tx.meter_start_kwh is None:  # recovered: continue the count published before the restart
                    tx.meter_start_kwh = sample.energy_register_kwh - tx.energy_offset_kwh
                update["energy_kwh"] = _clamp(sample.energy_register_kwh - tx.meter_start_kwh, 0.0)
            if sample.soc_pct is not None:
                update["soc_pct"] = _clamp(sample.soc_pct, 0.0, 100.0)
            update["sampled_at"] = sample.timestamp
        try:
            new = ActiveSession.model_validate(update)
        except ValidationError as exc:
            log.warning("%s: meter values for %s not published: %s", charge_point_id, tx.session_id, exc)
            return
        self._outbox.publish(ACTIVE_SESSIONS, new)
        tx.session = new

    async def stop(self, charge_point_id: str, transaction_id: str, stopped_at: datetime | None = None) -> int | None:
        """Close the transaction and tombstone its session; returns its connector id (``None`` if unknown).
        Logs one line with the energy it delivered (kWh, its last meter reading) and how long it lasted.

        An unknown transaction of a charger that is in topology is tombstoned anyway (its start may predate
        what this executor remembers), which deletes nothing if it was never published.
        """
        tx = self.find(charge_point_id, transaction_id)
        if tx is None:
            log.warning("%s: StopTransaction for unknown transaction %s", charge_point_id, transaction_id)
            if self._topology.charger(charge_point_id) is not None:
                self._outbox.tombstone(ACTIVE_SESSIONS, f"{charge_point_id}-{transaction_id}")
            return None
        await self._close(tx)
        energy = tx.session.energy_kwh if tx.session is not None else None
        minutes = None if stopped_at is None else (stopped_at - tx.started_at).total_seconds() / 60
        log.info(
            "%s: session %s stopped: %s kWh in %s min",
            charge_point_id,
            tx.session_id,
            "?" if energy is None else f"{energy:.2f}",
            "?" if minutes is None else f"{minutes:.0f}",
            extra={
                "charge_point_id": charge_point_id,
                "session_id": tx.session_id,
                "energy_kwh": energy,
                "duration_min": None if minutes is None else round(minutes, 1),
            },
        )
        return tx.connector_id

    async def _close(self, tx: OpenTransaction) -> None:
        if tx.session is not None:
            self._outbox.tombstone(ACTIVE_SESSIONS, tx.session_id)
        self._remove(tx)

    def _add(self, tx: OpenTransaction) -> None:
        old = self._open.get((tx.charge_point_id, tx.connector_id))
        if old is not None:
            self._remove(old)
        self._open[(tx.charge_point_id, tx.connector_id)] = tx
        self._by_id[(tx.charge_point_id, tx.transaction_id)] = tx

    def _remove(self, tx: OpenTransaction) -> None:
        if self._open.get((tx.charge_point_id, tx.connector_id)) is tx:
            del self._open[(tx.charge_point_id, tx.connector_id)]
        if self._by_id.get((tx.charge_point_id, tx.transaction_id)) is tx:
            del self._by_id[(tx.charge_point_id, tx.transaction_id)]

    def _initial_session(self, tx: OpenTransaction) -> ActiveSession | None:
        info = self._topology.charger(tx.charge_point_id)
        if info is None:
            return None
        return ActiveSession(
            session_id=tx.session_id,
            charge_point_id=tx.charge_point_id,
            connector_id=tx.connector_id,
            transaction_id=tx.transaction_id,
            site_id=info.site_id,
            node_id=info.node_id,
            rated_power_kw=info.rated_power_kw,
            phases=info.phases,
            voltage_v=info.voltage_v,
            priority=info.priority,
            weight=info.weight,
            flexible=info.flexible,
            phase_rotation=info.phase_rotation,
            started_at=tx.started_at,
        )
