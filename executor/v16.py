"""OCPP 1.6J: the central-system side of one charger connection (websocket subprotocol ``ocpp1.6``).

The ``ocpp`` library does the framing, routing and JSON-schema validation; this module answers the
charger's messages, turns them into :class:`executor.station.StationEvents` in pipeline units, and builds
SetChargingProfile for the dispatcher. It also makes bad input harmless: the library drops a frame it
cannot parse without answering, so :meth:`CentralSystemV16.route_message` answers it with a CALLERROR
instead, and no exception from a message ever closes the connection.

Spec references: "OCPP 1.6" is the core specification (edition 2: section 4 operations initiated by the
charger, 5 by the central system, 6 messages, 7 types); "OCPP-J" is the JSON-over-websocket specification.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any

from ocpp.exceptions import (
    FormationViolationError,
    InternalError,
    OccurenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    UnknownCallErrorCodeError,
)
from ocpp.messages import CallError, MessageType, unpack
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.datatypes import ChargingProfile, ChargingSchedule, ChargingSchedulePeriod, IdTagInfo
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    ChargingProfileKindType,
    ChargingProfilePurposeType,
    ChargingRateUnitType,
    RegistrationStatus,
)
from websockets.exceptions import ConnectionClosed

from executor.station import CallOutcome, LimitRequest, MeterSample, StationEvents, StationOptions

__all__ = ["SUBPROTOCOL", "CentralSystemV16", "iso_utc", "parse_meter_value"]

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"

# OCPP-J 1.6 section 4.2.3 spells two error codes differently from 2.0.1 (kept by the 1.6 errata, 5.1/5.2);
# the library raises the 2.0.1 names from its schema validation, so they are renamed on the way out.
_V16_ERRORS: dict[str, type[OCPPError]] = {
    "FormatViolation": FormationViolationError,
    "OccurrenceConstraintViolation": OccurenceConstraintViolationError,
}


def iso_utc(when: datetime) -> str:
    """``when`` as ISO-8601 UTC with millisecond precision and a ``Z`` suffix (the OCPP 1.6 dateTime type)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: Any) -> datetime:
    """Parse a 1.6 dateTime into an aware UTC datetime (naive input is taken as UTC).

    Raises ``PropertyConstraintViolationError`` (answered as a CALLERROR) when it is not ISO-8601; the
    library's schema check does not enforce ``format: date-time``.
    """
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        cause = f"not an ISO-8601 timestamp: {value!r}"
        raise PropertyConstraintViolationError(details={"cause": cause}) from None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def _phase_total(total: float | None, per_phase: dict[str, float]) -> float | None:
    """The measurand's total: the phase-less value if sent, else the sum over L1/L2/L3 (first of L1/L1-N)."""
    if total is not None:
        return total
    return sum(per_phase.values()) if per_phase else None


def parse_meter_value(meter_value: dict[str, Any]) -> MeterSample:
    """Turn one snake-cased 1.6 ``MeterValue`` (OCPP 1.6 section 7 types MeterValue and
    SampledValue; section 4.7) into a :class:`MeterSample`.

    Read: ``Power.Active.Import`` (``W`` default or ``kW``) -> kW; ``Energy.Active.Import.Register`` (the
    default measurand; ``Wh`` default or ``kWh``) -> kWh; ``SoC`` (Percent). Values with ``format``
    ``SignedData`` or a location other than Outlet/EV, and values that are not numbers, are skipped.
    Per-phase values are summed when no phase-less total is sent.
    """
    when = parse_timestamp(meter_value.get("timestamp"))
    totals: dict[str, float] = {}
    phases: dict[str, dict[str, float]] = {}
    for sv in meter_value.get("sampled_value") or []:
        if sv.get("format") == "SignedData" or sv.get("location") not in (None, "Outlet", "EV"):
            continue
        measurand = sv.get("measurand") or "Energy.Active.Import.Register"
        unit = sv.get("unit")
        try:
            value = float(sv["value"])
        except (KeyError, TypeError, ValueError):
            log.warning("skipping sampled value that is not a number: %r", sv)
            continue
        if measurand == "Power.Active.Import":
            value = value if unit == "kW" else value / 1000.0
        elif measurand == "Energy.Active.Import.Register":
            value = value if unit == "kWh" else value / 1000.0
        elif measurand != "SoC":
            continue
        phase = sv.get("phase")
        if phase is None:
            totals[measurand] = value
        else:
            phases.setdefault(measurand, {}).setdefault(str(phase)[:2], value)
    power = _phase_total(totals.get("Power.Active.Import"), phases.get("Power.Active.Import", {}))
    energy = _phase_total(
        totals.get("Energy.Active.Import.Register"), phases.get("Energy.Active.Import.Register", {})
    )
    soc = totals.get("SoC")
    return MeterSample(timestamp=when, power_kw=power, energy_register_kwh=energy, soc_pct=soc)


