"""Simulated chargers with real EVs on the wire: per-phase draw and Current.Import, the EV's response lag,
NotifyEVChargingNeeds (2.0.1), phase rotation, and reconnection in 2.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.exceptions import NotSupportedError
from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.server import serve
from websockets.typing import Subprotocol

from pipeline.app.site import PipelineConfig
from pipeline.contracts.clock import SimClock
from pipeline.sim import EV, ReconnectBackoff, SimulatedChargePoint, SimulatedChargingStation
from tests.kits.csms import T0, CsmsSide, TestCentral, profile

E208 = dict(model="Peugeot 208", battery_kwh=46.3, max_ac_kw=7.4, phases=1)
"""A 1-phase EV: 7.4 kW is 32.2 A on one phase, more than a 22 kW charger's 31.9 A per phase."""


def make_ev(clock, *, ev_id="EV1", model="test", battery_kwh=60.0, max_ac_kw=11.0, phases=3, need_kwh=30.0) -> EV:
    now = clock.now()
    return EV(ev_id, model, battery_kwh, max_ac_kw, 20.0, need_kwh, now, now + timedelta(hours=8), phases)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float, datetime]] = []

    def __call__(self, cp_id, connector_id, power_kw, at) -> None:
        self.calls.append((cp_id, connector_id, power_kw, at))


# ------------------------------------------------------------------------------------ central systems


