"""The OCPP 1.6J adapter of the simulated station: :class:`SimulatedChargePoint`.

It maps OCPP 1.6 messages to and from the version-neutral :class:`~pipeline.sim.station.Station` and holds
nothing else: BootNotification (section 4.2), StatusNotification (4.9, ChargePointStatus), Authorize (4.1),
StartTransaction / StopTransaction (4.8, 4.10), MeterValues (4.7) and Heartbeat (4.6) go out;
SetChargingProfile (5.16) and ClearChargingProfile (5.5) are translated to the neutral
:class:`~pipeline.sim.profiles.Profile` model; GetConfiguration (5.8, ``ConnectorPhaseRotation`` included),
ChangeConfiguration (5.3), TriggerMessage (5.17) and RemoteStopTransaction (5.12) are answered. The
sibling :mod:`pipeline.sim.v201` does the same for OCPP 2.0.1.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call, call_result
from ocpp.v16 import datatypes as dt
from ocpp.v16.enums import Action, Location, Measurand, Phase, UnitOfMeasure
from websockets.asyncio.client import ClientConnection

from pipeline.sim.ev import EV
from pipeline.sim.profiles import STATION_MAX, TX, TX_DEFAULT, Profile, Purpose, TransactionId
from pipeline.sim.session import (
    PHASE_NAMES,
    Connector,
    ConnectorState,
    MeterContext,
    MeterReading,
    Session,
    SessionSummary,
)
from pipeline.sim.station import Link, Station
from pipeline.sim.wire import ACCEPTED, REJECTED, charging_profile, iso

__all__ = ["CentralSystemLink", "SimulatedChargePoint", "configuration", "meter_values", "parse_profile"]

TRIGGERABLE = ("StatusNotification", "MeterValues", "Heartbeat", "BootNotification")
SAMPLED_DATA = "Power.Active.Import,Energy.Active.Import.Register,SoC,Current.Import"
PURPOSES: dict[str, Purpose] = {"TxProfile": TX, "TxDefaultProfile": TX_DEFAULT, "ChargePointMaxProfile": STATION_MAX}
"""ChargingProfilePurposeType (section 7) to the neutral purpose."""


def id_tag_status(info: Any) -> str | None:
    """The status of an idTagInfo, whether the library gave a dict or a dataclass."""
    return info.get("status") if isinstance(info, dict) else getattr(info, "status", None)


def id_tag(ev: EV) -> str:
    """The EV's idTag: its id cut to 20 characters (IdToken is a CiString20Type, section 7)."""
    return ev.ev_id[:20]


def parse_profile(connector_id: int, p: dict[str, Any], received_at: datetime) -> Profile:
    """A snake_cased 1.6 ChargingProfile (``csChargingProfiles`` of SetChargingProfile.req, section 5.16) set
    on ``connector_id`` as the neutral :class:`Profile`. ``KeyError``, ``TypeError`` or ``ValueError`` for a
    profile that cannot be read (a missing field, an unknown purpose, kind or unit)."""
    return charging_profile(
        connector_id,
        profile_id=p["charging_profile_id"],
        stack_level=p["stack_level"],
        purpose=PURPOSES[p["charging_profile_purpose"]],
        kind=p["charging_profile_kind"],
        schedule=p["charging_schedule"],
        received_at=received_at,
        transaction_id=p.get("transaction_id"),
        recurrency=p.get("recurrency_kind"),
        valid_from=p.get("valid_from"),
        valid_to=p.get("valid_to"),
    )


def configuration(meter_interval_s: float, connectors: int, phase_rotation: str = "RST") -> dict[str, tuple[str, bool]]:
    """The GetConfiguration keys (section 9.1 and 9.4) a simulated charge point reports: name -> (value,
    readonly). ``ConnectorPhaseRotation`` (9.1.9) lists every connector's wiring as ``1.RST,2.RST``."""
    return {
        "ChargingScheduleAllowedChargingRateUnit": ("Current,Power", True),
        "ConnectorPhaseRotation": (",".join(f"{i}.{phase_rotation}" for i in range(1, connectors + 1)), True),
        "ChargeProfileMaxStackLevel": ("10", True),
        "ChargingScheduleMaxPeriods": ("24", True),
        "MaxChargingProfilesInstalled": ("20", True),
        "MeterValueSampleInterval": (str(int(meter_interval_s)), False),
        "MeterValuesSampledData": (SAMPLED_DATA, True),
        "NumberOfConnectors": (str(connectors), True),
        "SupportedFeatureProfiles": ("Core,SmartCharging,RemoteTrigger", True),
    }


