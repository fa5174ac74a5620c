"""The OCPP 1.6J wire side of a simulated charge point.

The ocpp library's ChargePoint routes CSMS-initiated calls to ``@on`` handlers. This module holds those
handlers, which hand every decision to the simulator, and builds the payloads the charger sends, so that
``charger.py`` deals in kW and clock time rather than in message shapes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call, call_result
from ocpp.v16 import datatypes as dt
from ocpp.v16.enums import Action, Location, Measurand, UnitOfMeasure

if TYPE_CHECKING:
    from pipeline.sim.charger import SimulatedChargePoint

ACCEPTED, REJECTED = "Accepted", "Rejected"
TRIGGERABLE = ("StatusNotification", "MeterValues", "Heartbeat", "BootNotification")
SAMPLED_DATA = "Power.Active.Import,Energy.Active.Import.Register,SoC,Current.Import"


def iso(t: datetime) -> str:
    """An OCPP timestamp: ISO-8601 UTC, milliseconds, with a Z."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def id_tag_status(info: Any) -> str | None:
    """The status of an idTagInfo, whether the library gave a dict or a dataclass."""
    return info.get("status") if isinstance(info, dict) else getattr(info, "status", None)


class CentralSystemLink(OcppChargePoint):
    """The charger's end of the OCPP connection; CSMS-initiated calls are delegated to ``sim``."""

    def __init__(self, sim: SimulatedChargePoint, connection: Any) -> None:
        super().__init__(sim.charge_point_id, connection, response_timeout=sim.response_timeout_s)
        self.sim = sim

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict, **_: Any):
        return call_result.SetChargingProfile(
            status=self.sim.handle_set_charging_profile(connector_id, cs_charging_profiles)
        )

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ):
        removed = self.sim.handle_clear_charging_profile(id, connector_id, charging_profile_purpose, stack_level)
        return call_result.ClearChargingProfile(status=ACCEPTED if removed else "Unknown")

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any):
        conf = self.sim.configuration()
        wanted = key or list(conf)
        known = [dt.KeyValue(key=k, readonly=conf[k][1], value=conf[k][0]) for k in wanted if k in conf]
        unknown = [k for k in wanted if k not in conf]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any):
        conf = self.sim.configuration()
        if key not in conf:
            return call_result.ChangeConfiguration(status="NotSupported")
        if conf[key][1] or key != "MeterValueSampleInterval" or not value.isdigit():
            return call_result.ChangeConfiguration(status=REJECTED)
        self.sim.meter_interval_s = float(value)
        return call_result.ChangeConfiguration(status=ACCEPTED)

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None, **_: Any):
        return call_result.TriggerMessage(status=ACCEPTED if requested_message in TRIGGERABLE else "NotImplemented")

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message: str, connector_id: int | None = None, **_: Any):
        if requested_message in TRIGGERABLE:
            await self.sim.handle_trigger(requested_message, connector_id)

    @on(Action.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int, **_: Any):
        ok = self.sim.handle_remote_stop(transaction_id)
        return call_result.RemoteStopTransaction(status=ACCEPTED if ok else REJECTED)


def configuration(meter_interval_s: float, connectors: int) -> dict[str, tuple[str, bool]]:
    """The GetConfiguration keys a simulated charger reports: name -> (value, readonly)."""
    return {
        "ChargingScheduleAllowedChargingRateUnit": ("Current,Power", True),
        "ChargeProfileMaxStackLevel": ("10", True),
        "ChargingScheduleMaxPeriods": ("24", True),
        "MaxChargingProfilesInstalled": ("20", True),
        "MeterValueSampleInterval": (str(int(meter_interval_s)), False),
        "MeterValuesSampledData": (SAMPLED_DATA, True),
        "NumberOfConnectors": (str(connectors), True),
        "SupportedFeatureProfiles": ("Core,SmartCharging,RemoteTrigger", True),
    }


def meter_values(
    connector_id: int,
    transaction_id: int | None,
    at: datetime,
    context: str,
    *,
    power_kw: float,
    register_wh: float,
    soc_pct: float,
    current_a: float,
) -> call.MeterValues:
    """A MeterValues request: Power.Active.Import (W), Energy.Active.Import.Register (Wh), SoC (Percent,
    measured at the EV) and Current.Import (A per phase), all sampled at ``at``."""

    def sv(value: str, measurand: str, unit: str, **extra: Any) -> dt.SampledValue:
        return dt.SampledValue(value=value, context=context, measurand=measurand, unit=unit, **extra)

    values = [
        sv(f"{power_kw * 1000.0:.1f}", Measurand.power_active_import, UnitOfMeasure.w),
        sv(f"{register_wh:.1f}", Measurand.energy_active_import_register, UnitOfMeasure.wh),
        sv(f"{soc_pct:.1f}", Measurand.soc, UnitOfMeasure.percent, location=Location.ev),
        sv(f"{current_a:.2f}", Measurand.current_import, UnitOfMeasure.a),
    ]
    return call.MeterValues(
        connector_id=connector_id,
        transaction_id=transaction_id,
        meter_value=[dt.MeterValue(timestamp=iso(at), sampled_value=values)],
    )