class RawSide16(CsmsSide):
    """The 1.6 test central's side that also keeps every frame as it came over the wire."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.raw: list[Any] = []

    async def route_message(self, raw_msg):
        self.raw.append(json.loads(raw_msg))
        await super().route_message(raw_msg)


class RawCentral16(TestCentral):
    async def handler(self, ws: Any) -> None:
        cp_id = ws.request.path.rstrip("/").split("/")[-1]
        side = self.chargers[cp_id] = RawSide16(cp_id, ws, self)
        self.changed()
        with contextlib.suppress(Exception):
            await side.start()


@pytest.fixture
async def central16():
    central = RawCentral16()
    async with serve(central.handler, "127.0.0.1", 0, subprotocols=[Subprotocol("ocpp1.6")]) as server:
        central.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ocpp"
        yield central


class Csms201(ChargePoint201):
    """A 2.0.1 CSMS side: answers everything, NotifyEVChargingNeeds as ``needs_answer`` says (a status, or
    the CALLERROR NotSupported / NotImplemented), and keeps every frame as it came over the wire."""

    def __init__(self, cp_id: str, ws: Any, needs_answer: str) -> None:
        super().__init__(cp_id, ws, response_timeout=5)
        self.needs_answer = needs_answer
        self.raw: list[Any] = []
        self.mute = False  # when set, requests are recorded and never answered

    async def route_message(self, raw_msg):
        self.raw.append(json.loads(raw_msg))
        if not self.mute:
            await super().route_message(raw_msg)

    def requests(self, action: str) -> list[dict[str, Any]]:
        return [f[3] for f in self.raw if f[0] == 2 and f[2] == action]

    @on(Action201.boot_notification)
    def on_boot(self, **_: Any):
        return result201.BootNotification(current_time=datetime.now(UTC).isoformat(), interval=300, status="Accepted")

    @on(Action201.status_notification)
    def on_status(self, **_: Any):
        return result201.StatusNotification()

    @on(Action201.authorize)
    def on_authorize(self, **_: Any):
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @on(Action201.transaction_event)
    def on_transaction_event(self, **_: Any):
        return result201.TransactionEvent()

    @on(Action201.notify_ev_charging_needs)
    def on_needs(self, **_: Any):
        if self.needs_answer == "NotSupported":
            raise NotSupportedError("no ISO 15118 here")
        if self.needs_answer == "NotImplemented":
            raise OcppNotImplemented("NotifyEVChargingNeeds")
        return result201.NotifyEVChargingNeeds(status=self.needs_answer)


class Central201:
    def __init__(self) -> None:
        self.sides: dict[str, Csms201] = {}
        self.needs_answer = "Accepted"
        self.url = ""

    async def handler(self, ws: Any) -> None:
        cp_id = ws.request.path.rstrip("/").split("/")[-1]
        side = self.sides[cp_id] = Csms201(cp_id, ws, self.needs_answer)
        with contextlib.suppress(Exception):
            await side.start()

    async def wait_for(self, pred, timeout: float = 3.0) -> Any:
        async def loop() -> Any:
            while not (value := pred()):
                await asyncio.sleep(0.005)
            return value

        return await asyncio.wait_for(loop(), timeout)


@contextlib.asynccontextmanager
async def central201_on(port: int = 0):
    central = Central201()
    async with serve(central.handler, "127.0.0.1", port, subprotocols=[Subprotocol("ocpp2.0.1")]) as server:
        central.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ocpp"
        yield central


@pytest.fixture
async def central201():
    async with central201_on() as central:
        yield central


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ per-phase draw


async def test_each_ev_draws_on_its_own_phases_within_the_charger_rating_per_phase(central16):
    clock = SimClock(T0, speed=600)
    rec = Recorder()
    cp = SimulatedChargePoint("CP1", central16.url, clock, connectors=3, on_power=rec)  # 22 kW, 3 x 31.9 A
    await cp.start()
    tx = await cp.plug_in(make_ev(clock, ev_id="E208", **E208), 1)
    assert isinstance(tx, int)
    # 1 phase: min(EV 32.2 A, charger 31.9 A) on L1 = 7.33 kW, not the EV's 7.4 kW
    assert (cp.ev_phases(1), cp.current_a(1)) == (1, pytest.approx(22000 / 690, abs=1e-6))
    assert cp.power_kw(1) == pytest.approx(22 / 3)
    await cp.plug_in(make_ev(clock, ev_id="GOLF", model="Volkswagen Golf", max_ac_kw=7.2, phases=2), 2)
    assert (cp.ev_phases(2), cp.power_kw(2)) == (2, pytest.approx(7.2))
    await cp.plug_in(make_ev(clock, ev_id="ID3"), 3)
    assert (cp.ev_phases(3), cp.power_kw(3)) == (3, pytest.approx(11.0))
    l1, l2, l3 = cp.grid_currents_a()  # RST: the 1- and 2-phase EVs load L1, L1 and L2
    assert (l1, l2, l3) == (
        pytest.approx(31.884 + 15.652 + 15.942, abs=1e-3),
        pytest.approx(15.652 + 15.942, abs=1e-3),
        pytest.approx(15.942, abs=1e-3),
    )
    # a limit in A is per phase: 16 A to the 1-phase EV is 3.68 kW at 230 V (not 11.04)
    side = central16.chargers["CP1"]
    res = await side.call(
        call16.SetChargingProfile(connector_id=1, cs_charging_profiles=profile(16, transaction_id=tx))
    )
    assert res.status == "Accepted" and cp.power_kw(1) == pytest.approx(3.68) and cp.current_a(1) == 16.0
    assert cp.effective_limit_kw(1) == pytest.approx(3.68)
    # a limit in W is shared over the EV's phases: 3 kW on one phase is 13.04 A
    prof = profile(3000, unit="W", transaction_id=tx, profile_id=2)
    assert (await side.call(call16.SetChargingProfile(connector_id=1, cs_charging_profiles=prof))).status == "Accepted"
    assert cp.power_kw(1) == pytest.approx(3.0) and cp.current_a(1) == pytest.approx(3000 / 230)
    await cp.stop()


async def test_a_three_phase_ev_on_a_one_phase_charger_draws_one_phase():
    clock = SimClock(T0, speed=600)
    central = RawCentral16()
    async with serve(central.handler, "127.0.0.1", 0, subprotocols=[Subprotocol("ocpp1.6")]) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ocpp"
        cp = SimulatedChargePoint("CP1", url, clock, rated_power_kw=7.4, phases=1)
        await cp.start()
        await cp.plug_in(make_ev(clock))  # 11 kW on three phases: 15.9 A each
        assert (cp.ev_phases(1), cp.power_kw(1)) == (1, pytest.approx(11 / 3))
        await cp.stop()


# ------------------------------------------------------------------------------------ exact meter frames


async def test_meter_values_16_carry_current_per_phase(central16):
    clock = SimClock(T0, speed=1)
    clock.hold()
    cp = SimulatedChargePoint("CP1", central16.url, clock, meter_interval_s=360)
    await cp.start()
    tx = await cp.plug_in(make_ev(clock, **E208))
    clock.advance(360)  # 0.1 h at 7.33 kW: 733.3 Wh, SoC 20 % + 0.7333 / 46.3
    side = central16.chargers["CP1"]
    frames = await central16.wait_for(lambda: [f for f in side.raw if f[0] == 2 and f[2] == "MeterValues"])

    def sv(value: str, measurand: str, unit: str, **extra: str) -> dict[str, str]:
        return {"value": value, "context": "Sample.Periodic", "measurand": measurand, "unit": unit, **extra}

    assert frames[0][3] == {
        "connectorId": 1,
        "transactionId": tx,
        "meterValue": [
            {
                "timestamp": "2024-06-03T08:06:00.000Z",
                "sampledValue": [
                    sv("7333.3", "Power.Active.Import", "W"),
                    sv("733.3", "Energy.Active.Import.Register", "Wh"),
                    sv("21.6", "SoC", "Percent", location="EV"),
                    sv("31.88", "Current.Import", "A", phase="L1"),
                    sv("0.00", "Current.Import", "A", phase="L2"),
                    sv("0.00", "Current.Import", "A", phase="L3"),
                ],
            }
        ],
    }
    clock.release()
    await cp.stop()


async def test_meter_values_and_charging_needs_201_on_the_wire(central201):
    clock = SimClock(T0, speed=1)
    clock.hold()
    cs = SimulatedChargingStation("CS1", central201.url, clock, meter_interval_s=360)
    await cs.start()
    tx = await cs.plug_in(make_ev(clock, **E208))
    side = central201.sides["CS1"]
    needs = await central201.wait_for(lambda: side.requests("NotifyEVChargingNeeds"))
    assert needs == [
        {
            "evseId": 1,
            "chargingNeeds": {
                "requestedEnergyTransfer": "AC_single_phase",
                "departureTime": "2024-06-03T16:00:00.000Z",
                "acChargingParameters": {
                    "energyAmount": 30000,
                    "evMinCurrent": 6,
                    "evMaxCurrent": 32,
                    "evMaxVoltage": 230,
                },
            },
        }
    ]
    # the Started event comes first (K15 follows the transaction start)
    actions = [f[2] for f in side.raw if f[0] == 2]
    assert actions.index("TransactionEvent") < actions.index("NotifyEVChargingNeeds")
    clock.advance(360)
    updated = await central201.wait_for(
        lambda: [e for e in side.requests("TransactionEvent") if e["eventType"] == "Updated"]
    )

    def sv(value: float, measurand: str, unit: str, **extra: str) -> dict[str, Any]:
        return {
            "value": value,
            "context": "Sample.Periodic",
            "measurand": measurand,
            "unitOfMeasure": {"unit": unit},
            **extra,
        }

    assert updated[0] == {
        "eventType": "Updated",
        "timestamp": "2024-06-03T08:06:00.000Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 1,
        "transactionInfo": {"transactionId": tx},
        "meterValue": [
            {
                "timestamp": "2024-06-03T08:06:00.000Z",
                "sampledValue": [
                    sv(7333.33, "Power.Active.Import", "W"),
                    sv(733.33, "Energy.Active.Import.Register", "Wh"),
                    sv(21.58, "SoC", "Percent", location="EV"),
                    sv(31.88, "Current.Import", "A", phase="L1"),
                    sv(0.0, "Current.Import", "A", phase="L2"),
                    sv(0.0, "Current.Import", "A", phase="L3"),
                ],
            }
        ],
    }
    clock.release()
    await cs.stop()


@pytest.mark.parametrize(
    "answer, recorded",
    [("Accepted", "Accepted"), ("Rejected", "Rejected"), ("NotSupported", None), ("NotImplemented", None)],
)
async def test_charging_goes_on_whatever_the_csms_answers_to_the_charging_needs(central201, answer, recorded):
    central201.needs_answer = answer
    clock = SimClock(T0, speed=3600)
    cs = SimulatedChargingStation("CS1", central201.url, clock, meter_interval_s=60)
    await cs.start()
    await cs.plug_in(make_ev(clock, need_kwh=2.0))
    await asyncio.wait_for(cs.wait_done(1), 3)
    assert cs.charging_needs_answers == [recorded]
    assert cs.sessions[0].reason == "Local" and cs.sessions[0].energy_kwh == pytest.approx(2.0)
    events = central201.sides["CS1"].requests("TransactionEvent")
    assert [e["eventType"] for e in events][-1] == "Ended" and any(e["eventType"] == "Updated" for e in events)
    await cs.stop()


# ------------------------------------------------------------------------------------ the EV's lag


async def test_the_ev_follows_a_cut_and_a_raise_after_its_seeded_lag(central16):
    clock = SimClock(T0, speed=1)
    clock.hold()
    rec = Recorder()
    cp = SimulatedChargePoint("CP1", central16.url, clock, on_power=rec, ev_response_s=(2.0, 11.0), seed=5)
    await cp.start()
    tx = await cp.plug_in(make_ev(clock))
    session = cp.connectors[1].session
    assert isinstance(tx, int) and session is not None
    lag = session.lag_s
    assert 2.0 <= lag <= 11.0
    assert cp.power_kw(1) == pytest.approx(11.0)  # the first offer is taken at once
    side = central16.chargers["CP1"]
    t_cut = clock.now()
    res = await side.call(call16.SetChargingProfile(connector_id=1, cs_charging_profiles=profile(8, transaction_id=tx)))
    assert res.status == "Accepted" and cp.held_limit(1) == 8.0
    clock.advance(lag - 0.5)
    await asyncio.sleep(0.02)
    assert cp.power_kw(1) == pytest.approx(11.0)  # still drawing: the cut is in transit
    clock.advance(1.0)
    await central16.wait_for(lambda: cp.power_kw(1) < 6)
    assert cp.power_kw(1) == pytest.approx(5.52) and rec.calls[-1][3] == t_cut + timedelta(seconds=lag)
    t_raise = clock.now()
    prof = profile(16, transaction_id=tx, profile_id=2)
    assert (await side.call(call16.SetChargingProfile(connector_id=1, cs_charging_profiles=prof))).status == "Accepted"
    assert cp.power_kw(1) == pytest.approx(5.52)
    clock.advance(lag + 0.5)
    await central16.wait_for(lambda: cp.power_kw(1) > 6)
    assert cp.power_kw(1) == pytest.approx(11.0) and rec.calls[-1][3] == t_raise + timedelta(seconds=lag)
    clock.release()
    await cp.stop()


def test_lags_are_drawn_per_session_from_the_seed_and_the_charger():
    def lags(seed: int, cp_id: str) -> list[float]:
        cp = SimulatedChargePoint(cp_id, "ws://127.0.0.1:1/ocpp", SimClock(T0), ev_response_s=(2.0, 11.0), seed=seed)
        return [cp._draw_lag() for _ in range(5)]

    assert lags(7, "CP1") == lags(7, "CP1")
    assert lags(7, "CP1") != lags(7, "CP2") and lags(7, "CP1") != lags(8, "CP1")
    assert all(2.0 <= x <= 11.0 for x in lags(7, "CP1")) and len(set(lags(7, "CP1"))) == 5
    with pytest.raises(ValueError, match="ev_response_s"):
        SimulatedChargePoint("CP1", "ws://x", SimClock(T0), ev_response_s=(5.0, 2.0))


# ------------------------------------------------------------------------------------ phase rotation


async def test_phase_rotation_over_ocpp_16(central16):
    cp = SimulatedChargePoint("CP1", central16.url, SimClock(T0), connectors=2, phase_rotation="TSR")
    await cp.start()
    res = await central16.chargers["CP1"].call(call16.GetConfiguration(key=["ConnectorPhaseRotation"]))
    assert [(k["key"], k["value"]) for k in res.configuration_key] == [("ConnectorPhaseRotation", "1.TSR,2.TSR")]
    await cp.stop()


async def test_phase_rotation_over_ocpp_201(central201):
    cs = SimulatedChargingStation("CS1", central201.url, SimClock(T0), phase_rotation="SRT")
    await cs.start()
    asked = [
        {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "PhaseRotation"}},
        {"component": {"name": "EVSE", "evse": {"id": 2}}, "variable": {"name": "PhaseRotation"}},
    ]
    res = await central201.sides["CS1"].call(call201.GetVariables(get_variable_data=asked))
    got = [(r["attribute_status"], r.get("attribute_value")) for r in res.get_variable_result]
    assert got == [("Accepted", "SRT"), ("UnknownComponent", None)]
    await cs.stop()


def test_the_topology_record_carries_the_wiring():
    cp = SimulatedChargePoint("CP7", "ws://x", SimClock(T0), rated_power_kw=7.4, phases=1, phase_rotation="STR")
    node = cp.topology_node("site-a", "panel-1", priority=2)
    assert (node.node_id, node.parent_id, node.kind, node.phases, node.phase_rotation) == (
        "CP7",
        "panel-1",
        "charger",
        1,
        "STR",
    )
    assert (node.limit_kw, node.limit_a, node.priority) == (7.4, pytest.approx(32.174), 2)
    assert SimulatedChargePoint("CP1", "ws://x", SimClock(T0)).topology_node("s").phase_rotation == "RST"
    with pytest.raises(ValueError, match="phase_rotation"):
        SimulatedChargePoint("CP1", "ws://x", SimClock(T0), phase_rotation="XYZ")  # type: ignore[arg-type]


def test_a_site_file_charger_carries_its_phase_rotation_onto_site_topology():
    config = PipelineConfig.model_validate(
        {
            "sites": [
                {
                    "site_id": "s",
                    "limit_kw": 50,
                    "chargers": [
                        {"id": "CP1", "max_power_kw": 22, "phase_rotation": "RTS"},
                        {"id": "CP2", "max_power_kw": 22},
                    ],
                }
            ]
        }
    )
    rotations = {n.node_id: n.phase_rotation for n in config.topology() if n.kind == "charger"}
    assert rotations == {"CP1": "RTS", "CP2": None}


# ------------------------------------------------------------------------------------ reconnect, 2.0.1


def updated_events(central: Central201) -> list[dict[str, Any]]:
    """The TransactionEvent ``Updated`` requests ``central`` has had from CS1."""
    side = central.sides.get("CS1")
    events = side.requests("TransactionEvent") if side else []
    return [e for e in events if e["eventType"] == "Updated"]


def reconnecting_station(url: str, clock: SimClock) -> SimulatedChargingStation:
    """CS1 metering every 60 clock seconds (0.1 s real at 600x), reconnecting after 50-100 ms."""
    fast = ReconnectBackoff(wait_minimum_s=0.05, random_range_s=0.05, repeat_times=3)
    return SimulatedChargingStation("CS1", url, clock, meter_interval_s=60, auto_reconnect=True, reconnect_backoff=fast)


async def test_a_201_station_reconnects_after_the_csms_restarts_and_its_transaction_goes_on():
    port = free_port()
    clock = SimClock(T0, speed=600)
    async with central201_on(port) as first:
        cs = reconnecting_station(first.url, clock)
        await cs.start()
        tx = await cs.plug_in(make_ev(clock, need_kwh=50.0))
        await first.wait_for(lambda: updated_events(first))
    await first.wait_for(lambda: not cs._online.is_set(), timeout=5)
    async with central201_on(port) as second:
        try:
            events = await second.wait_for(lambda: updated_events(second), timeout=10)
            assert events[0]["transactionInfo"]["transactionId"] == tx
            side = second.sides["CS1"]
            assert side.requests("BootNotification") == [] and side.requests("StatusNotification")
            assert cs.reconnects == 1 and cs.session_active()
        finally:
            await cs.stop()


async def test_a_call_in_flight_when_the_connection_ends_fails_at_once_and_the_transaction_goes_on():
    """The answer to a request in flight cannot come once its connection has ended: the station gives the
    call up then, not after its 30 s response timeout, so the transaction's next messages are not held up
    behind it (the ocpp library sends one call at a time)."""
    port = free_port()
    clock = SimClock(T0, speed=600)
    async with central201_on(port) as first:
        cs = reconnecting_station(first.url, clock)
        assert cs.response_timeout_s == 30.0
        await cs.start()
        tx = await cs.plug_in(make_ev(clock, need_kwh=50.0))
        side = first.sides["CS1"]
        await first.wait_for(lambda: updated_events(first))
        side.mute = True  # the next TransactionEvent gets no answer: it is in flight when the CSMS goes
        sent = len(side.requests("TransactionEvent"))
        await first.wait_for(lambda: len(side.requests("TransactionEvent")) > sent)
    async with central201_on(port) as second:
        try:
            events = await second.wait_for(lambda: updated_events(second), timeout=10)
            assert events[0]["transactionInfo"]["transactionId"] == tx
        finally:
            await cs.stop()


# ------------------------------------------------------------------------------------ pipeline simulate


@pytest.mark.parametrize("given, lag", [(None, (2.0, 11.0)), ("0", 0.0), ("3.5", 3.5), ("1-4", (1.0, 4.0))])
def test_pipeline_simulate_takes_the_ev_lag(monkeypatch, given, lag):
    from click.testing import CliRunner

    import pipeline.sim.run as run
    from pipeline.cli.main import main

    seen: dict[str, Any] = {}

    async def fake(url: str, chargers: int, **kw: Any) -> dict[str, Any]:
        seen.update(kw)
        return {}

    monkeypatch.setattr(run, "simulate", fake)
    args = ["simulate", "--url", "ws://127.0.0.1:1/ocpp"] + ([] if given is None else ["--ev-lag", given])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert seen["ev_response_s"] == lag


@pytest.mark.parametrize("given", ["abc", "5-2", "-1"])
def test_pipeline_simulate_refuses_a_bad_ev_lag(given):
    from click.testing import CliRunner

    from pipeline.cli.main import main

    result = CliRunner().invoke(main, ["simulate", "--url", "ws://127.0.0.1:1/ocpp", "--ev-lag", given])
    assert result.exit_code == 2 and "--ev-lag" in result.output and "Traceback" not in result.output