def meter_values(
    connector_id: int, transaction_id: TransactionId | None, at: datetime, context: MeterContext, reading: MeterReading
) -> Any:
    """A MeterValues.req (section 4.7): Power.Active.Import (W), Energy.Active.Import.Register (Wh), SoC
    (Percent, measured at the EV) and Current.Import (A) per phase (``phase`` L1, L2, L3: one per phase of the
    charger, 0 where the EV draws nothing) when measured, all sampled at ``at``. Values are strings (section
    7, SampledValue)."""

    def sv(value: str, measurand: str, unit: str, **extra: Any) -> Any:
        return dt.SampledValue(value=value, context=context, measurand=measurand, unit=unit, **extra)

    values = [
        sv(f"{reading.power_kw * 1000.0:.1f}", Measurand.power_active_import, UnitOfMeasure.w),
        sv(f"{reading.register_wh:.1f}", Measurand.energy_active_import_register, UnitOfMeasure.wh),
    ]
    if reading.soc_pct is not None:
        values.append(sv(f"{reading.soc_pct:.1f}", Measurand.soc, UnitOfMeasure.percent, location=Location.ev))
    for name, amps in zip(PHASE_NAMES, reading.currents_a or (), strict=False):
        values.append(sv(f"{amps:.2f}", Measurand.current_import, UnitOfMeasure.a, phase=Phase(name)))
    return call.MeterValues(
        connector_id=connector_id,
        transaction_id=transaction_id,
        meter_value=[dt.MeterValue(timestamp=iso(at), sampled_value=values)],
    )


class CentralSystemLink(OcppChargePoint):
    """The charge point's end of the OCPP 1.6J connection; central-system calls are delegated to ``sim``."""

    def __init__(self, sim: SimulatedChargePoint, connection: ClientConnection) -> None:
        super().__init__(sim.charge_point_id, connection, response_timeout=sim.response_timeout_s)
        self.sim = sim

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any) -> Any:
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
    ) -> Any:
        removed = self.sim.handle_clear_charging_profile(id, connector_id, charging_profile_purpose, stack_level)
        return call_result.ClearChargingProfile(status=ACCEPTED if removed else "Unknown")

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        conf = self.sim.configuration()
        wanted = key or list(conf)
        known = [dt.KeyValue(key=k, readonly=conf[k][1], value=conf[k][0]) for k in wanted if k in conf]
        unknown = [k for k in wanted if k not in conf]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        conf = self.sim.configuration()
        if key not in conf:
            return call_result.ChangeConfiguration(status="NotSupported")
        if conf[key][1] or key != "MeterValueSampleInterval" or not value.isdigit():
            return call_result.ChangeConfiguration(status=REJECTED)
        self.sim.meter_interval_s = float(value)
        return call_result.ChangeConfiguration(status=ACCEPTED)

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None, **_: Any) -> Any:
        return call_result.TriggerMessage(status=ACCEPTED if requested_message in TRIGGERABLE else "NotImplemented")

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message: str, connector_id: int | None = None, **_: Any) -> None:
        if requested_message in TRIGGERABLE:
            await self.sim.handle_trigger(requested_message, connector_id)

    @on(Action.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int, **_: Any) -> Any:
        ok = self.sim.handle_remote_stop(transaction_id)
        return call_result.RemoteStopTransaction(status=ACCEPTED if ok else REJECTED)


