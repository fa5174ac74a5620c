"""The OCPP 2.0.1 adapter of the simulated station: :class:`SimulatedChargingStation`.

It maps OCPP 2.0.1 messages (websocket subprotocol ``ocpp2.0.1``, the ``ocpp`` library's v201 classes) to
and from the version-neutral :class:`~pipeline.sim.station.Station`, as :mod:`pipeline.sim.v16` does for
1.6; neither adapter builds on the other. Each connector is an EVSE with one connector. BootNotification
(B01), StatusNotification (G01: Available or Occupied), Authorize (C01), TransactionEvent Started /
Updated / Ended with meter values (E01-E07, J02) and, once a transaction runs, NotifyEVChargingNeeds with
the EV's AC charging parameters and departure time (K15; whatever the CSMS answers, a CALLERROR included,
charging goes on) go out; SetChargingProfile (K01, with ``evseId``;
ChargingStationMaxProfile on EVSE 0) and ClearChargingProfile (K10) are translated to the neutral
:class:`~pipeline.sim.profiles.Profile` model; GetVariables ``SmartChargingCtrlr.RateUnit`` and ``EVSE.PhaseRotation``
(B06) and RequestStopTransaction (F03) are answered.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint as OcppChargePoint
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.client import ClientConnection

from pipeline.sim.ev import EV, NOMINAL_VOLTAGE_V
from pipeline.sim.profiles import STATION_MAX, TX, TX_DEFAULT, Profile, Purpose, TransactionId
from pipeline.sim.session import (
    BEGIN,
    END,
    EV_DISCONNECTED,
    LOCAL,
    PHASE_NAMES,
    REMOTE,
    Connector,
    ConnectorState,
    MeterContext,
    MeterReading,
    Session,
    SessionSummary,
    StopReason,
)
from pipeline.sim.station import Link, Station
from pipeline.sim.wire import ACCEPTED, REJECTED, charging_profile, iso

__all__ = ["CsmsLink201", "SimulatedChargingStation", "charging_needs", "meter_value", "parse_profile"]

log = logging.getLogger(__name__)

PURPOSES: dict[str, Purpose] = {
    "TxProfile": TX,
    "TxDefaultProfile": TX_DEFAULT,
    "ChargingStationMaxProfile": STATION_MAX,
}
"""ChargingProfilePurposeEnumType to the neutral purpose (ChargingStationExternalConstraints is not
supported: the CSMS may not set it, K01.FR.22)."""
TRIGGERS: dict[StopReason, str] = {EV_DISCONNECTED: "EVDeparted", LOCAL: "StopAuthorized", REMOTE: "RemoteStop"}
"""The TransactionEvent Ended triggerReason per stop reason (AbnormalCondition for the others)."""
RATE_UNITS = "A,W"
ENERGY_TRANSFER = {1: "AC_single_phase", 2: "AC_two_phase", 3: "AC_three_phase"}
"""EnergyTransferModeEnumType by the phases the EV charges on."""


def id_token(ev: EV) -> dict[str, str]:
    """The EV's IdTokenType (C01), type Central: its id cut to 20 characters, as the 1.6 adapter's idTag, so
    an EV has the same id in both versions (2.0.1 would allow 36)."""
    return {"id_token": ev.ev_id[:20], "type": "Central"}


def parse_profile(evse_id: int, p: dict[str, Any], received_at: datetime) -> Profile:
    """A snake_cased 2.0.1 ChargingProfileType (``chargingProfile`` of SetChargingProfileRequest, K01) set on
    ``evse_id`` as the neutral :class:`Profile`, with the first of its charging schedules. ``KeyError``,
    ``TypeError``, ``ValueError`` or ``IndexError`` for a profile that cannot be read (a missing field or
    schedule, an unknown purpose, kind or unit)."""
    schedules = p.get("charging_schedule") or [{}]
    return charging_profile(
        evse_id,
        profile_id=p["id"],
        stack_level=p["stack_level"],
        purpose=PURPOSES[p["charging_profile_purpose"]],
        kind=p["charging_profile_kind"],
        schedule=schedules[0],
        received_at=received_at,
        transaction_id=p.get("transaction_id"),
        recurrency=p.get("recurrency_kind"),
        valid_from=p.get("valid_from"),
        valid_to=p.get("valid_to"),
    )


def charging_needs(evse_id: int, ev: EV, energy_wh: float) -> Any:
    """A NotifyEVChargingNeedsRequest (K15) for ``ev`` on ``evse_id`` once ``energy_wh`` (Wh) were delivered:
    requestedEnergyTransfer by its phases, departureTime, and ACChargingParametersType with energyAmount (Wh
    still wanted, at most what fills the battery), evMinCurrent and evMaxCurrent (A per phase) and
    evMaxVoltage (V), all integers as the schema requires."""
    wanted_wh = max(0.0, min(ev.energy_need_kwh, ev.room_kwh) * 1000.0 - energy_wh)
    return call.NotifyEVChargingNeeds(
        evse_id=evse_id,
        charging_needs={
            "requested_energy_transfer": ENERGY_TRANSFER[ev.phases],
            "departure_time": iso(ev.departure_at),
            "ac_charging_parameters": {
                "energy_amount": int(round(wanted_wh)),
                "ev_min_current": int(round(ev.min_current_a)),
                "ev_max_current": int(round(ev.max_current_a)),
                "ev_max_voltage": int(round(NOMINAL_VOLTAGE_V)),
            },
        },
    )


def meter_value(at: datetime, context: MeterContext, reading: MeterReading) -> dict[str, Any]:
    """A snake_cased MeterValueType (J02): Power.Active.Import (W), Energy.Active.Import.Register (Wh), and
    when measured SoC (Percent, at the EV) and Current.Import (A) per phase (``phase`` L1, L2, L3: one per
    phase of the charger, 0 where the EV draws nothing), sampled at ``at``. Values are numbers and units go
    in ``unitOfMeasure`` (SampledValueType)."""

    def sv(value: float, measurand: str, unit: str, **extra: Any) -> dict[str, Any]:
        return {
            "value": round(value, 2),
            "context": context,
            "measurand": measurand,
            "unit_of_measure": {"unit": unit},
            **extra,
        }

    values = [
        sv(reading.power_kw * 1000.0, "Power.Active.Import", "W"),
        sv(reading.register_wh, "Energy.Active.Import.Register", "Wh"),
    ]
    if reading.soc_pct is not None:
        values.append(sv(reading.soc_pct, "SoC", "Percent", location="EV"))
    for name, amps in zip(PHASE_NAMES, reading.currents_a or (), strict=False):
        values.append(sv(amps, "Current.Import", "A", phase=name))
    return {"timestamp": iso(at), "sampled_value": values}


class CsmsLink201(OcppChargePoint):
    """The station's end of the OCPP 2.0.1 connection; CSMS-initiated calls are delegated to ``sim``."""

    def __init__(self, sim: SimulatedChargingStation, connection: ClientConnection) -> None:
        super().__init__(sim.charge_point_id, connection, response_timeout=sim.response_timeout_s)
        self.sim = sim

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        return call_result.SetChargingProfile(status=self.sim.handle_set_charging_profile(evse_id, charging_profile))

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        crit = charging_profile_criteria or {}
        removed = self.sim.handle_clear_charging_profile(
            charging_profile_id, crit.get("evse_id"), crit.get("charging_profile_purpose"), crit.get("stack_level")
        )
        return call_result.ClearChargingProfile(status=ACCEPTED if removed else "Unknown")

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in get_variable_data:
            component, variable = item["component"], item["variable"]
            status, value = self.sim.variable(component, variable.get("name"))
            result = {"attribute_status": status, "component": component, "variable": variable}
            if value is not None:
                result["attribute_value"] = value
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.request_stop_transaction)
    def on_request_stop_transaction(self, transaction_id: str, **_: Any) -> Any:
        ok = self.sim.request_stop(transaction_id)
        return call_result.RequestStopTransaction(status=ACCEPTED if ok else REJECTED)


