"""The whole loop over real websockets: simulated chargers -> executor -> engine -> executor -> chargers."""

from __future__ import annotations

import asyncio
import json

import pytest
from loopkit import CONFIG, LIMIT_KW, ev
from websockets.asyncio.client import connect

from pipeline.clock import SystemClock
from pipeline.gateway import GatewayError, send_record
from pipeline.runner import start_service
from pipeline.signals import demand_signal, dr_signal
from pipeline.simulate.charger import SimulatedChargePoint
from pipeline.topics import encode


def held_kw(cp: SimulatedChargePoint) -> float:
    assert cp.held_limit_unit(1) == "A"
    return cp.held_limit(1) * 3 * 230 / 1000


async def wait_for(predicate, timeout_s: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def service():
    svc = await start_service(CONFIG, port=0, gateway_port=0, tick_s=0.2)
    yield svc
    await svc.stop()


@pytest.fixture
async def chargers(service):
    clock = SystemClock()
    cps = [SimulatedChargePoint(f"CP{i}", f"ws://127.0.0.1:{service.port}/ocpp", clock, meter_interval_s=1)
           for i in range(1, 5)]
    await asyncio.gather(*(cp.start() for cp in cps))
    yield cps
    await asyncio.gather(*(cp.stop() for cp in cps))


async def test_chargers_receive_limits_that_sum_within_headroom_and_follow_dr(service, chargers):
    for i, cp in enumerate(chargers):
        await cp.plug_in(ev(i))
    await wait_for(lambda: all(cp.held_limit(1) is not None for cp in chargers)
                   and sum(held_kw(cp) for cp in chargers) > LIMIT_KW - 1)
    assert sum(held_kw(cp) for cp in chargers) <= LIMIT_KW + 1e-6
    assert sum(cp.power_kw(1) for cp in chargers) <= LIMIT_KW + 1e-6
    # Every charger holds exactly the latest setpoint the engine published for its session.
    latest = {json.loads(v)["charge_point_id"]: json.loads(v) for v in service.transport.latest("ocpp.setpoint.commands").values()}
    assert {cp.charge_point_id: cp.held_limit(1) for cp in chargers} == {k: v["setpoint_a"] for k, v in latest.items()}

    gateway = f"ws://127.0.0.1:{service.gateway_port}"
    topic, record = demand_signal("s1", current_demand_kw=10.0 + sum(cp.power_kw(1) for cp in chargers),
                                  ev_load_kw=sum(cp.power_kw(1) for cp in chargers))
    await send_record(gateway, topic, encode(record))
    await wait_for(lambda: sum(held_kw(cp) for cp in chargers) <= LIMIT_KW - 10 + 1e-6)
    topic, record = dr_signal("s1", curtailment_pct=50, duration_min=30)
    await send_record(gateway, topic, encode(record))
    await wait_for(lambda: sum(held_kw(cp) for cp in chargers) <= LIMIT_KW / 2 - 10 + 1e-6)
    await wait_for(lambda: sum(cp.power_kw(1) for cp in chargers) <= LIMIT_KW / 2 - 10 + 1e-6)
    # 10 kW of EV headroom fits two 4.14 kW floors: the two newest sessions are paused, not set below floor.
    assert sorted(round(held_kw(cp), 2) for cp in chargers)[:2] == [0.0, 0.0]


async def test_session_end_tombstones_and_frees_headroom(service, chargers):
    for i, cp in enumerate(chargers[:2]):
        await cp.plug_in(ev(i))
    await wait_for(lambda: all(cp.held_limit(1) is not None for cp in chargers[:2]))
    await chargers[0].stop()
    await wait_for(lambda: chargers[1].held_limit(1) == pytest.approx(31.8))
    assert len(service.transport.latest("ocpp.active.sessions")) == 1
    assert len(service.transport.latest("ocpp.setpoint.commands")) == 1


async def test_gateway_rejects_bad_signals_and_unknown_topics(service):
    gateway = f"ws://127.0.0.1:{service.gateway_port}"
    with pytest.raises(GatewayError, match="rejected the record: dr_event_id: Field required"):
        await send_record(gateway, "utility.dr.signals", b'{"site_id": "s1", "curtailment_pct": 150}')
    with pytest.raises(GatewayError):
        await send_record(gateway, "ocpp.setpoint.commands", b"{}")


async def test_malformed_ocpp_frames_and_topic_records_do_not_stop_the_loop(service, chargers):
    async with connect(f"ws://127.0.0.1:{service.port}/ocpp/CP9", subprotocols=["ocpp1.6"]) as ws:
        await ws.send("this is not OCPP")
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error[0] == 4  # CALLERROR
        await ws.send(json.dumps([2, "hb-1", "Heartbeat", {}]))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert answer[:2] == [3, "hb-1"]
    await service.transport.send("ocpp.active.sessions", "junk", b"{]")
    await service.transport.send("ocpp.setpoint.commands", "junk", b"{]")
    await chargers[0].plug_in(ev(0))
    await wait_for(lambda: chargers[0].held_limit(1) == pytest.approx(31.8))
    assert [r.key for r in service.transport.log("ocpp.active.sessions.dlq")] == ["junk"]
    assert [r.key for r in service.transport.log("ocpp.setpoint.commands.dlq")] == ["junk"]