def _frame_message_id(raw: Any) -> str:
    """The messageId (second element) of a frame if it can be read, else ``"-1"``."""
    try:
        frame = json.loads(raw)
    except Exception:  # not JSON, or nested too deep to parse
        return "-1"
    if isinstance(frame, list) and len(frame) >= 2 and isinstance(frame[1], str):
        return frame[1]
    return "-1"


def _v16_error(error: OCPPError) -> OCPPError:
    """Rename a 2.0.1-spelled error code to its 1.6 spelling, keeping description and details."""
    cls = _V16_ERRORS.get(error.code)
    return error if cls is None else cls(error.description, error.details)


class CentralSystemV16(ChargePoint):
    """One OCPP 1.6J charger as seen from the central system; a :class:`executor.station.Station`.

    Answers (OCPP 1.6 section 4, operations initiated by the charger): BootNotification (Accepted, ``interval``
    = heartbeat interval in s, ``currentTime`` from the clock), Heartbeat, StatusNotification, Authorize
    (Accepted), StartTransaction (Accepted, a new integer transactionId), StopTransaction and MeterValues.
    Sends SetChargingProfile (OCPP 1.6 section 5.16) through :meth:`set_limit`.
    """

    subprotocol = SUBPROTOCOL

    def __init__(self, charge_point_id: str, connection: Any, events: StationEvents, options: StationOptions):
        super().__init__(charge_point_id, connection, response_timeout=options.call_timeout_s, logger=log)
        self._events = events
        self._clock = options.clock
        self._heartbeat_interval_s = int(options.heartbeat_interval_s)
        self._started: dict[str, int] = {}  # StartTransaction messageId -> transactionId, until answered

    # -- connection ------------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Handle messages until the websocket closes; a close (clean or not) returns normally."""
        try:
            await self.start()
        except ConnectionClosed:
            return

    async def route_message(self, raw_msg: Any) -> None:
        """Route one frame; every failure is answered, none propagates (except a closed connection).

        A frame that is not JSON or not an OCPP message array (OCPP-J section 4.1) is answered with CALLERROR
        ``FormationViolation`` (OCPP-J section 4.2.3) using the frame's messageId if readable, else ``"-1"``.
        Schema-invalid or unhandled CALLs get the library's CALLERROR (1.6 spelling); unexpected
        exceptions get ``InternalError``.
        """
        try:
            msg = unpack(raw_msg)
        except Exception as exc:  # OCPPError from the library; anything else (e.g. RecursionError) too
            log.warning("%s: unparseable frame %.200r: %s", self.id, raw_msg, exc)
            cause = exc.details.get("cause", exc.description) if isinstance(exc, OCPPError) else repr(exc)
            error = FormationViolationError(details={"cause": str(cause)})
            reply = CallError(_frame_message_id(raw_msg), error.code, error.description, error.details)
            await self._send(reply.to_json())
            return
        if msg.message_type_id != MessageType.Call:
            self._response_queue.put_nowait(msg)
            return
        try:
            await self._handle_call(msg)
        except ConnectionClosed:
            raise
        except OCPPError as error:
            log.warning("%s: CALLERROR %s for %s: %s", self.id, error.code, msg.action, error.details)
            await self._send(msg.create_call_error(_v16_error(error)).to_json())
        except Exception:  # a frame like [2, "id", [], {}] makes the library raise TypeError
            log.exception("%s: unexpected error handling %r", self.id, msg)
            await self._send(msg.create_call_error(InternalError()).to_json())

    # -- messages from the charger (OCPP 1.6 section 4) ------------------------------------------------

    @on(Action.boot_notification)
    async def _v16_boot_notification(self, charge_point_vendor: str, charge_point_model: str, **_: Any):
        await self._events.on_boot(self.id, charge_point_vendor, charge_point_model)
        return call_result.BootNotification(
            current_time=iso_utc(self._clock.now()),
            interval=self._heartbeat_interval_s,
            status=RegistrationStatus.accepted,
        )

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
        transaction_id = await self._events.on_start_transaction(
            self.id, connector_id, meter_start / 1000.0, when)
        self._started[call_unique_id] = transaction_id
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted)
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
        await self._events.on_meter_values(self.id, connector_id, transaction_id, samples)
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    async def _v16_stop_transaction(
        self, transaction_id: int, timestamp: str, meter_stop: int, id_tag: str | None = None, **_: Any
    ):
        await self._events.on_stop_transaction(self.id, transaction_id, parse_timestamp(timestamp))
        # idTagInfo is only meaningful when the stop was authorised with an idTag (OCPP 1.6 section 6.50,
        # StopTransaction.conf).
        info = IdTagInfo(status=AuthorizationStatus.accepted) if id_tag is not None else None
        return call_result.StopTransaction(id_tag_info=info)

    # -- calls to the charger (OCPP 1.6 section 5) -----------------------------------------------------

    @staticmethod
    def build_set_charging_profile(request: LimitRequest) -> call.SetChargingProfile:
        """SetChargingProfile.req (OCPP 1.6 sections 5.16 and 6.43; the ChargingProfile type of
        section 7) for a transaction limit.

        A ``TxProfile`` at stack level 1 with kind ``Relative`` and one period from 0 s with no duration:
        the limit holds for the rest of the transaction, measured from a start the charger chooses, so it
        does not depend on the charger's clock agreeing with ours (an ``Absolute`` profile with a
        ``startSchedule`` from a simulated or skewed clock could be ignored as not yet valid).
        """
        schedule = ChargingSchedule(
            charging_rate_unit=ChargingRateUnitType(request.unit),
            charging_schedule_period=[
                ChargingSchedulePeriod(start_period=0, limit=request.limit, number_phases=request.number_phases)
            ],
        )
        profile = ChargingProfile(
            charging_profile_id=request.profile_id,
            stack_level=1,
            charging_profile_purpose=ChargingProfilePurposeType.tx_profile,
            charging_profile_kind=ChargingProfileKindType.relative,
            charging_schedule=schedule,
            transaction_id=int(request.transaction_id),
        )
        return call.SetChargingProfile(connector_id=request.connector_id, cs_charging_profiles=profile)

    async def set_limit(self, request: LimitRequest) -> CallOutcome:
        """Send SetChargingProfile and classify the answer (see :class:`executor.station.CallOutcome`)."""
        payload = self.build_set_charging_profile(request)
        try:
            result = await self.call(payload, suppress=False)
        except asyncio.TimeoutError:
            return CallOutcome("Timeout", f"no answer within {self._response_timeout}s")
        except OCPPError as exc:
            return CallOutcome("CallError", f"{exc.code}: {exc.description}")
        except UnknownCallErrorCodeError as exc:
            return CallOutcome("CallError", str(exc))
        status = str(result.status)
        if status not in ("Accepted", "Rejected", "NotSupported"):  # the schema already restricts this
            return CallOutcome("CallError", f"unexpected status {status!r}")
        return CallOutcome(status)  # type: ignore[arg-type]