class SimulatedChargingStation(Station):
    """An OCPP 2.0.1 charging station with ``connectors`` EVSEs; the constructor, units and inspection API are
    those of :class:`~pipeline.sim.station.Station` (connector ids are EVSE ids; transaction ids are strings
    the station makes, E01)."""

    subprotocol = "ocpp2.0.1"
    rate_units = RATE_UNITS
    """``SmartChargingCtrlr.RateUnit`` as reported by GetVariables."""
    _seq = 0
    """The next TransactionEvent seqNo (one counter per station)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.charging_needs_answers: list[str | None] = []
        """The CSMS's answers to NotifyEVChargingNeeds, one per transaction, in order: its status (Accepted,
        Rejected, Processing) or None (a CALLERROR such as NotSupported, a timeout, a lost connection)."""

    def variable(self, component: dict[str, Any], name: str | None) -> tuple[str, str | None]:
        """GetVariables (B06) of one variable: (attributeStatus, attributeValue or None). Known:
        ``SmartChargingCtrlr.RateUnit`` and ``EVSE.PhaseRotation`` of an EVSE by id (UnknownComponent for an
        EVSE the station does not have)."""
        if (component.get("name"), name) == ("SmartChargingCtrlr", "RateUnit"):
            return ACCEPTED, self.rate_units
        if (component.get("name"), name) == ("EVSE", "PhaseRotation"):
            evse = (component.get("evse") or {}).get("id")
            if evse not in self.connectors:
                return "UnknownComponent", None
            return ACCEPTED, self.phase_rotation
        return "UnknownVariable", None

    def _make_link(self, ws: ClientConnection) -> Link:
        return CsmsLink201(self, ws)

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = seq + 1
        return seq

    async def _boot(self) -> tuple[bool, int | None]:
        res = await self._call(
            call.BootNotification(charging_station={"model": self.model, "vendor_name": self.vendor}, reason="PowerUp")
        )
        return (res is not None and res.status == ACCEPTED), (res.interval if res is not None else None)

    async def _send_status(self, c: Connector, state: ConnectorState) -> None:
        wire = "Available" if state == "Available" else "Occupied"
        await self._call(
            call.StatusNotification(
                timestamp=iso(self.clock.now()), connector_status=wire, evse_id=c.connector_id, connector_id=1
            )
        )

    async def _authorize(self, ev: EV) -> bool:
        res = await self._call(call.Authorize(id_token=id_token(ev)))
        return res is not None and (res.id_token_info or {}).get("status") == ACCEPTED

    async def _transaction_event(
        self,
        event_type: str,
        trigger: str,
        c: Connector,
        s: Session,
        at: datetime,
        meter: dict[str, Any] | None,
        **info: Any,
    ) -> Any:
        return await self._call(
            call.TransactionEvent(
                event_type=event_type,
                timestamp=iso(at),
                trigger_reason=trigger,
                seq_no=self._next_seq(),
                transaction_info={"transaction_id": s.transaction_id, **info},
                evse={"id": c.connector_id, "connector_id": 1} if event_type == "Started" else None,
                id_token=id_token(s.ev) if event_type != "Updated" else None,
                meter_value=[meter] if meter is not None else None,
            )
        )

    def _new_transaction_id(self) -> TransactionId | None:
        return uuid.uuid4().hex[:16]  # the station names its transactions (E01)

    async def _start_transaction(self, c: Connector, s: Session) -> tuple[TransactionId, bool] | None:
        if s.transaction_id is None:
            return None
        meter = meter_value(s.started_at, BEGIN, MeterReading(power_kw=0.0, register_wh=c.register_wh))
        res = await self._transaction_event(
            "Started", "Authorized", c, s, s.started_at, meter, charging_state="Charging"
        )
        if res is None:
            return None
        return s.transaction_id, (res.id_token_info or {}).get("status", ACCEPTED) == ACCEPTED

    async def _transaction_started(self, c: Connector, s: Session) -> None:
        res = await self._call(charging_needs(c.connector_id, s.ev, s.energy_wh), optional=True)
        status = None if res is None else str(res.status)
        self.charging_needs_answers.append(status)
        log.debug("%s/%d: NotifyEVChargingNeeds answered %s", self.charge_point_id, c.connector_id, status)

    async def _stop_transaction(self, c: Connector, s: Session, summary: SessionSummary) -> None:
        meter = meter_value(summary.ended_at, END, MeterReading(power_kw=0.0, register_wh=c.register_wh))
        await self._transaction_event(
            "Ended",
            TRIGGERS.get(summary.reason, "AbnormalCondition"),
            c,
            s,
            summary.ended_at,
            meter,
            stopped_reason=summary.reason,
        )

    async def _send_meter_values(
        self, c: Connector, s: Session, at: datetime, context: MeterContext, reading: MeterReading
    ) -> None:
        await self._transaction_event("Updated", "MeterValuePeriodic", c, s, at, meter_value(at, context, reading))

    # ------------------------------------------------------------ CSMS-initiated calls (from the link)

    def handle_set_charging_profile(self, evse_id: int, raw: dict[str, Any]) -> str:
        """SetChargingProfileRequest (K01) with the snake_cased ``chargingProfile``: Accepted, or Rejected (a
        profile that cannot be read, a bad EVSE or purpose, a TxProfile without a matching transaction; see
        :meth:`Station.receive_profile`)."""
        try:
            profile: Profile | None = parse_profile(evse_id, raw, self.clock.now())
        except (KeyError, TypeError, ValueError, IndexError):
            profile = None
        return ACCEPTED if self.receive_profile(profile) else REJECTED

    def handle_clear_charging_profile(
        self, profile_id: int | None, evse_id: int | None, purpose: str | None, stack_level: int | None
    ) -> int:
        """ClearChargingProfileRequest (K10), by id or by criteria: how many profiles were removed (0 means
        Unknown)."""
        if purpose is not None and purpose not in PURPOSES:
            return 0
        return self.clear_profiles(profile_id, evse_id, None if purpose is None else PURPOSES[purpose], stack_level)
