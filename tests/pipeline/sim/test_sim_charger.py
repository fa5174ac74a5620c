"""The simulated OCPP 1.6J charge point against a tiny test central system (see sim_csms.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from ocpp.v16 import call

from pipeline.contracts.clock import SimClock
from pipeline.sim import EV, SimulatedChargePoint
from tests.kits.csms import T0, profile


def make_ev(clock, *, need_kwh=30.0, max_kw=22.0, dwell_s=8 * 3600, ev_id="EV1") -> EV:
    now = clock.now()
    return EV(ev_id, "test", 60.0, max_kw, 20.0, need_kwh, now, now + timedelta(seconds=dwell_s))


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float, object]] = []

    def __call__(self, cp_id, connector_id, power_kw, at) -> None:
        self.calls.append((cp_id, connector_id, power_kw, at))

    @property
    def powers(self) -> list[float]:
        return [round(c[2], 6) for c in self.calls]


async def started(central, clock, cp_id="CP1", **kw) -> SimulatedChargePoint:
    cp = SimulatedChargePoint(cp_id, central.url, clock, **kw)
    await cp.start()
    return cp


async def set_profile(central, cp_id, connector_id, prof) -> str:
    res = await central.chargers[cp_id].call(
        call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=prof)
    )
    return res.status


async def test_boot_and_available(central):
    clock = SimClock(T0, speed=600)
    cp = await started(central, clock, vendor="ACME", model="X1", connectors=2)
    boot = await central.message("CP1", "BootNotification")
    assert boot == {"charge_point_vendor": "ACME", "charge_point_model": "X1"}
    await central.message("CP1", "StatusNotification", lambda p: p["connector_id"] == 2)
    statuses = central.chargers["CP1"].of("StatusNotification")
    assert [(s["connector_id"], s["status"]) for s in statuses] == [(1, "Available"), (2, "Available")]
    res = await central.chargers["CP1"].call(call.GetConfiguration())
    conf = {k["key"]: k.get("value") for k in res.configuration_key}
    assert conf["ChargingScheduleAllowedChargingRateUnit"] == "Current,Power"
    assert conf["NumberOfConnectors"] == "2"
    await cp.stop()
    await cp.stop()  # idempotent


async def test_plug_in_starts_transaction_and_reports_meter_values(central):
    clock = SimClock(T0, speed=600)  # 60 s meter interval = 0.1 s real
    cp = await started(central, clock, meter_interval_s=60)
    tx = await cp.plug_in(make_ev(clock, ev_id="EV-A"))
    start = await central.message("CP1", "StartTransaction")
    assert start["transaction_id"] == tx and start["id_tag"] == "EV-A" and start["meter_start"] == 0
    assert (await central.message("CP1", "Authorize"))["id_tag"] == "EV-A"
    await central.message("CP1", "StatusNotification", lambda p: p["status"] == "Charging")
    mv = await central.message("CP1", "MeterValues")
    assert mv["transaction_id"] == tx and mv["connector_id"] == 1
    sampled = mv["meter_value"][0]["sampled_value"]
    by = {s["measurand"]: s for s in sampled}
    assert set(by) == {"Power.Active.Import", "Energy.Active.Import.Register", "SoC", "Current.Import"}
    assert {s["context"] for s in sampled} == {"Sample.Periodic"}
    assert (
        by["Power.Active.Import"]["unit"],
        by["Energy.Active.Import.Register"]["unit"],
        by["SoC"]["unit"],
        by["Current.Import"]["unit"],
    ) == ("W", "Wh", "Percent", "A")
    assert float(by["Power.Active.Import"]["value"]) == pytest.approx(22000.0)
    assert float(by["Current.Import"]["value"]) == pytest.approx(22000 / 690, abs=0.01)
    # after ~60 s at 22 kW: ~367 Wh, SoC 20 % + 0.367/60
    assert 300 < float(by["Energy.Active.Import.Register"]["value"]) < 450
    assert float(by["SoC"]["value"]) == pytest.approx(20.6, abs=0.1)
    await cp.stop()
    stop = await central.message("CP1", "StopTransaction")
    assert stop["reason"] == "Other" and stop["transaction_id"] == tx


async def test_tx_profile_in_amps_sets_draw(central):
    clock = SimClock(T0, speed=600)
    rec = Recorder()
    cp = await started(central, clock, on_power=rec)
    tx = await cp.plug_in(make_ev(clock))
    assert rec.powers == [22.0]
    status = await set_profile(central, "CP1", 1, profile(10, unit="A", transaction_id=tx))
    assert status == "Accepted"
    assert rec.powers == [22.0, 6.9]  # 10 A x 3 x 230 V, applied before the handler answered
    assert rec.calls[-1][:2] == ("CP1", 1)
    assert cp.power_kw(1) == pytest.approx(6.9)
    assert (cp.held_limit(1), cp.held_limit_unit(1)) == (10.0, "A")
    assert cp.profiles_received == 1
    # a W profile replaces it (same purpose and stack level); one phase A period uses its numberPhases
    assert await set_profile(central, "CP1", 1, profile(4000, unit="W", profile_id=2)) == "Accepted"
    assert cp.power_kw(1) == pytest.approx(4.0) and cp.held_limit_unit(1) == "W"
    assert await set_profile(central, "CP1", 1, profile(16, phases=1, profile_id=3)) == "Accepted"
    assert cp.power_kw(1) == pytest.approx(3.68)
    await cp.stop()
    assert rec.powers[-1] == 0.0
    assert cp.held_limit(1) is None  # TxProfiles end with their transaction


async def test_energy_integrates_over_sim_clock(central):
    clock = SimClock(T0, speed=3600)  # 30 simulated minutes = 0.5 s
    cp = await started(central, clock, rated_power_kw=11.0, meter_interval_s=300)
    clock.hold()  # the transaction starts at the arrival, however long its messages take in real time
    ev = make_ev(clock, need_kwh=40.0, max_kw=22.0, dwell_s=1800)
    tx = await cp.plug_in(ev)
    clock.release()
    await asyncio.wait_for(cp.wait_done(1), 2)
    s = cp.sessions[0]
    assert s.reason == "EVDisconnected"
    assert s.energy_kwh == pytest.approx(5.5, rel=0.01)
    # exact: 11 kW over the plugged-in time
    assert s.ended_at == ev.departure_at
    assert s.energy_kwh == pytest.approx(11.0 * (s.ended_at - s.started_at).total_seconds() / 3600, rel=1e-9)
    stop = await central.message("CP1", "StopTransaction")
    assert stop["transaction_id"] == tx and stop["reason"] == "EVDisconnected"
    assert stop["meter_stop"] == pytest.approx(5500, rel=0.01)
    assert cp.delivered_kwh == pytest.approx(5.5, rel=0.01)
    registers = [
        float(sv["value"])
        for mv in central.chargers["CP1"].of("MeterValues")
        for sv in mv["meter_value"][0]["sampled_value"]
        if sv["measurand"] == "Energy.Active.Import.Register"
    ]
    assert registers == sorted(registers) and len(registers) >= 4
    available = central.chargers["CP1"].of("StatusNotification")[-1]
    assert available["status"] == "Available"
    await cp.stop()


async def test_session_stops_when_need_met(central):
    clock = SimClock(T0, speed=3600)
    rec = Recorder()
    cp = await started(central, clock, on_power=rec, meter_interval_s=600)
    await cp.plug_in(make_ev(clock, need_kwh=2.0, max_kw=11.0))
    await asyncio.wait_for(cp.wait_done(1), 2)
    s = cp.sessions[0]
    assert s.reason == "Local"
    assert s.energy_kwh == pytest.approx(2.0, abs=1e-9)
    assert (s.ended_at - s.started_at).total_seconds() == pytest.approx(2.0 / 11.0 * 3600, abs=0.01)
    assert rec.powers == [11.0, 0.0] and rec.calls[-1][3] == s.ended_at
    stop = await central.message("CP1", "StopTransaction")
    assert stop["reason"] == "Local" and stop["meter_stop"] == 2000
    await cp.stop()


async def test_tx_profile_rules(central):
    clock = SimClock(T0, speed=600)
    cp = await started(central, clock)
    # no transaction yet
    assert await set_profile(central, "CP1", 1, profile(10)) == "Rejected"
    tx = await cp.plug_in(make_ev(clock))
    assert await set_profile(central, "CP1", 1, profile(10, transaction_id=tx + 1)) == "Rejected"
    assert await set_profile(central, "CP1", 0, profile(10, transaction_id=tx)) == "Rejected"
    assert await set_profile(central, "CP1", 1, profile(10, purpose="ChargePointMaxProfile")) == "Rejected"
    assert cp.power_kw(1) == pytest.approx(22.0) and cp.held_limit(1) is None
    assert cp.profiles_received == 4 and cp.profiles_rejected == 4
    assert await set_profile(central, "CP1", 1, profile(10, transaction_id=tx)) == "Accepted"
    assert cp.power_kw(1) == pytest.approx(6.9)
    await cp.stop()


async def test_charge_point_max_profile_caps_draw(central):
    clock = SimClock(T0, speed=600)
    rec = Recorder()
    cp = await started(central, clock, on_power=rec)
    cap = profile(16, purpose="ChargePointMaxProfile", profile_id=9)
    assert await set_profile(central, "CP1", 0, cap) == "Accepted"
    tx = await cp.plug_in(make_ev(clock))
    assert cp.power_kw(1) == pytest.approx(11.04)  # 16 A x 3 x 230 V
    assert await set_profile(central, "CP1", 1, profile(32, transaction_id=tx)) == "Accepted"
    assert cp.power_kw(1) == pytest.approx(11.04)
    assert await set_profile(central, "CP1", 1, profile(8, transaction_id=tx)) == "Accepted"
    assert cp.power_kw(1) == pytest.approx(5.52)
    res = await central.chargers["CP1"].call(call.ClearChargingProfile(charging_profile_purpose="TxProfile"))
    assert res.status == "Accepted" and cp.power_kw(1) == pytest.approx(11.04)
    res = await central.chargers["CP1"].call(call.ClearChargingProfile(id=9))
    assert res.status == "Accepted" and cp.power_kw(1) == pytest.approx(22.0)
    res = await central.chargers["CP1"].call(call.ClearChargingProfile(id=42))
    assert res.status == "Unknown"
    assert rec.powers == [11.04, 5.52, 11.04, 22.0]
    await cp.stop()


async def test_tx_default_profile_applies_at_start(central):
    clock = SimClock(T0, speed=600)
    cp = await started(central, clock)
    assert await set_profile(central, "CP1", 0, profile(6, purpose="TxDefaultProfile", profile_id=5)) == "Accepted"
    tx = await cp.plug_in(make_ev(clock))
    assert cp.power_kw(1) == pytest.approx(4.14)
    assert await set_profile(central, "CP1", 1, profile(16, transaction_id=tx)) == "Accepted"
    assert cp.power_kw(1) == pytest.approx(11.04)  # TxProfile overrides the default
    await cp.stop()


async def test_zero_limit_suspends(central):
    clock = SimClock(T0, speed=600)
    cp = await started(central, clock)
    tx = await cp.plug_in(make_ev(clock))
    assert await set_profile(central, "CP1", 1, profile(0, transaction_id=tx)) == "Accepted"
    await central.message("CP1", "StatusNotification", lambda p: p["status"] == "SuspendedEVSE")
    assert await set_profile(central, "CP1", 1, profile(16, transaction_id=tx)) == "Accepted"
    statuses = lambda: [p["status"] for p in central.chargers["CP1"].of("StatusNotification")]  # noqa: E731
    await central.wait_for(lambda: statuses()[-1] == "Charging")
    await cp.stop()


async def test_ev_response_delay(central):
    clock = SimClock(T0, speed=600)
    rec = Recorder()
    cp = await started(central, clock, on_power=rec, ev_response_s=60)  # 0.1 s real
    tx = await cp.plug_in(make_ev(clock))
    t_set = clock.now()
    assert await set_profile(central, "CP1", 1, profile(10, transaction_id=tx)) == "Accepted"
    assert cp.power_kw(1) == pytest.approx(22.0)
    await central.wait_for(lambda: cp.power_kw(1) < 10)
    assert cp.power_kw(1) == pytest.approx(6.9)
    assert (rec.calls[-1][3] - t_set).total_seconds() == pytest.approx(60, abs=2)
    await cp.stop()


async def test_absolute_schedule_changes_on_time(central):
    clock = SimClock(T0, speed=3600)
    rec = Recorder()
    cp = await started(central, clock, on_power=rec, meter_interval_s=3600)
    tx = await cp.plug_in(make_ev(clock, need_kwh=50))
    begin = clock.now()
    sched = profile(0, transaction_id=tx, kind="Absolute", start_schedule=begin, periods=[(0, 16), (600, 8)])
    assert await set_profile(central, "CP1", 1, sched) == "Accepted"
    await central.wait_for(lambda: cp.power_kw(1) < 6)
    assert rec.powers == [22.0, 11.04, 5.52]
    assert rec.calls[-1][3] == begin + timedelta(seconds=600)
    await cp.stop()


async def test_charge_point_max_is_shared_between_connectors(central):
    clock = SimClock(T0, speed=600)
    cp = await started(central, clock, connectors=2)
    assert await set_profile(central, "CP1", 0, profile(20000, unit="W", purpose="ChargePointMaxProfile")) == "Accepted"
    await cp.plug_in(make_ev(clock, ev_id="A"), 1)
    assert cp.power_kw(1) == pytest.approx(20.0)
    await cp.plug_in(make_ev(clock, ev_id="B", max_kw=7.0), 2)
    assert (cp.power_kw(1), cp.power_kw(2)) == (pytest.approx(13.0), pytest.approx(7.0))
    await cp.stop()
    assert {s.ev_id for s in cp.sessions} == {"A", "B"}


async def test_remote_stop(central):
    clock = SimClock(T0, speed=600)
    cp = await started(central, clock)
    tx = await cp.plug_in(make_ev(clock))
    res = await central.chargers["CP1"].call(call.RemoteStopTransaction(transaction_id=tx))
    assert res.status == "Accepted"
    await asyncio.wait_for(cp.wait_done(1), 1)
    assert cp.sessions[0].reason == "Remote"
    await cp.stop()


async def test_a_driver_that_moves_a_held_clock_past_a_period_start_can_wake_the_station_to_apply_it(central):
    # On a running clock the session task naps up to 0.5 s real between looks; a driver that holds the clock
    # and steps it past a schedule period's start asks wake_due(), so the cut is applied before it reads the
    # draw (the replay's meter counted 1 s over a DR limit while a charger napped through its own cut).
    clock = SimClock(T0, speed=1)
    cp = await started(central, clock, meter_interval_s=3600)
    tx = await cp.plug_in(make_ev(clock, need_kwh=50))
    begin = clock.now()
    sched = profile(0, transaction_id=tx, kind="Absolute", start_schedule=begin, periods=[(0, 16), (600, 8)])
    assert await set_profile(central, "CP1", 1, sched) == "Accepted"
    assert cp.power_kw(1) == pytest.approx(11.04)
    assert cp.wake_due() is False  # nothing due yet
    await asyncio.sleep(0.05)  # the session task naps on the running clock
    clock.hold()
    clock.advance((begin + timedelta(seconds=600) - clock.now()).total_seconds())
    assert cp.wake_due() is True
    for _ in range(50):  # a few turns of the event loop, far less than the task's nap
        await asyncio.sleep(0)
        if cp.power_kw(1) < 6:
            break
    assert cp.power_kw(1) == pytest.approx(5.52)
    assert cp.wake_due() is False
    await cp.stop()
