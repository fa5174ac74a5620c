"""OCPP 2.0.1: the CSMS side of one charging station connection (websocket subprotocol ``ocpp2.0.1``).

Same seam as :mod:`executor.ocpp.v16`: the ``ocpp`` library's v201 classes frame and validate, this module
answers and reports :class:`executor.ocpp.station.StationEvents`, and speaks SetChargingProfile,
ClearChargingProfile and GetVariables for the dispatcher. An EVSE plays the part of a 1.6 connector
(``connector_id`` = ``evseId`` in the pipeline's records); the charging station assigns transaction ids.

Spec references: "2.0.1" is OCPP 2.0.1 Part 2 (functional blocks B provisioning, E transactions,
G availability, J meter values, K smart charging; section 2 datatypes); "OCPP-J" is Part 4.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocpp.exceptions import OccurrenceConstraintViolationError, OCPPError, PropertyConstraintViolationError
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201 import datatypes as dt
from ocpp.v201.enums import Action

from executor.ocpp.meter import parse_meter_value
from executor.ocpp.ocppj import FRAME_LOG, RobustRouting, iso_utc, outcome_of, parse_timestamp, positive_int
from executor.ocpp.station import (
    CallOutcome,
    CallStatus,
    ClearRequest,
    EvChargingNeeds,
    MeterSample,
    ProfileRequest,
    RateUnit,
    StationEvents,
    StationOptions,
)

__all__ = ["SUBPROTOCOL", "CentralSystemV201"]

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp2.0.1"
_PURPOSES = {"StationMax": "ChargingStationMaxProfile", "TxDefault": "TxDefaultProfile", "Tx": "TxProfile"}
RATE_UNIT_COMPONENT, RATE_UNIT_VARIABLE = "SmartChargingCtrlr", "RateUnit"
# SmartChargingCtrlr.PeriodsPerSchedule (the 2.0.1 device model): the most periods one schedule may hold.
PERIODS_VARIABLE = "PeriodsPerSchedule"
_RATE_UNITS: dict[str, RateUnit] = {"A": "A", "W": "W"}
# ChargingProfileStatusEnumType: a SetChargingProfileResponse is Accepted or Rejected (K01.FR.22).
_SET_STATUSES: dict[str, CallStatus] = {"Accepted": "Accepted", "Rejected": "Rejected"}


class RpcFrameworkError(OCPPError):
    """OCPP-J 2.0.1 section 4.3: the content is not a valid RPC request (e.g. the messageId is unreadable)."""

    code = "RpcFrameworkError"
    default_description = "Content of the call is not a valid RPC Request, for example: MessageId could not be read."


class MessageTypeNotSupportedError(OCPPError):
    """OCPP-J 2.0.1 section 4.3: a message type number that is not supported."""

    code = "MessageTypeNotSupported"
    default_description = "A message with a Message Type Number received that is not supported by this implementation."


def _samples(meter_value: list[dict[str, Any]] | None) -> list[MeterSample]:
    return sorted((parse_meter_value(mv) for mv in meter_value or []), key=lambda s: s.timestamp)


_PHASES_OF_TRANSFER = {"AC_single_phase": 1, "AC_two_phase": 2, "AC_three_phase": 3}


def _number(params: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
    value = params.get(key)
    return None if value is None else float(value) * scale


def parse_charging_needs(charging_needs: dict[str, Any]) -> EvChargingNeeds:
    """A snake-cased ``ChargingNeedsType`` (2.0.1 section 2, NotifyEVChargingNeedsRequest) in pipeline units:
    ``requestedEnergyTransfer`` -> phases (``DC``: none), ACChargingParameters ``evMaxCurrent`` /
    ``evMinCurrent`` (A per phase), ``evMaxVoltage`` (V), ``energyAmount`` (Wh -> kWh); DCChargingParameters
    ``evMaxPower`` (W -> kW), ``energyAmount``, ``stateOfCharge`` (%); ``departureTime``. Raises
    ``PropertyConstraintViolationError`` for a departureTime that is not ISO-8601."""
    transfer = str(charging_needs.get("requested_energy_transfer", ""))
    ac = charging_needs.get("ac_charging_parameters") or {}
    dc = charging_needs.get("dc_charging_parameters") or {}
    departure = charging_needs.get("departure_time")
    if transfer == "DC":
        return EvChargingNeeds(
            dc=True,
            ev_max_power_kw=_number(dc, "ev_max_power", 0.001),
            ev_max_voltage_v=_number(dc, "ev_max_voltage"),
            energy_needed_kwh=_number(dc, "energy_amount", 0.001),
            soc_pct=_number(dc, "state_of_charge"),
            departure_at=None if departure is None else parse_timestamp(departure),
        )
    return EvChargingNeeds(
        ev_phases=_PHASES_OF_TRANSFER.get(transfer),
        ev_max_current_a=_number(ac, "ev_max_current"),
        ev_min_current_a=_number(ac, "ev_min_current"),
        ev_max_voltage_v=_number(ac, "ev_max_voltage"),
        energy_needed_kwh=_number(ac, "energy_amount", 0.001),
        departure_at=None if departure is None else parse_timestamp(departure),
    )


class CentralSystemV201(RobustRouting, ChargePoint):
    """One OCPP 2.0.1 charging station as seen from the CSMS; a :class:`executor.ocpp.station.Station`.

    Answers BootNotification (B01: Accepted, ``interval``, ``currentTime``), Heartbeat (G02), StatusNotification (G01),
    Authorize (C01: Accepted), TransactionEvent Started / Updated / Ended with meter values (E01-E07, J02), MeterValues
    (J01), NotifyEVChargingNeeds (K15/K17: Accepted), NotifyEvent, NotifyReport, SecurityEventNotification and
    DataTransfer (P01: UnknownVendorId, no vendor extension is served). Other 2.0.1 actions get ``NotSupported``.
    """

    subprotocol = SUBPROTOCOL
    version = "2.0.1"
    known_actions = frozenset(action.value for action in Action)

    def __init__(self, charge_point_id: str, connection: Any, events: StationEvents, options: StationOptions):
        super().__init__(charge_point_id, connection, response_timeout=options.call_timeout_s, logger=FRAME_LOG)
        self._events = events
        self._clock = options.clock
        self._heartbeat_interval_s = int(options.heartbeat_interval_s)
        self._evse_of: dict[str, int] = {}  # transactionId -> evseId, for messages that omit evse
        self.first_message = asyncio.Event()
        self.schedule_periods = 1  # SmartChargingCtrlr.PeriodsPerSchedule, learned by rate_units(); 1: unknown

    def wire_error(self, error: OCPPError) -> OCPPError:
        """Sharpen the library's schema errors to OCPP-J 2.0.1 section 4.3: a missing required field is an
        OccurrenceConstraintViolation (not ProtocolError), a value outside an enumeration a
        PropertyConstraintViolation (not FormatViolation)."""
        cause = str((error.details or {}).get("cause", ""))
        if error.code == "ProtocolError" and cause.endswith("is a required property"):
            return OccurrenceConstraintViolationError(details=error.details)
        if error.code == "FormatViolation" and " is not one of " in cause:
            return PropertyConstraintViolationError(details=error.details)
        return error

    def unparseable_error(self, cause: str) -> OCPPError:
        """OCPP 2.0.1 Part 4 section 4.3: a frame that is not an RPC message is RpcFrameworkError."""
        return RpcFrameworkError(details={"cause": cause})

    def unknown_message_type(self, type_id: Any, cause: str) -> OCPPError:
        """OCPP 2.0.1 Part 4 section 4.4: a message type number other than 2, 3 or 4 is answered
        MessageTypeNotSupported; a message type that is not a number makes the frame no RPC message."""
        if isinstance(type_id, (int, float)) and not isinstance(type_id, bool):
            return MessageTypeNotSupportedError(details={"cause": cause})
        return RpcFrameworkError(details={"cause": cause})

    # -- messages from the charging station ------------------------------------------------------------

    @on(Action.boot_notification)
    def _v201_boot_notification(self, charging_station: dict[str, Any], reason: str, **_: Any):
        return call_result.BootNotification(
            current_time=iso_utc(self._clock.now()), interval=self._heartbeat_interval_s, status="Accepted"
        )

    @after(Action.boot_notification)
    def _v201_after_boot(self, charging_station: dict[str, Any], reason: str, **_: Any) -> None:
        self._events.on_boot(self.id, charging_station.get("vendor_name", ""), charging_station.get("model", ""))

    @on(Action.heartbeat)
    def _v201_heartbeat(self, **_: Any):
        return call_result.Heartbeat(current_time=iso_utc(self._clock.now()))

    @on(Action.status_notification)
    def _v201_status_notification(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any
    ):
        log.debug("%s: EVSE %s connector %s is %s", self.id, evse_id, connector_id, connector_status)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def _v201_authorize(self, id_token: dict[str, Any], **_: Any):
        return call_result.Authorize(id_token_info=dt.IdTokenInfoType(status="Accepted"))

    @on(Action.meter_values)
    async def _v201_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any):
        # J01: meter values outside a transaction carry no session; readings of a transaction come in
        # TransactionEvent (J02), which is what sessions are built from.
        return call_result.MeterValues()

    @on(Action.notify_ev_charging_needs)
    async def _v201_notify_ev_charging_needs(self, evse_id: int, charging_needs: dict[str, Any], **_: Any):
        """NotifyEVChargingNeeds (K15, K17 renegotiation): the EV's needs go on its session's record and the
        answer is Accepted. The status only says the CSMS processed the message, not that the needs can be
        met (NotifyEVChargingNeedsStatusEnumType); the setpoints that follow are the engine's answer."""
        needs = parse_charging_needs(charging_needs)
        await self._events.on_ev_charging_needs(self.id, evse_id, needs)
        return call_result.NotifyEVChargingNeeds(status="Accepted")

    @on(Action.notify_event)
    def _v201_notify_event(self, **_: Any):
        return call_result.NotifyEvent()

    @on(Action.notify_report)
    def _v201_notify_report(self, **_: Any):
        return call_result.NotifyReport()

    @on(Action.security_event_notification)
    def _v201_security_event(self, type: str, timestamp: str, **_: Any):
        log.info("%s: security event %s at %s", self.id, type, timestamp)
        return call_result.SecurityEventNotification()

    @on(Action.transaction_event)
    async def _v201_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        meter_value: list[dict[str, Any]] | None = None,
        evse: dict[str, Any] | None = None,
        id_token: dict[str, Any] | None = None,
        **_: Any,
    ):
        """TransactionEvent (E01-E07): Started opens a session (the first event of a transaction carries
        the evse; without one the event gets OccurrenceConstraintViolation), Updated folds
        meter values into it (an Updated for an unknown transaction with an evse is adopted, so a session
        that began before an executor restart is not lost), Ended folds the last readings and closes it."""
        when = parse_timestamp(timestamp)
        tx = str(transaction_info["transaction_id"])
        samples = _samples(meter_value)
        if evse is not None:
            self._evse_of[tx] = int(evse["id"])
        evse_id = self._evse_of.get(tx)
        known = self._events.is_open_transaction(self.id, tx)
        if not known and event_type != "Ended":
            if evse_id is None:
                raise OccurrenceConstraintViolationError(details={"cause": "evse is required to start a transaction"})
            start = next((s.energy_register_kwh for s in samples if s.energy_register_kwh is not None), None)
            await self._events.on_start_transaction(self.id, evse_id, start, when, transaction_id=tx)
        if samples and evse_id is not None:
            await self._events.on_meter_values(self.id, evse_id, tx, samples)
        if event_type == "Ended":  # E06: the Ended event's meter values (folded above) are the final reading
            await self._events.on_stop_transaction(self.id, tx, when, reason=transaction_info.get("stopped_reason"))
            self._evse_of.pop(tx, None)
        info = dt.IdTokenInfoType(status="Accepted") if id_token is not None else None
        return call_result.TransactionEvent(id_token_info=info)

    @on(Action.data_transfer)
    def _v201_data_transfer(self, vendor_id: str, **_: Any):
        # P01 (DataTransferResponse): no vendor extension is served here, so every vendorId is unknown; that
        # is a result (status UnknownVendorId), not a CALLERROR.
        log.info("%s: DataTransfer for vendor %r: UnknownVendorId", self.id, vendor_id)
        return call_result.DataTransfer(status="UnknownVendorId")

    # -- calls to the charging station -----------------------------------------------------------------

    @staticmethod
    def build_set_charging_profile(request: ProfileRequest) -> call.SetChargingProfile:
        """SetChargingProfileRequest (K01) for a one-period profile on ``evseId`` = ``connector_id``, or two
        with ``next_period``.

        ``StationMax`` goes to evseId 0 as ``Absolute`` from ``start_schedule`` (K01.FR.38: never
        ``Relative``); ``TxDefault`` and ``Tx`` are ``Relative`` (K01.FR.41: no startSchedule), except a
        ``Tx`` with a later period, which is ``Absolute`` from ``start_schedule`` (K01.FR.40: an Absolute
        profile has a startSchedule) so its cut lands at a known instant; ``Tx`` carries the transactionId
        (K01.FR.03). The schedule id equals the profile id.
        """
        start = None if request.start_schedule is None else iso_utc(request.start_schedule)
        periods = [
            dt.ChargingSchedulePeriodType(start_period=0, limit=request.limit, number_phases=request.number_phases)
        ]
        if request.next_period is not None:
            at, limit = request.next_period
            periods.append(
                dt.ChargingSchedulePeriodType(start_period=at, limit=limit, number_phases=request.number_phases)
            )
        schedule = dt.ChargingScheduleType(
            id=request.profile_id,
            charging_rate_unit=request.unit,
            charging_schedule_period=periods,
            start_schedule=start,
        )
        profile = dt.ChargingProfileType(
            id=request.profile_id,
            stack_level=request.stack_level,
            charging_profile_purpose=_PURPOSES[request.purpose],
            charging_profile_kind="Absolute" if start is not None else "Relative",
            charging_schedule=[schedule],
            transaction_id=request.transaction_id,
            valid_to=None if request.valid_to is None else iso_utc(request.valid_to),
        )
        return call.SetChargingProfile(evse_id=request.connector_id, charging_profile=profile)

    async def set_profile(self, request: ProfileRequest) -> CallOutcome:
        """Send SetChargingProfile and classify the answer (Accepted or Rejected, K01.FR.22)."""
        payload = self.build_set_charging_profile(request)
        outcome, result = await outcome_of(self.call(payload, suppress=False), self._response_timeout)
        if result is None:
            return outcome
        status = _SET_STATUSES.get(str(result.status))
        if status is None:
            return CallOutcome("CallError", f"unexpected status {str(result.status)!r}")
        reason = (result.status_info or {}).get("reason_code") if isinstance(result.status_info, dict) else None
        return CallOutcome(status, reason)

    async def clear_profile(self, request: ClearRequest) -> CallOutcome:
        """ClearChargingProfileRequest by id (K10); ``Unknown`` (none installed) counts as done."""
        payload = call.ClearChargingProfile(charging_profile_id=request.profile_id)
        outcome, _ = await outcome_of(self.call(payload, suppress=False), self._response_timeout)
        return outcome

    async def rate_units(self) -> tuple[RateUnit, ...] | None:
        """GetVariables ``SmartChargingCtrlr.RateUnit`` (B06; the variable is a MemberList of A and W); the
        same call reads ``SmartChargingCtrlr.PeriodsPerSchedule`` into :attr:`schedule_periods` (1 when it
        is unknown or not a positive integer)."""
        payload = call.GetVariables(
            get_variable_data=[
                dt.GetVariableDataType(
                    component=dt.ComponentType(name=RATE_UNIT_COMPONENT),
                    variable=dt.VariableType(name=name),
                )
                for name in (RATE_UNIT_VARIABLE, PERIODS_VARIABLE)
            ]
        )
        outcome, result = await outcome_of(self.call(payload, suppress=False), self._response_timeout)
        if result is None:
            log.info("%s: GetVariables %s: %s", self.id, outcome.status, outcome.error or "")
            return None
        found: tuple[RateUnit, ...] = ()
        for entry in result.get_variable_result or []:
            if entry.get("attribute_status") != "Accepted" or not entry.get("attribute_value"):
                continue
            name = (entry.get("variable") or {}).get("name")
            if name == PERIODS_VARIABLE:
                self.schedule_periods = positive_int(entry["attribute_value"])
            elif name == RATE_UNIT_VARIABLE:
                units = [v.strip().upper() for v in str(entry["attribute_value"]).split(",")]
                found = tuple(_RATE_UNITS[u] for u in units if u in _RATE_UNITS)
        return found or None
