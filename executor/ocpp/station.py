"""The protocol-neutral seam between an OCPP version module and the rest of the executor.

A version module (:mod:`executor.ocpp.v16`, :mod:`executor.ocpp.v201`) owns one websocket connection: it parses that
version's messages, answers them, and reports what happened through :class:`StationEvents` in plain,
unit-normalised terms (kWh, kW, aware UTC datetimes, transaction ids as strings). In the other direction
the dispatcher asks a :class:`Station` to install or clear a :class:`ProfileRequest` and gets a
:class:`CallOutcome` back, without knowing how that version spells SetChargingProfile. Sessions, the
ledger and dispatch therefore never import ``ocpp``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

RateUnit = Literal["A", "W"]
CallStatus = Literal["Accepted", "Rejected", "NotSupported", "CallError", "Timeout"]
Purpose = Literal["StationMax", "TxDefault", "Tx"]
"""Profile purposes by their neutral names: ``StationMax`` is ChargePointMaxProfile (1.6) or
ChargingStationMaxProfile (2.0.1); ``TxDefault`` is TxDefaultProfile; ``Tx`` is TxProfile."""


@dataclass(frozen=True)
class MeterSample:
    """One timestamped meter reading of a transaction, already converted to the pipeline's units.

    ``power_kw`` is the active import power (kW), ``energy_register_kwh`` the import energy register (kWh,
    cumulative, the same register as the transaction's meter start) and ``soc_pct`` the EV state of charge
    (0-100); any of them is ``None`` when the charger did not report it in this sample.
    ``phase_current_a`` maps the charger's phases ``"L1"``, ``"L2"``, ``"L3"`` to the ``Current.Import``
    reported on each (A); empty when no per-phase current was sent.
    """

    timestamp: datetime
    power_kw: float | None = None
    energy_register_kwh: float | None = None
    soc_pct: float | None = None
    phase_current_a: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvChargingNeeds:
    """What an EV said it needs (OCPP 2.0.1 NotifyEVChargingNeedsRequest, K15/K17; ISO 15118), in pipeline
    units. ``None`` where the message did not say.

    ``ev_phases`` from ``requestedEnergyTransfer`` (``AC_single_phase`` 1, ``AC_two_phase`` 2,
    ``AC_three_phase`` 3; ``DC`` None); ``ev_max_current_a`` and ``ev_min_current_a`` per phase from
    ACChargingParameters ``evMaxCurrent`` / ``evMinCurrent``, ``ev_max_voltage_v`` its ``evMaxVoltage``;
    ``ev_max_power_kw`` from DCChargingParameters ``evMaxPower`` (W); ``energy_needed_kwh`` from either
    ``energyAmount`` (Wh); ``soc_pct`` from DC ``stateOfCharge``; ``departure_at`` from ``departureTime``.
    """

    dc: bool = False
    ev_phases: int | None = None
    ev_max_current_a: float | None = None
    ev_min_current_a: float | None = None
    ev_max_voltage_v: float | None = None
    ev_max_power_kw: float | None = None
    energy_needed_kwh: float | None = None
    soc_pct: float | None = None
    departure_at: datetime | None = None


@dataclass(frozen=True)
class ProfileRequest:
    """A charging profile with one schedule period from 0 s, and at most one later period, to install on a
    connector (or station-wide).

    ``connector_id`` is the 1.6 connectorId or the 2.0.1 evseId; 0 means the whole station. ``limit`` is in
    ``unit``: amperes per phase for ``"A"``, watts (total) for ``"W"``, already rounded down to the 0.1
    resolution both versions accept. ``profile_id`` is stable per (purpose, connector) so a newer profile
    replaces the installed one (OCPP 1.6 section 5.16.2; OCPP 2.0.1 K01.FR.05). ``start_schedule`` makes the
    profile ``Absolute`` (required for a station maximum in 2.0.1, K01.FR.38: not ``Relative``); without it
    the profile is ``Relative`` (to the transaction start, or its receipt). ``valid_to`` bounds its
    validity on the charger's clock; ``transaction_id`` binds a ``Tx`` profile to its transaction.
    ``next_period`` is ``(startPeriod, limit)``: a second chargingSchedulePeriod from ``startPeriod`` seconds
    after ``start_schedule`` (so it needs one) at ``limit`` in ``unit``, a known decrease the charger applies
    on its own (docs/architecture.md, "Schedule periods"); periods start at 0 and increase (OCPP 1.6
    section 7.13 ChargingSchedule; 2.0.1 ChargingScheduleType). Raises ``ValueError`` without
    ``start_schedule`` or with a ``startPeriod`` below 1.
    """

    purpose: Purpose
    connector_id: int
    profile_id: int
    stack_level: int
    limit: float
    unit: RateUnit
    number_phases: int
    transaction_id: str | None = None
    start_schedule: datetime | None = None
    valid_to: datetime | None = None
    next_period: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        if self.next_period is not None and (self.start_schedule is None or self.next_period[0] < 1):
            raise ValueError("a later schedule period needs start_schedule and a startPeriod of at least 1 s")


@dataclass(frozen=True)
class ClearRequest:
    """ClearChargingProfile by profile id (OCPP 1.6 section 5.5; OCPP 2.0.1 K10)."""

    profile_id: int
    connector_id: int | None = None


@dataclass(frozen=True)
class CallOutcome:
    """What became of one call to a charger.

    ``status`` is the charger's answer (``Accepted``, ``Rejected``, ``NotSupported``; a ClearChargingProfile
    ``Unknown`` is reported as ``Accepted``: nothing of that id is installed, which is what was asked),
    ``CallError`` when it answered with a CALLERROR (or an answer that failed schema validation), or
    ``Timeout`` when it did not answer within the call timeout; ``error`` carries the error code and
    description when there is one.
    """

    status: CallStatus
    error: str | None = None


class StationEvents(Protocol):
    """What a version module reports to the executor; implemented by :class:`executor.service.Executor`.

    Exceptions raised here reach the version module's handler, which answers the charger with a
    CALLERROR (OCPP-J 1.6 section 4.2.3; OCPP-J 2.0.1 section 4.2.3), so the charger retries transaction
    messages rather than losing them.
    """

    def on_boot(self, charge_point_id: str, vendor: str, model: str) -> None:
        """A BootNotification was accepted and its answer sent (the charger may have rebooted)."""

    async def on_start_transaction(
        self,
        charge_point_id: str,
        connector_id: int,
        meter_start_kwh: float | None,
        timestamp: datetime,
        transaction_id: str | None = None,
    ) -> str:
        """A transaction started; returns its id. 1.6 passes ``transaction_id=None`` and gets a new integer
        id (as a string; unique across executor restarts); 2.0.1 passes the charger's own id."""

    def on_transaction_confirmed(self, charge_point_id: str, transaction_id: str) -> None:
        """The answer carrying ``transaction_id`` has been sent, so the charger now knows the id (1.6)."""

    async def on_meter_values(
        self, charge_point_id: str, connector_id: int, transaction_id: str | None, samples: list[MeterSample]
    ) -> None:
        """Meter readings arrived (``transaction_id`` is ``None`` for readings outside a transaction)."""

    async def on_stop_transaction(
        self,
        charge_point_id: str,
        transaction_id: str,
        timestamp: datetime,
        meter_stop_kwh: float | None = None,
        reason: str | None = None,
    ) -> None:
        """A transaction stopped at ``timestamp`` (the charger's clock); ``meter_stop_kwh`` is the energy
        register in the stop message when it has one (OCPP 1.6 ``meterStop``, kWh), ``reason`` the stop
        reason as given (1.6 ``StopTransaction.reason``, 2.0.1 ``transactionInfo.stoppedReason``)."""

    async def on_ev_charging_needs(self, charge_point_id: str, connector_id: int, needs: EvChargingNeeds) -> None:
        """The EV on ``connector_id`` (2.0.1 evseId) reported its charging needs (NotifyEVChargingNeeds)."""

    def is_open_transaction(self, charge_point_id: str, transaction_id: str) -> bool:
        """Whether the executor holds ``transaction_id`` as open on this charger (2.0.1 adopts unknown ones)."""


