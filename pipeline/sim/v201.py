"""A simulated OCPP 2.0.1 charging station: the same physics and profiles as the 1.6 charge point.

:class:`SimulatedChargingStation` is a :class:`~pipeline.sim.charger.SimulatedChargePoint` whose wire
is OCPP 2.0.1 (websocket subprotocol ``ocpp2.0.1``, the ``ocpp`` library's v201 classes): each connector
is an EVSE with one connector; BootNotification (B01), StatusNotification (G01: Available or Occupied),
Authorize (C01) and TransactionEvent Started / Updated / Ended with meter values (E01-E07, J02) go out;
SetChargingProfile (K01, with ``evseId``; ChargingStationMaxProfile on EVSE 0), ClearChargingProfile
(K10), GetVariables ``SmartChargingCtrlr.RateUnit`` (B06) and RequestStopTransaction (F03) come in.
Profiles are translated into the 1.6 shape the shared :mod:`pipeline.sim.control` evaluates.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint as OcppChargePoint
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from pipeline.sim.charger import SimulatedChargePoint
from pipeline.sim.ocpp16 import ACCEPTED, REJECTED, iso
from pipeline.sim.session import EV_DISCONNECTED, LOCAL, REMOTE, Connector, Session, SessionSummary

__all__ = ["SimulatedChargingStation", "profile_to_v16"]

_PURPOSES = {"ChargingStationMaxProfile": "ChargePointMaxProfile"}
_TRIGGERS = {EV_DISCONNECTED: "EVDeparted", LOCAL: "StopAuthorized", REMOTE: "RemoteStop"}
RATE_UNITS = "A,W"


def profile_to_v16(p: dict[str, Any]) -> dict[str, Any]:
    """A snake-cased 2.0.1 ChargingProfileType as the 1.6-shaped dict :class:`Profile.from_ocpp` reads
    (the first of its charging schedules; ChargingStationMaxProfile becomes ChargePointMaxProfile)."""
    schedules = p.get("charging_schedule") or [{}]
    return {
        "charging_profile_id": p["id"],
        "stack_level": p["stack_level"],
        "charging_profile_purpose": _PURPOSES.get(p["charging_profile_purpose"], p["charging_profile_purpose"]),
        "charging_profile_kind": p["charging_profile_kind"],
        "charging_schedule": schedules[0],
        "transaction_id": p.get("transaction_id"),
        "recurrency_kind": p.get("recurrency_kind"),
        "valid_from": p.get("valid_from"),
        "valid_to": p.get("valid_to"),
    }


class CsmsLink201(OcppChargePoint):
    """The station's end of the OCPP 2.0.1 connection; CSMS-initiated calls are delegated to ``sim``."""

    def __init__(self, sim: SimulatedChargingStation, connection: Any) -> None:
        super().__init__(sim.charge_point_id, connection, response_timeout=sim.response_timeout_s)
        self.sim = sim

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict, **_: Any):
        if charging_profile["charging_profile_purpose"] == "ChargingStationMaxProfile" and evse_id != 0:
            self.sim.profiles_received += 1
            self.sim.profiles_rejected += 1
            return call_result.SetChargingProfile(status=REJECTED)
        status = self.sim.handle_set_charging_profile(evse_id, profile_to_v16(charging_profile))
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self, charging_profile_id: int | None = None, charging_profile_criteria: dict | None = None, **_: Any
    ):
        crit = charging_profile_criteria or {}
        purpose = crit.get("charging_profile_purpose")
        removed = self.sim.handle_clear_charging_profile(
            charging_profile_id, crit.get("evse_id"), _PURPOSES.get(purpose, purpose), crit.get("stack_level")
        )
        return call_result.ClearChargingProfile(status=ACCEPTED if removed else "Unknown")

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict], **_: Any):
        results = []
        for item in get_variable_data:
            component, variable = item["component"], item["variable"]
            known = (component.get("name"), variable.get("name")) == ("SmartChargingCtrlr", "RateUnit")
            result = {
                "attribute_status": ACCEPTED if known else "UnknownVariable",
                "component": component,
                "variable": variable,
            }
            if known:
                result["attribute_value"] = self.sim.rate_units
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.request_stop_transaction)
    def on_request_stop_transaction(self, transaction_id: str, **_: Any):
        ok = self.sim.handle_remote_stop(transaction_id)
        return call_result.RequestStopTransaction(status=ACCEPTED if ok else REJECTED)


