"""Test kit for OCPP 2.0.1: a scripted test charging station over a real websocket (``ocpp.v201``).

It records every frame it receives, answers SetChargingProfile (TxProfile answers scripted like the 1.6
kit's), ClearChargingProfile and GetVariables (``SmartChargingCtrlr.RateUnit``), and never depends on
``pipeline.sim``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.client import ClientConnection, connect

from tests.kits.ocpp import T0, iso


class TestStation(ChargePoint):
    """A scripted OCPP 2.0.1 charging station for tests."""

    __test__ = False

    def __init__(self, cp_id: str, connection: ClientConnection) -> None:
        super().__init__(cp_id, connection, response_timeout=2)
        self.frames: list[Any] = []
        self.profiles: list[dict[str, Any]] = []  # SetChargingProfileRequest payloads, as on the wire
        self.clears: list[dict[str, Any]] = []
        self.statuses: list[str] = []  # TxProfile answers in order ("raise" -> CALLERROR); then Accepted
        self.rate_unit: str | None = "A,W"  # SmartChargingCtrlr.RateUnit; None: UnknownVariable
        self.periods_per_schedule: str | None = None  # SmartChargingCtrlr.PeriodsPerSchedule; None: UnknownVariable
        self.seq = 0

    async def route_message(self, raw_msg):
        frame = json.loads(raw_msg)
        self.frames.append(frame)
        if isinstance(frame, list) and frame[:1] == [2] and frame[2] == "SetChargingProfile":
            self.profiles.append(frame[3])
        if isinstance(frame, list) and frame[:1] == [2] and frame[2] == "ClearChargingProfile":
            self.clears.append(frame[3])
        await super().route_message(raw_msg)

    def of(self, purpose: str) -> list[dict[str, Any]]:
        return [p for p in self.profiles if p["chargingProfile"]["chargingProfilePurpose"] == purpose]

    @property
    def tx_profiles(self) -> list[dict[str, Any]]:
        return self.of("TxProfile")

    @on(Action.set_charging_profile)
    def _set_charging_profile(self, evse_id, charging_profile, **_):
        if charging_profile["charging_profile_purpose"] != "TxProfile":
            return call_result.SetChargingProfile(status="Accepted")
        status = self.statuses.pop(0) if self.statuses else "Accepted"
        if status == "raise":
            raise RuntimeError("scripted failure")
        return call_result.SetChargingProfile(status=status)

    @on(Action.clear_charging_profile)
    def _clear_charging_profile(self, **_):
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.get_variables)
    def _get_variables(self, get_variable_data, **_):
        out = []
        for item in get_variable_data:
            value = {"RateUnit": self.rate_unit, "PeriodsPerSchedule": self.periods_per_schedule}.get(
                item["variable"]["name"]
            )
            result = {
                "attribute_status": "Accepted" if value is not None else "UnknownVariable",
                "component": item["component"],
                "variable": item["variable"],
            }
            if value is not None:
                result["attribute_value"] = value
            out.append(result)
        return call_result.GetVariables(get_variable_result=out)

    async def boot(self) -> call_result.BootNotification:
        return await self.call(
            call.BootNotification(charging_station={"model": "TestModel", "vendor_name": "Test"}, reason="PowerUp")
        )

    async def tx_event(
        self,
        event_type: str,
        tx: str,
        *,
        evse: int | None = 1,
        when: datetime = T0,
        meter: list[dict[str, Any]] | None = None,
        trigger: str = "Authorized",
    ) -> Any:
        self.seq += 1
        return await self.call(
            call.TransactionEvent(
                event_type=event_type,
                timestamp=iso(when),
                trigger_reason=trigger,
                seq_no=self.seq,
                transaction_info={"transaction_id": tx},
                evse=None if evse is None else {"id": evse, "connector_id": 1},
                meter_value=meter,
            )
        )

    async def start_tx(self, tx: str = "tx-1", evse: int = 1, when: datetime = T0) -> str:
        await self.tx_event("Started", tx, evse=evse, when=when)
        return tx


@contextlib.asynccontextmanager
async def open_station(port: int, cp_id: str = "CP1", **connect_kwargs: Any) -> AsyncIterator[TestStation]:
    """A connected 2.0.1 test station serving its side of the connection until the block exits."""
    async with connect(f"ws://127.0.0.1:{port}/ocpp/{cp_id}", subprotocols=["ocpp2.0.1"], **connect_kwargs) as ws:
        cs = TestStation(cp_id, ws)
        task = asyncio.create_task(cs.start())
        try:
            yield cs
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