class SimulatedChargePoint(Station):
    """An OCPP 1.6J charge point (websocket subprotocol ``ocpp1.6``) with ``connectors`` connectors; the
    constructor, units and inspection API are those of :class:`~pipeline.sim.station.Station`. Transaction
    ids are the integers the central system gives in StartTransaction.conf."""

    subprotocol = "ocpp1.6"

    def _make_link(self, ws: ClientConnection) -> Link:
        return CentralSystemLink(self, ws)

    async def _boot(self) -> tuple[bool, int | None]:
        res = await self._call(call.BootNotification(charge_point_model=self.model, charge_point_vendor=self.vendor))
        return (res is not None and res.status == ACCEPTED), (res.interval if res is not None else None)

    async def _authorize(self, ev: EV) -> bool:
        auth = await self._call(call.Authorize(id_tag=id_tag(ev)))
        return auth is not None and id_tag_status(auth.id_tag_info) == ACCEPTED

    def _new_transaction_id(self) -> TransactionId | None:
        return None  # the central system names it in StartTransaction.conf

    async def _start_transaction(self, c: Connector, s: Session) -> tuple[TransactionId, bool] | None:
        res = await self._call(
            call.StartTransaction(
                connector_id=c.connector_id,
                id_tag=id_tag(s.ev),
                meter_start=s.meter_start_wh,
                timestamp=iso(s.started_at),
            )
        )
        return None if res is None else (res.transaction_id, id_tag_status(res.id_tag_info) == ACCEPTED)

    async def _stop_transaction(self, c: Connector, s: Session, summary: SessionSummary) -> None:
        await self._call(
            call.StopTransaction(
                meter_stop=int(round(c.register_wh)),
                timestamp=iso(summary.ended_at),
                transaction_id=s.transaction_id,
                reason=summary.reason,
                id_tag=id_tag(s.ev),
            )
        )

    async def _send_meter_values(
        self, c: Connector, s: Session, at: datetime, context: MeterContext, reading: MeterReading
    ) -> None:
        await self._call(meter_values(c.connector_id, s.transaction_id, at, context, reading))

    async def _send_status(self, c: Connector, state: ConnectorState) -> None:
        await self._call(
            call.StatusNotification(
                connector_id=c.connector_id, error_code="NoError", status=state, timestamp=iso(self.clock.now())
            )
        )

    # ------------------------------------------------------------ central-system calls (from the link)

    def handle_set_charging_profile(self, connector_id: int, raw: dict[str, Any]) -> str:
        """SetChargingProfile.req (section 5.16) with the snake_cased ``csChargingProfiles``: Accepted, or
        Rejected (a profile that cannot be read, a bad connector or purpose, a TxProfile without a matching
        transaction; see :meth:`Station.receive_profile`)."""
        try:
            profile: Profile | None = parse_profile(connector_id, raw, self.clock.now())
        except (KeyError, TypeError, ValueError):
            profile = None
        return ACCEPTED if self.receive_profile(profile) else REJECTED

    def handle_clear_charging_profile(
        self, profile_id: int | None, connector_id: int | None, purpose: str | None, stack_level: int | None
    ) -> int:
        """ClearChargingProfile.req (section 5.5): how many profiles were removed (0 means Unknown)."""
        if purpose is not None and purpose not in PURPOSES:
            return 0
        return self.clear_profiles(
            profile_id, connector_id, None if purpose is None else PURPOSES[purpose], stack_level
        )

    def handle_remote_stop(self, transaction_id: int) -> bool:
        """RemoteStopTransaction.req (section 5.12): end that transaction with reason Remote."""
        return self.request_stop(transaction_id)

    def configuration(self) -> dict[str, tuple[str, bool]]:
        """GetConfiguration keys: name -> (value, readonly)."""
        return configuration(self.meter_interval_s, len(self.connectors), self.phase_rotation)

    async def handle_trigger(self, message: str, connector_id: int | None) -> None:
        """Send what a TriggerMessage.req (section 5.17) asked for, after it was answered."""
        if message == "Heartbeat":
            await self._call(call.Heartbeat())
        elif message == "BootNotification":
            await self._boot()
        elif message == "StatusNotification":
            await self.report_status(connector_id)
        elif message == "MeterValues":
            await self.report_meter(connector_id)
