"""Edge cases of the simulated charge point: races, a vanished server, a held clock, triggers, auth."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import timedelta

import pytest
from ocpp.v16 import call

from pipeline.contracts.clock import SimClock
from pipeline.sim import EV, SimulatedChargePoint
from tests.kits.csms import T0, profile


def make_ev(clock, *, need_kwh=30.0, max_kw=22.0, dwell_s=8 * 3600, ev_id="EV1") -> EV:
    now = clock.now()
    return EV(ev_id, "test", 60.0, max_kw, 20.0, need_kwh, now, now + timedelta(seconds=dwell_s))


async def test_tx_profile_sent_right_after_start_transaction(central):
    central.profile_after_start = lambda tx: profile(10, transaction_id=tx)
    clock = SimClock(T0, speed=600)
    cp = SimulatedChargePoint("CP1", central.url, clock)
    await cp.start()
    tx = await cp.plug_in(make_ev(clock))
    res = await central.message("CP1", "SetChargingProfile.result")
    assert res == {"status": "Accepted", "transaction_id": tx}
    await central.wait_for(lambda: cp.power_kw(1) < 10)
    assert cp.power_kw(1) == pytest.approx(6.9) and cp.held_limit(1) == 10
    await cp.stop()


@pytest.mark.parametrize("named_tx, kept", [(101, True), (None, True), (999, False)])
async def test_tx_profile_while_start_transaction_in_flight(central, named_tx, kept):
    central.start_delay_s = 0.05  # the first transaction id is 101
    clock = SimClock(T0, speed=600)
    cp = SimulatedChargePoint("CP1", central.url, clock)
    await cp.start()
    plug = asyncio.create_task(cp.plug_in(make_ev(clock)))
    await central.message("CP1", "Authorize")
    await asyncio.sleep(0.01)
    raw = {
        "charging_profile_id": 1,
        "stack_level": 0,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Relative",
        "transaction_id": named_tx,
        "charging_schedule": {
            "charging_rate_unit": "A",
            "charging_schedule_period": [{"start_period": 0, "limit": 10}],
        },
    }
    assert cp.handle_set_charging_profile(1, raw) == "Accepted"  # as the OCPP link would call it
    assert await plug == 101
    assert cp.power_kw(1) == pytest.approx(6.9 if kept else 22.0)
    assert cp.held_limit(1) == (10 if kept else None)
    await cp.stop()


async def test_stop_after_server_vanished_books_the_session(central):
    clock = SimClock(T0, speed=600)
    powers = []
    cp = SimulatedChargePoint("CP1", central.url, clock, on_power=lambda *a: powers.append(a[2]), response_timeout_s=1)
    await cp.start()
    await cp.plug_in(make_ev(clock))
    await central.chargers["CP1"]._connection.close()
    await asyncio.sleep(0.05)
    t = time.monotonic()
    await cp.stop()
    assert time.monotonic() - t < 0.5
    assert [s.reason for s in cp.sessions] == ["Other"] and cp.sessions[0].energy_kwh > 0
    assert powers == [22.0, 0.0]


async def test_held_clock_stops_energy(central):
    clock = SimClock(T0, speed=600)
    cp = SimulatedChargePoint("CP1", central.url, clock, meter_interval_s=30)
    await cp.start()
    await cp.plug_in(make_ev(clock))
    await asyncio.sleep(0.02)
    clock.hold()
    e = cp.energy_kwh(1)
    n = len(central.chargers["CP1"].of("MeterValues"))
    await asyncio.sleep(0.15)  # 90 simulated seconds if the clock ran
    assert cp.energy_kwh(1) == e and len(central.chargers["CP1"].of("MeterValues")) == n
    clock.release()
    await central.wait_for(lambda: len(central.chargers["CP1"].of("MeterValues")) > n)
    assert cp.energy_kwh(1) > e
    await cp.stop()


async def test_trigger_message_and_change_configuration(central):
    clock = SimClock(T0, speed=60)
    cp = SimulatedChargePoint("CP1", central.url, clock, meter_interval_s=3600)
    await cp.start()
    await cp.plug_in(make_ev(clock))
    side = central.chargers["CP1"]
    res = await side.call(call.TriggerMessage(requested_message="MeterValues", connector_id=1))
    assert res.status == "Accepted"
    mv = await central.message("CP1", "MeterValues")
    assert {sv["context"] for sv in mv["meter_value"][0]["sampled_value"]} == {"Trigger"}
    res = await side.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="900"))
    assert res.status == "Accepted" and cp.meter_interval_s == 900
    res = await side.call(call.ChangeConfiguration(key="NumberOfConnectors", value="4"))
    assert res.status == "Rejected"
    res = await side.call(call.GetConfiguration(key=["MeterValueSampleInterval", "Nope"]))
    assert res.configuration_key[0]["value"] == "900" and res.unknown_key == ["Nope"]
    await cp.stop()


async def test_basic_auth_header(central):
    clock = SimClock(T0, speed=60)
    cp = SimulatedChargePoint("CP7", central.url, clock, password="s3cret")
    await cp.start()
    expected = "Basic " + base64.b64encode(b"CP7:s3cret").decode()
    assert central.headers["CP7"]["Authorization"] == expected
    await cp.stop()


async def test_schedule_boundary_passing_during_a_meter_send_is_applied_at_its_instant(central):
    clock = SimClock(T0, speed=3600)
    calls = []
    cp = SimulatedChargePoint(
        "CP1", central.url, clock, meter_interval_s=599, on_power=lambda *a: calls.append((a[2], a[3]))
    )
    await cp.start()
    tx = await cp.plug_in(make_ev(clock, need_kwh=50))
    rel = profile(0, transaction_id=tx, periods=[(0, 32), (600, 16)])  # Relative: from the transaction start
    assert await central.chargers["CP1"].call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=rel))
    await central.wait_for(lambda: cp.power_kw(1) < 12)
    await cp.stop()
    s = cp.sessions[0]
    assert [round(p, 3) for p, _ in calls] == [22.0, 11.04, 0.0]
    assert calls[1][1] == s.started_at + timedelta(seconds=600)  # exactly, though the task woke at 599 s
    end_s = (s.ended_at - s.started_at).total_seconds()
    assert s.energy_kwh == pytest.approx((22.0 * 600 + 11.04 * (end_s - 600)) / 3600, rel=1e-9)
