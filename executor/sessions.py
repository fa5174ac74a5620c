"""Charging sessions: what the executor knows about chargers and their transactions, and what it publishes.

The engine learns about sessions only from ``ocpp.active.sessions``. This module keeps the charger facts from
``site.topology`` (site, panel, rating, phases, voltage), issues transaction ids, follows each transaction
from StartTransaction through MeterValues to StopTransaction, and publishes the matching upserts and the
final tombstone. It is protocol-neutral: the version modules hand it kWh, kW and UTC datetimes.

What the EV really takes is learned here from its meter samples (:mod:`executor.learning`): the phases it
draws on (``ev_phases``) and a cap when it takes clearly less than its limit in force (``learned_cap_kw``),
and what a 2.0.1 EV says it needs (NotifyEVChargingNeeds) goes on its record as well.

Readings are timed by the executor: a session's ``sampled_at`` is when the executor received its latest
reading (its own clock, which the engine's staleness rules compute on), ``charger_sampled_at`` the reading's
own timestamp on the charger's clock, which may be wrong. Each transaction's start and end also go on
``ocpp.transaction.events``, the history analysts query.

Restart: the executor re-reads its own ``ocpp.active.sessions`` (:meth:`Sessions.recover`) so transactions
that outlive a restart keep their topology facts, start time and energy count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from executor.config import ExecutorConfig
from executor.learning import CapLearner, CapPolicy, PhaseCounter, PhasePolicy
from executor.ocpp.station import EvChargingNeeds, MeterSample
from executor.outbox import Outbox
from executor.topology import Topology
from pipeline.contracts.topics import (
    ACTIVE_SESSIONS,
    BOUNDS,
    TRANSACTION_EVENTS,
    ActiveSession,
    TransactionEvent,
    session_key,
)

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
    ``session`` is the last published record, ``None`` while the charger is missing from topology;
    ``cap`` and ``phase_counter`` learn what the EV takes from its meter samples.
    ``peak_power_kw`` is the highest power reported so far; ``binding_s`` the seconds (executor clock) each
    setpoint ``binding`` has held since the transaction began, ``binding`` the one in force since
    ``binding_since``.
    """

    charge_point_id: str
    connector_id: int
    transaction_id: str
    started_at: datetime
    meter_start_kwh: float | None
    confirmed: bool = False
    energy_offset_kwh: float = 0.0
    session: ActiveSession | None = None
    cap: CapLearner | None = None
    phase_counter: PhaseCounter | None = None
    peak_power_kw: float | None = None
    binding: str | None = None
    binding_since: datetime | None = None
    binding_s: dict[str, float] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return session_key(self.charge_point_id, self.transaction_id)

    def note_binding(self, binding: str, at: datetime) -> None:
        """The session's setpoint is limited by ``binding`` from ``at`` (executor clock) on."""
        self._close_binding(at)
        self.binding, self.binding_since = binding, at

    def main_binding(self, at: datetime) -> str | None:
        """What limited the setpoint for the most time up to ``at``; ``None`` if it never had a setpoint."""
        self._close_binding(at)
        return max(self.binding_s, key=lambda b: self.binding_s[b]) if self.binding_s else None

    def _close_binding(self, at: datetime) -> None:
        if self.binding is not None and self.binding_since is not None:
            held = max((at - self.binding_since).total_seconds(), 0.0)
            self.binding_s[self.binding] = self.binding_s.get(self.binding, 0.0) + held
            self.binding_since = at


FLOOR_A = 6.0
"""The lowest current per phase an EV is asked to draw (IEC 61851-1), A: an EV minimum above it raises
the session's ``min_power_kw``."""
_PHASES_OF_TRANSFER = {"AC_single_phase": 1, "AC_two_phase": 2, "AC_three_phase": 3}


def _clamp(value: float, low: float, high: float | None = None) -> float:
    value = max(low, value)
    return value if high is None else min(high, value)


