"""OCPP 1.6J: the central-system side of one charger connection (websocket subprotocol ``ocpp1.6``).

The ``ocpp`` library does the framing, routing and JSON-schema validation; this module answers the
charger's messages, turns them into :class:`executor.ocpp.station.StationEvents` in pipeline units, and speaks
SetChargingProfile, ClearChargingProfile and GetConfiguration for the dispatcher. Bad input is made
harmless by :class:`executor.ocpp.ocppj.RobustRouting`.

Spec references: "OCPP 1.6" is the core specification (edition 2: section 3.13 smart charging, 4
operations initiated by the charger, 5 by the central system, 6 messages, 7 types, 9 configuration keys);
"OCPP-J" is the JSON-over-websocket specification.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocpp.exceptions import FormationViolationError, OccurenceConstraintViolationError, OCPPError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.datatypes import ChargingProfile, ChargingSchedule, ChargingSchedulePeriod, IdTagInfo
from ocpp.v16.enums import Action, AuthorizationStatus, DataTransferStatus, RegistrationStatus

from executor.ocpp.meter import parse_meter_value
from executor.ocpp.ocppj import FRAME_LOG, RobustRouting, iso_utc, outcome_of, parse_timestamp, positive_int
from executor.ocpp.station import (
    CallOutcome,
    CallStatus,
    ClearRequest,
    ProfileRequest,
    RateUnit,
    StationEvents,
    StationOptions,
)

__all__ = ["SUBPROTOCOL", "CentralSystemV16", "iso_utc", "parse_meter_value"]

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"

# OCPP-J 1.6 section 4.2.3 spells two error codes differently from 2.0.1 (kept by the 1.6 errata, 5.1/5.2);
# the library raises the 2.0.1 names from its schema validation, so they are renamed on the way out.
_V16_ERRORS: dict[str, type[OCPPError]] = {
    "FormatViolation": FormationViolationError,
    "OccurrenceConstraintViolation": OccurenceConstraintViolationError,
}
_PURPOSES = {"StationMax": "ChargePointMaxProfile", "TxDefault": "TxDefaultProfile", "Tx": "TxProfile"}
# OCPP 1.6 section 9.4 ChargingScheduleAllowedChargingRateUnit: a CSL of "Current" and "Power".
_RATE_UNITS: dict[str, RateUnit] = {"current": "A", "power": "W"}
# OCPP 1.6 section 7.11 ChargingProfileStatus: what a SetChargingProfile.conf may answer.
_SET_STATUSES: dict[str, CallStatus] = {"Accepted": "Accepted", "Rejected": "Rejected", "NotSupported": "NotSupported"}
RATE_UNIT_KEY = "ChargingScheduleAllowedChargingRateUnit"
# OCPP 1.6 section 9.4 ChargingScheduleMaxPeriods: the most periods per ChargingSchedule the charger takes.
MAX_PERIODS_KEY = "ChargingScheduleMaxPeriods"


class CentralSystemV16(RobustRouting, ChargePoint):
    """One OCPP 1.6J charger as seen from the central system; a :class:`executor.ocpp.station.Station`.

    Answers (OCPP 1.6 section 4, operations initiated by the charger): BootNotification (Accepted, ``interval``
    = heartbeat interval in s, ``currentTime`` from the clock), Heartbeat, StatusNotification, Authorize
    (Accepted), StartTransaction (Accepted, a new integer transactionId), StopTransaction, MeterValues and
    DataTransfer (UnknownVendorId: no vendor extension is served). Other 1.6 actions get ``NotSupported``.
    """

    subprotocol = SUBPROTOCOL
    version = "1.6"
    known_actions = frozenset(action.value for action in Action)

    def __init__(self, charge_point_id: str, connection: Any, events: StationEvents, options: StationOptions):
        super().__init__(charge_point_id, connection, response_timeout=options.call_timeout_s, logger=FRAME_LOG)
        self._events = events
        self._clock = options.clock
        self._heartbeat_interval_s = int(options.heartbeat_interval_s)
        self._started: dict[str, str] = {}  # StartTransaction messageId -> transactionId, until answered
        self.first_message = asyncio.Event()
        self.schedule_periods = 1  # ChargingScheduleMaxPeriods, learned by rate_units(); 1 while unknown

    def wire_error(self, error: OCPPError) -> OCPPError:
        """Rename a 2.0.1-spelled error code to its 1.6 spelling, keeping description and details."""
        cls = _V16_ERRORS.get(error.code)
        return error if cls is None else cls(error.description, error.details)

    def unparseable_error(self, cause: str) -> OCPPError:
        """A frame that is not JSON or not an OCPP message array (OCPP-J 1.6 section 4.2.3): FormationViolation,
        "not conform the PDU structure"."""
        return FormationViolationError(details={"cause": cause})

    def unknown_message_type(self, type_id: Any, cause: str) -> None:
        """OCPP-J 1.6 section 4.1.3: a message type number other than 2, 3 or 4 is ignored (no answer)."""
        return None

    # -- messages from the charger (OCPP 1.6 section 4) ------------------------------------------------

    @on(Action.boot_notification)
    def _v16_boot_notification(self, charge_point_vendor: str, charge_point_model: str, **_: Any):
        return call_result.BootNotification(
            current_time=iso_utc(self._clock.now()),
            interval=self._heartbeat_interval_s,
            status=RegistrationStatus.accepted,
        )

    @after(Action.boot_notification)
    def _v16_after_boot(self, charge_point_vendor: str, charge_point_model: str, **_: Any) -> None:
        self._events.on_boot(self.id, charge_point_vendor, charge_point_model)

    @on(Action.heartbeat)
    def _v16_heartbeat(self, **_: Any):
        return call_result.Heartbeat(current_time=iso_utc(self._clock.now()))

    @on(Action.status_notification)
    def _v16_status_notification(self, connector_id: int, error_code: str, status: str, **_: Any):
        log.debug("%s: connector %s is %s (%s)", self.id, connector_id, status, error_code)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def _v16_authorize(self, id_tag: str, **_: Any):
        return call_result.Authorize(id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted))

    @on(Action.start_transaction)
    async def _v16_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, call_unique_id: str, **_: Any
    ):
        # meterStart is an integer in Wh (OCPP 1.6 section 6.45, StartTransaction.req).
        when = parse_timestamp(timestamp)
        transaction_id = await self._events.on_start_transaction(self.id, connector_id, meter_start / 1000.0, when)
        self._started[call_unique_id] = transaction_id
        return call_result.StartTransaction(
            transaction_id=int(transaction_id), id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted)
        )

    @after(Action.start_transaction)
    def _v16_after_start_transaction(self, call_unique_id: str, **_: Any) -> None:
        # Runs once StartTransaction.conf is on the wire, so no profile can name a transaction id the
        # charger has not received yet.
        transaction_id = self._started.pop(call_unique_id, None)
        if transaction_id is not None:
            self._events.on_transaction_confirmed(self.id, transaction_id)

    @on(Action.meter_values)
    async def _v16_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], transaction_id: int | None = None, **_: Any
    ):
        samples = sorted((parse_meter_value(mv) for mv in meter_value), key=lambda s: s.timestamp)
        tx = None if transaction_id is None else str(transaction_id)
        await self._events.on_meter_values(self.id, connector_id, tx, samples)
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    async def _v16_stop_transaction(
        self,
        transaction_id: int,
        timestamp: str,
        meter_stop: int,
        id_tag: str | None = None,
        reason: str | None = None,
        **_: Any,
    ):
        # meterStop is an integer in Wh, the final register reading (OCPP 1.6 section 6.49, StopTransaction.req).
        await self._events.on_stop_transaction(
            self.id, str(transaction_id), parse_timestamp(timestamp), meter_stop / 1000.0, reason
        )
        # idTagInfo is only meaningful when the stop was authorised with an idTag (OCPP 1.6 section 6.50,
        # StopTransaction.conf).
        info = IdTagInfo(status=AuthorizationStatus.accepted) if id_tag is not None else None
        return call_result.StopTransaction(id_tag_info=info)

    @on(Action.data_transfer)
    def _v16_data_transfer(self, vendor_id: str, **_: Any):
        # OCPP 1.6 sections 4.3 and 6.18: no vendor extension is served here, so every vendorId is unknown;
        # that is a result (status UnknownVendorId), not a CALLERROR.
        log.info("%s: DataTransfer for vendor %r: UnknownVendorId", self.id, vendor_id)
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

    # -- calls to the charger (OCPP 1.6 section 5) -----------------------------------------------------

    @staticmethod
    def build_set_charging_profile(request: ProfileRequest) -> call.SetChargingProfile:
        """SetChargingProfile.req (OCPP 1.6 sections 5.16 and 6.43; ChargingProfile in section 7) for a
        one-period profile, or two with ``next_period``.

        ``Tx`` and ``TxDefault`` are ``Relative`` with no duration: the limit holds for the rest of the
        transaction, measured from a start the charger chooses, so it does not depend on the charger's clock
        agreeing with ours. A ``Tx`` profile with a later period is ``Absolute`` from ``start_schedule``
        (section 7.13: periods are offsets from startSchedule), so the cut lands at a known instant.
        ``StationMax`` (ChargePointMaxProfile, connector 0) is ``Absolute`` from ``start_schedule``;
        ``valid_to`` is passed when set.
        """
        start = None if request.start_schedule is None else iso_utc(request.start_schedule)
        periods = [ChargingSchedulePeriod(start_period=0, limit=request.limit, number_phases=request.number_phases)]
        if request.next_period is not None:
            at, limit = request.next_period
            periods.append(ChargingSchedulePeriod(start_period=at, limit=limit, number_phases=request.number_phases))
        schedule = ChargingSchedule(
            charging_rate_unit=request.unit,
            charging_schedule_period=periods,
            start_schedule=start,
        )
        profile = ChargingProfile(
            charging_profile_id=request.profile_id,
            stack_level=request.stack_level,
            charging_profile_purpose=_PURPOSES[request.purpose],
            charging_profile_kind="Absolute" if start is not None else "Relative",
            charging_schedule=schedule,
            transaction_id=None if request.transaction_id is None else int(request.transaction_id),
            valid_to=None if request.valid_to is None else iso_utc(request.valid_to),
        )
        return call.SetChargingProfile(connector_id=request.connector_id, cs_charging_profiles=profile)

    async def set_profile(self, request: ProfileRequest) -> CallOutcome:
        """Send SetChargingProfile and classify the answer (see :class:`executor.ocpp.station.CallOutcome`)."""
        payload = self.build_set_charging_profile(request)
        outcome, result = await outcome_of(self.call(payload, suppress=False), self._response_timeout)
        if result is None:
            return outcome
        status = _SET_STATUSES.get(str(result.status))
        if status is None:  # the schema already restricts this
            return CallOutcome("CallError", f"unexpected status {str(result.status)!r}")
        return CallOutcome(status)

    async def clear_profile(self, request: ClearRequest) -> CallOutcome:
        """ClearChargingProfile.req by id (OCPP 1.6 section 5.5); ``Unknown`` (none installed) counts as done."""
        payload = call.ClearChargingProfile(id=request.profile_id, connector_id=request.connector_id)
        outcome, result = await outcome_of(self.call(payload, suppress=False), self._response_timeout)
        return outcome

    async def rate_units(self) -> tuple[RateUnit, ...] | None:
        """GetConfiguration ``ChargingScheduleAllowedChargingRateUnit`` (OCPP 1.6 sections 5.8 and 9.4); the
        same call reads ``ChargingScheduleMaxPeriods`` into :attr:`schedule_periods` (1 when it is missing or
        not a positive integer)."""
        payload = call.GetConfiguration(key=[RATE_UNIT_KEY, MAX_PERIODS_KEY])
        outcome, result = await outcome_of(self.call(payload, suppress=False), self._response_timeout)
        if result is None:
            log.info("%s: GetConfiguration %s: %s", self.id, outcome.status, outcome.error or "")
            return None
        found: tuple[RateUnit, ...] = ()
        for entry in result.configuration_key or []:
            if entry.get("key") == MAX_PERIODS_KEY:
                self.schedule_periods = positive_int(entry.get("value"))
            elif entry.get("key") == RATE_UNIT_KEY and entry.get("value"):
                units = [_RATE_UNITS.get(v.strip().lower()) for v in str(entry["value"]).split(",")]
                found = tuple(u for u in units if u is not None)
        return found or None
