"""A minimal OCPP 1.6J charge point for the Kafka restart tests: it records every TxProfile limit it is
sent and can drop and re-open its websocket while its transaction stays open (as a real charger does
when the central system restarts)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import connect


class _Link(ChargePoint):
    def __init__(self, cp_id: str, ws, limits: list[float], cleared: list[int | None]) -> None:
        super().__init__(cp_id, ws, response_timeout=5)
        self._limits = limits
        self._cleared = cleared

    @on(Action.set_charging_profile)
    async def _profile(self, connector_id, cs_charging_profiles, **_):
        if cs_charging_profiles.get("charging_profile_purpose") == "TxProfile" and connector_id == 1:
            periods = cs_charging_profiles["charging_schedule"]["charging_schedule_period"]
            self._limits.append(float(periods[0]["limit"]))
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    async def _clear(self, id=None, connector_id=None, **_):
        self._cleared.append(id)
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.get_configuration)
    async def _configuration(self, key=None, **_):
        known = {"ChargingScheduleAllowedChargingRateUnit": "Current"}
        wanted = key or list(known)
        return call_result.GetConfiguration(
            configuration_key=[{"key": k, "readonly": True, "value": known[k]} for k in wanted if k in known],
            unknown_key=[k for k in wanted if k not in known] or None,
        )


class RecordingCharger:
    """``await connect(port)`` (boots), ``start_transaction()``; ``limits`` lists the TxProfile limits
    (A per phase) received on connector 1, over every connection, in order; ``cleared`` the profile ids
    of every ClearChargingProfile."""

    def __init__(self, cp_id: str) -> None:
        self.cp_id = cp_id
        self.limits: list[float] = []
        self.cleared: list[int | None] = []
        self.transaction_id: int | None = None
        self._ws = None
        self._link: _Link | None = None
        self._task: asyncio.Task | None = None

    async def connect(self, port: int) -> None:
        self._ws = await connect(f"ws://127.0.0.1:{port}/ocpp/{self.cp_id}", subprotocols=["ocpp1.6"])
        self._link = _Link(self.cp_id, self._ws, self.limits, self.cleared)
        self._task = asyncio.create_task(self._link.start())
        await self._link.call(call.BootNotification(charge_point_model="Rec", charge_point_vendor="Test"))

    async def start_transaction(self) -> int:
        result = await self._link.call(
            call.StartTransaction(
                connector_id=1,
                id_tag="TAG",
                meter_start=0,
                timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            )
        )
        self.transaction_id = result.transaction_id
        return result.transaction_id

    async def disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._ws is not None:
            await self._ws.close()
        self._ws = self._link = self._task = None
