"""The OCPP 2.0.1 simulated station against a tiny 2.0.1 test CSMS: profiles reach the neutral model."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import serve

from pipeline.contracts.clock import SimClock
from pipeline.sim import EV, SimulatedChargingStation
from tests.kits.csms import T0


class Csms(ChargePoint):
    """The CSMS side of one station: records what it sends, answers everything Accepted."""

    def __init__(self, cp_id: str, ws: Any) -> None:
        super().__init__(cp_id, ws, response_timeout=5)
        self.events: list[dict[str, Any]] = []

    @on(Action.boot_notification)
    def on_boot(self, **_: Any):
        return call_result.BootNotification(current_time=datetime.now(UTC).isoformat(), interval=300, status="Accepted")

    @on(Action.status_notification)
    def on_status(self, **_: Any):
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, **_: Any):
        return call_result.Authorize(id_token_info={"status": "Accepted"})

    @on(Action.transaction_event)
    def on_transaction_event(self, **kw: Any):
        self.events.append(kw)
        return call_result.TransactionEvent()


@pytest.fixture
async def csms():
    sides: dict[str, Csms] = {}

    async def handler(ws: Any) -> None:
        side = sides[ws.request.path.rstrip("/").split("/")[-1]] = Csms("x", ws)
        try:
            await side.start()
        except Exception:
            pass

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ocpp", sides


def profile(purpose: str, limit: float, *, profile_id: int = 1, transaction_id: str | None = None) -> dict:
    return {
        "id": profile_id,
        "stack_level": 0,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative" if purpose != "ChargingStationMaxProfile" else "Absolute",
        "transaction_id": transaction_id,
        "charging_schedule": [
            {
                "id": profile_id,
                "charging_rate_unit": "A",
                "start_schedule": T0.isoformat() if purpose == "ChargingStationMaxProfile" else None,
                "charging_schedule_period": [{"start_period": 0, "limit": limit}],
            }
        ],
    }


async def set_profile(side: Csms, evse_id: int, prof: dict) -> str:
    return (await side.call(call.SetChargingProfile(evse_id=evse_id, charging_profile=prof))).status


async def test_profiles_requests_and_stop_over_ocpp_201(csms):
    url, sides = csms
    clock = SimClock(T0, speed=600)
    cs = SimulatedChargingStation("CS1", url, clock)
    await cs.start()
    side = sides["CS1"]
    assert await set_profile(side, 0, profile("ChargingStationMaxProfile", 16, profile_id=9)) == "Accepted"
    now = clock.now()
    tx = await cs.plug_in(EV("EV1", "test", 60.0, 22.0, 20.0, 30.0, now, now + timedelta(hours=8)))
    assert isinstance(tx, str) and cs.power_kw(1) == pytest.approx(11.04)  # 16 A x 3 x 230 V
    assert await set_profile(side, 1, profile("TxProfile", 8, transaction_id=tx)) == "Accepted"
    assert cs.power_kw(1) == pytest.approx(5.52) and (cs.held_limit(1), cs.held_limit_unit(1)) == (8.0, "A")
    # a station maximum belongs on EVSE 0; the CSMS may not set external constraints (K01.FR.22)
    assert await set_profile(side, 1, profile("ChargingStationMaxProfile", 6, profile_id=10)) == "Rejected"
    assert await set_profile(side, 0, profile("ChargingStationExternalConstraints", 6, profile_id=11)) == "Rejected"
    assert cs.power_kw(1) == pytest.approx(5.52)
    assert (cs.profiles_received, cs.profiles_rejected) == (4, 2)
    crit = {"charging_profile_purpose": "TxProfile"}
    res = await side.call(call.ClearChargingProfile(charging_profile_criteria=crit))
    assert res.status == "Accepted" and cs.power_kw(1) == pytest.approx(11.04)
    res = await side.call(call.RequestStopTransaction(transaction_id=tx))
    assert res.status == "Accepted"
    await asyncio.wait_for(cs.wait_done(1), 2)
    assert cs.sessions[0].reason == "Remote"
    ended = side.events[-1]
    assert ended["event_type"] == "Ended" and ended["trigger_reason"] == "RemoteStop"
    assert ended["transaction_info"] == {"transaction_id": tx, "stopped_reason": "Remote"}
    await cs.stop()