class Station(Protocol):
    """One live charger connection, as the dispatcher and the server see it."""

    id: str
    subprotocol: str
    schedule_periods: int
    """How many chargingSchedulePeriods the charger takes in one schedule (1.6 ``ChargingScheduleMaxPeriods``,
    2.0.1 ``SmartChargingCtrlr.PeriodsPerSchedule``), learned by :meth:`rate_units`; 1 while unknown."""

    async def serve(self) -> None:
        """Read and answer the charger's messages until the connection closes (then return normally)."""

    async def wait_first_message(self, timeout_s: float) -> None:
        """Return once the charger's first message was answered, or after ``timeout_s`` real seconds."""

    async def set_profile(self, request: ProfileRequest) -> CallOutcome:
        """SetChargingProfile; never raises for a charger-side failure.

        Raises ``websockets.exceptions.ConnectionClosed`` if the connection is gone.
        """

    async def clear_profile(self, request: ClearRequest) -> CallOutcome:
        """ClearChargingProfile; never raises for a charger-side failure (``ConnectionClosed`` as above)."""

    async def rate_units(self) -> tuple[RateUnit, ...] | None:
        """The charging rate units the charger accepts, or ``None`` when it would not say (ask once); the same
        call learns :attr:`schedule_periods`."""


@dataclass(frozen=True)
class StationOptions:
    """Settings every version module receives: call timeout (s), heartbeat interval (s), clock."""

    call_timeout_s: float
    heartbeat_interval_s: int
    clock: Any


StationFactory = Callable[[str, Any, StationEvents, StationOptions], Station]
"""``factory(charge_point_id, connection, events, options)`` builds a :class:`Station` for a connection."""