class Sessions:
    """Open transactions per ``(charge_point_id, connector_id)``, and their ``ocpp.active.sessions`` records.

    Records go to the :class:`executor.outbox.Outbox`, which never waits for the transport, so the OCPP
    handler answers the charger at once even while the brokers are away; upserts of one session coalesce
    there (the newest wins) and its tombstone is delivered after them.

    ``limit_kw(charge_point_id, connector_id)`` is the limit in force for the connector as its EV can draw it
    (kW, ``None`` when unknown; :meth:`executor.ledger.Ledger.ev_limit_kw`): the learned cap compares the draw
    with it.
    ``config`` gives the learning thresholds (:class:`executor.config.ExecutorConfig`).
    """

    def __init__(
        self,
        outbox: Outbox,
        topology: Topology,
        ids: TransactionIds | None = None,
        config: ExecutorConfig | None = None,
        limit_kw: Callable[[str, int], float | None] | None = None,
    ) -> None:
        self._outbox = outbox
        self._topology = topology
        self._ids = ids or TransactionIds()
        config = config or ExecutorConfig()
        self._cap_policy = CapPolicy.of(config)
        self._phase_policy = PhasePolicy.of(config)
        self._limit_kw = limit_kw or (lambda cp, connector: None)
        self._open: dict[tuple[str, int], OpenTransaction] = {}  # (charge_point_id, connector_id)
        self._by_id: dict[tuple[str, str], OpenTransaction] = {}  # (charge_point_id, transaction_id)
        self._needs: dict[tuple[str, int], EvChargingNeeds] = {}  # said before its transaction started
        self._by_session: dict[str, OpenTransaction] = {}  # session_id

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

    def ev_phases(self, charge_point_id: str, connector_id: int) -> int | None:
        """The phases the EV on the connector draws on, when known (learned or reported), else ``None``."""
        tx = self._open.get((charge_point_id, connector_id))
        return None if tx is None or tx.session is None else tx.session.ev_phases

    def note_binding(self, session_id: str, binding: str, at: datetime) -> None:
        """A setpoint for ``session_id`` arrived, limited by ``binding`` (``ocpp.setpoint.commands``), at
        ``at`` on the executor's clock; the transaction's end event reports the one that held longest."""
        tx = self._by_session.get(session_id)
        if tx is not None and tx.binding != binding:
            tx.note_binding(binding, at)

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
                cap=CapLearner(
                    self._cap_policy,
                    cap_kw=session.learned_cap_kw,
                    rate_kw=session.ev_rate_kw,
                    # when it was learned is not on the record: probe no later than a period after the last sample
                    changed_at=None
                    if session.learned_cap_kw is None
                    else (session.sampled_at or session.started_at).timestamp(),
                ),
                phase_counter=PhaseCounter(self._phase_policy, phases=session.ev_phases),
            )
        )

    async def start(
        self,
        charge_point_id: str,
        connector_id: int,
        meter_start_kwh: float | None,
        started_at: datetime,
        transaction_id: str | None = None,
        received_at: datetime | None = None,
    ) -> str:
        """Open a transaction and publish its session and its ``started`` event; returns its id (a new
        integer id when ``transaction_id`` is ``None``, as 1.6 needs; the charger's own id otherwise, already
        confirmed). ``received_at`` is the executor's clock (default: ``started_at``).

        A transaction still open on the same connector (its StopTransaction was lost) is closed first,
        tombstoned and recorded as ended at its last reading (no reason: none was given). If the charger is
        not in topology the transaction is accepted but not published.
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
            last = previous.session.charger_sampled_at if previous.session is not None else None
            self._publish_event(previous, "ended", received_at or started_at, last or started_at)
        tx = OpenTransaction(
            charge_point_id=charge_point_id,
            connector_id=connector_id,
            transaction_id=str(self._ids.next()) if transaction_id is None else transaction_id,
            started_at=started_at,
            meter_start_kwh=meter_start_kwh,
            confirmed=transaction_id is not None,
        )
        tx.session = self._initial_session(tx)
        needs = self._needs.pop((charge_point_id, connector_id), None)
        if tx.session is not None and needs is not None:
            tx.session = self._with_needs(tx, tx.session, needs) or tx.session
        if tx.session is not None:
            self._outbox.publish(ACTIVE_SESSIONS, tx.session)
            self._publish_event(tx, "started", received_at or started_at)
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
        self,
        charge_point_id: str,
        connector_id: int,
        transaction_id: str | None,
        samples: list[MeterSample],
        received_at: datetime | None = None,
    ) -> None:
        """Fold meter samples (oldest first) into the transaction's session and publish the upsert.

        ``current_power_kw`` and ``soc_pct`` are the latest reported values, ``energy_kwh`` is the import
        register minus the meter start (both kWh), ``charger_sampled_at`` the latest sample's own time and
        ``sampled_at`` ``received_at``, the executor's clock when the readings arrived (default: the
        sample's time); ``ev_phases``, ``learned_cap_kw`` and ``ev_rate_kw`` are what :mod:`executor.learning`
        makes of the samples (per-phase current; power against the limit in force). Readings outside a known transaction
        are ignored.
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
        cap = tx.cap or CapLearner(self._cap_policy)
        counter = tx.phase_counter or PhaseCounter(self._phase_policy, phases=session.ev_phases)
        tx.cap, tx.phase_counter = cap, counter
        limit_kw = self._limit_kw(charge_point_id, tx.connector_id)
        for sample in samples:
            at_s = sample.timestamp.timestamp()
            if sample.phase_current_a:
                update["ev_phases"] = counter.observe(at_s, sample.phase_current_a)
            if sample.power_kw is not None:
                update["current_power_kw"] = _clamp(sample.power_kw, 0.0)
                learned = cap.observe(at_s, update["current_power_kw"], limit_kw, self._floor_kw(session, update))
                update["learned_cap_kw"] = None if learned is None else min(learned, BOUNDS["charger_kw"])
                if cap.rate_kw is not None:
                    update["ev_rate_kw"] = min(cap.rate_kw, BOUNDS["charger_kw"])
                tx.peak_power_kw = max(tx.peak_power_kw or 0.0, update["current_power_kw"])
            if sample.energy_register_kwh is not None:
                if tx.meter_start_kwh is None:  # recovered: continue the count published before the restart
                    tx.meter_start_kwh = sample.energy_register_kwh - tx.energy_offset_kwh
                update["energy_kwh"] = _clamp(sample.energy_register_kwh - tx.meter_start_kwh, 0.0)
            if sample.soc_pct is not None:
                update["soc_pct"] = _clamp(sample.soc_pct, 0.0, 100.0)
            update["charger_sampled_at"] = sample.timestamp
            update["sampled_at"] = received_at or sample.timestamp
        try:
            new = ActiveSession.model_validate(update)
        except ValidationError as exc:
            log.warning("%s: meter values for %s not published: %s", charge_point_id, tx.session_id, exc)
            return
        self._outbox.publish(ACTIVE_SESSIONS, new)
        tx.session = new

    async def needs(self, charge_point_id: str, connector_id: int, needs: EvChargingNeeds) -> None:
        """Put what the EV said it needs (2.0.1 NotifyEVChargingNeeds, K15/K17) on its session's record.

        ``ev_phases`` from the requested energy transfer; ``ev_max_power_kw`` = ``evMaxCurrent`` (A per phase) x phases
        x the charger's voltage (the grid sets the voltage; ``evMaxVoltage`` is only the EV's ceiling), or DC
        ``evMaxPower``; ``min_power_kw`` = ``evMinCurrent`` x phases x voltage when the EV's minimum is above the 6 A
        floor (IEC 61851-1), else ``None`` (the default floor); ``energy_needed_kwh`` from ``energyAmount``,
        ``departure_at`` from ``departureTime``, ``soc_pct`` from DC ``stateOfCharge``. Needs that arrive before the
        connector's transaction starts are kept for its start; a record is published only when a field changed.
        """
        tx = self._open.get((charge_point_id, connector_id))
        if tx is None:
            self._needs[(charge_point_id, connector_id)] = needs
            return
        session = tx.session or self._initial_session(tx)
        if session is None:
            return
        new = self._with_needs(tx, session, needs)
        if new is not None and new != tx.session:
            self._outbox.publish(ACTIVE_SESSIONS, new)
            tx.session = new

    def _with_needs(self, tx: OpenTransaction, session: ActiveSession, needs: EvChargingNeeds) -> ActiveSession | None:
        update = session.model_dump()
        if needs.ev_phases is not None:
            update["ev_phases"] = needs.ev_phases
            tx.phase_counter = tx.phase_counter or PhaseCounter(self._phase_policy)
            tx.phase_counter.phases = needs.ev_phases
        phases = update["ev_phases"] or session.phases
        volts = session.voltage_v
        max_kw = None
        if needs.dc:
            max_kw = needs.ev_max_power_kw
        elif needs.ev_max_current_a is not None:
            max_kw = needs.ev_max_current_a * phases * volts / 1000.0
        if max_kw is not None and max_kw > 0:
            update["ev_max_power_kw"] = min(max_kw, BOUNDS["charger_kw"])
        if not needs.dc and needs.ev_min_current_a is not None:  # at or below the floor: the default applies
            low = needs.ev_min_current_a * phases * volts / 1000.0
            update["min_power_kw"] = min(low, BOUNDS["charger_kw"]) if needs.ev_min_current_a > FLOOR_A else None
        if needs.energy_needed_kwh is not None:
            update["energy_needed_kwh"] = _clamp(needs.energy_needed_kwh, 0.0, BOUNDS["energy_kwh"])
        if needs.departure_at is not None:
            update["departure_at"] = needs.departure_at
        if needs.soc_pct is not None:
            update["soc_pct"] = _clamp(needs.soc_pct, 0.0, 100.0)
        try:
            return ActiveSession.model_validate(update)
        except ValidationError as exc:
            log.warning("%s: charging needs for %s not published: %s", tx.charge_point_id, tx.session_id, exc)
            return None

    async def stop(
        self,
        charge_point_id: str,
        transaction_id: str,
        stopped_at: datetime | None = None,
        *,
        meter_stop_kwh: float | None = None,
        reason: str | None = None,
        received_at: datetime | None = None,
    ) -> int | None:
        """Close the transaction, tombstone its session and publish its ``ended`` event; returns its connector
        id (``None`` if unknown). ``meter_stop_kwh`` is the register in the stop message (OCPP 1.6
        ``meterStop``), the final reading, kept over the last meter value; ``reason`` the stop reason as the
        charger gave it; ``received_at`` the executor's clock (default: ``stopped_at``). Logs one line with
        the energy it delivered (kWh, its final meter reading) and how long it lasted.

        An unknown transaction of a charger that is in topology is tombstoned anyway (its start may predate
        what this executor remembers), which deletes nothing if it was never published.
        """
        tx = self.find(charge_point_id, transaction_id)
        if tx is None:
            log.warning("%s: StopTransaction for unknown transaction %s", charge_point_id, transaction_id)
            if self._topology.charger(charge_point_id) is not None:
                self._outbox.tombstone(ACTIVE_SESSIONS, session_key(charge_point_id, transaction_id))
            return None
        if meter_stop_kwh is not None and tx.session is not None and tx.meter_start_kwh is not None:
            energy_kwh = _clamp(meter_stop_kwh - tx.meter_start_kwh, 0.0)
            tx.session = tx.session.model_copy(update={"energy_kwh": energy_kwh})
        await self._close(tx)
        self._needs.pop((charge_point_id, tx.connector_id), None)
        if tx.session is not None:
            ended = stopped_at or received_at or tx.started_at
            self._publish_event(tx, "ended", received_at or ended, ended, meter_stop_kwh, reason)
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
        self._by_session[tx.session_id] = tx

    def _remove(self, tx: OpenTransaction) -> None:
        if self._open.get((tx.charge_point_id, tx.connector_id)) is tx:
            del self._open[(tx.charge_point_id, tx.connector_id)]
        if self._by_id.get((tx.charge_point_id, tx.transaction_id)) is tx:
            del self._by_id[(tx.charge_point_id, tx.transaction_id)]
        if self._by_session.get(tx.session_id) is tx:
            del self._by_session[tx.session_id]

    def _publish_event(
        self,
        tx: OpenTransaction,
        event_type: str,
        received_at: datetime,
        ended_at: datetime | None = None,
        meter_stop_kwh: float | None = None,
        reason: str | None = None,
    ) -> None:
        """Publish the transaction's ``started`` or ``ended`` record on ``ocpp.transaction.events``; a record
        that breaks the contract (a charger's register out of bounds) is logged and not published."""
        session = tx.session
        if session is None:
            return
        ended = event_type == "ended"
        meter_start = tx.meter_start_kwh
        if ended and meter_stop_kwh is None and meter_start is not None and session.energy_kwh is not None:
            meter_stop_kwh = meter_start + session.energy_kwh  # the last meter value is the final reading
        try:
            event = TransactionEvent(
                event_id=f"{tx.session_id}:{event_type}",
                event_type=event_type,
                session_id=tx.session_id,
                charge_point_id=tx.charge_point_id,
                connector_id=tx.connector_id,
                transaction_id=tx.transaction_id,
                site_id=session.site_id,
                node_id=session.node_id,
                started_at=tx.started_at,
                ended_at=ended_at if ended else None,
                meter_start_kwh=meter_start,
                meter_stop_kwh=meter_stop_kwh if ended else None,
                energy_kwh=session.energy_kwh if ended else None,
                peak_power_kw=tx.peak_power_kw if ended else None,
                reason=reason[:64] if ended and reason else None,
                binding=tx.main_binding(received_at) if ended else None,
                recorded_at=received_at,
            )
        except ValidationError as exc:
            log.warning("%s: %s event of %s not published: %s", tx.charge_point_id, event_type, tx.session_id, exc)
            return
        self._outbox.publish(TRANSACTION_EVENTS, event)

    @staticmethod
    def _floor_kw(session: ActiveSession, update: dict) -> float:
        """The session's floor (kW): its ``min_power_kw``, else 6 A x its EV's phases x voltage (IEC 61851-1)."""
        if update.get("min_power_kw") is not None:
            return float(update["min_power_kw"])
        return FLOOR_A * (update.get("ev_phases") or session.phases) * session.voltage_v / 1000.0

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