class SimulatedChargingStation(SimulatedChargePoint):
    """An OCPP 2.0.1 charging station with ``connectors`` EVSEs; same constructor and inspection API as
    :class:`SimulatedChargePoint` (connector ids are EVSE ids; transaction ids are strings it makes)."""

    subprotocol = "ocpp2.0.1"
    rate_units = RATE_UNITS
    """``SmartChargingCtrlr.RateUnit`` as reported by GetVariables."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seq = 0
        self._sent_status: dict[int, str] = {}

    def _make_link(self, ws: Any) -> Any:
        return CsmsLink201(self, ws)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    async def _boot(self) -> tuple[bool, int | None]:
        res = await self._call(
            call.BootNotification(charging_station={"model": self.model, "vendor_name": self.vendor}, reason="PowerUp")
        )
        return (res is not None and res.status == ACCEPTED), (res.interval if res is not None else None)

    async def _status(self, c: Connector, status: str) -> None:
        c.status = status
        wire = "Available" if status == "Available" else "Occupied"
        await self._call(
            call.StatusNotification(
                timestamp=iso(self.clock.now()), connector_status=wire, evse_id=c.connector_id, connector_id=1
            )
        )

    async def _authorize(self, id_tag: str) -> bool:
        res = await self._call(call.Authorize(id_token={"id_token": id_tag, "type": "Central"}))
        return res is not None and (res.id_token_info or {}).get("status") == ACCEPTED

    def _meter_value(
        self,
        c: Connector,
        at: datetime,
        context: str,
        *,
        power_kw: float,
        register_wh: float,
        soc_pct: float | None = None,
        current_a: float | None = None,
    ) -> dict[str, Any]:
        def sv(value: float, measurand: str, unit: str, **extra: Any) -> dict[str, Any]:
            return {
                "value": round(value, 2),
                "context": context,
                "measurand": measurand,
                "unit_of_measure": {"unit": unit},
                **extra,
            }

        values = [
            sv(power_kw * 1000.0, "Power.Active.Import", "W"),
            sv(register_wh, "Energy.Active.Import.Register", "Wh"),
        ]
        if soc_pct is not None:
            values.append(sv(soc_pct, "SoC", "Percent", location="EV"))
        if current_a is not None:
            values.append(sv(current_a, "Current.Import", "A"))
        return {"timestamp": iso(at), "sampled_value": values}

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
                id_token={"id_token": s.ev.ev_id[:20], "type": "Central"} if event_type != "Updated" else None,
                meter_value=[meter] if meter is not None else None,
            )
        )

    async def _start_transaction(self, c: Connector, s: Session, id_tag: str) -> tuple[Any, bool] | None:
        s.transaction_id = uuid.uuid4().hex[:16]  # the station names its transactions (E01)
        meter = self._meter_value(c, s.started_at, "Transaction.Begin", power_kw=0.0, register_wh=c.register_wh)
        res = await self._transaction_event(
            "Started", "Authorized", c, s, s.started_at, meter, charging_state="Charging"
        )
        if res is None:
            return None
        return s.transaction_id, (res.id_token_info or {}).get("status", ACCEPTED) == ACCEPTED

    async def _stop_transaction(self, c: Connector, s: Session, summary: SessionSummary) -> None:
        meter = self._meter_value(c, summary.ended_at, "Transaction.End", power_kw=0.0, register_wh=c.register_wh)
        await self._transaction_event(
            "Ended",
            _TRIGGERS.get(summary.reason, "AbnormalCondition"),
            c,
            s,
            summary.ended_at,
            meter,
            stopped_reason=summary.reason,
        )

    async def _meter(self, c: Connector, at: datetime, context: str, **values: float) -> None:
        meter = self._meter_value(c, at, context, **values)
        await self._transaction_event("Updated", "MeterValuePeriodic", c, c.session, at, meter)
