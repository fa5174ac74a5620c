"""A tiny test-only OCPP 1.6J central system for the simulator tests.

Imported by the tests as ``sim_csms`` (a unique name: this folder has no ``__init__.py``).
Deliberately independent of the project's ``executor``: it records every message a charger sends, answers
with fixed results, and lets a test send CSMS-initiated calls (SetChargingProfile, ...) to a charger.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16 import datatypes as dt
from ocpp.v16.enums import Action
from websockets.asyncio.server import serve

T0 = datetime(2024, 6, 3, 8, 0, tzinfo=UTC)


class CsmsSide(ChargePoint):
    """The central system's view of one connected charger."""

    def __init__(self, cp_id: str, ws: Any, central: TestCentral) -> None:
        super().__init__(cp_id, ws, response_timeout=5)
        self.central = central
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def _record(self, action: str, payload: dict[str, Any]) -> None:
        self.messages.append((action, payload))
        self.central.changed()

    def of(self, action: str) -> list[dict[str, Any]]:
        return [p for a, p in self.messages if a == action]

    @on(Action.boot_notification)
    def on_boot(self, **kw: Any):
        self._record("BootNotification", kw)
        return call_result.BootNotification(
            current_time=datetime.now(UTC).isoformat(), interval=300, status=self.central.boot_status
        )

    @on(Action.status_notification)
    def on_status(self, **kw: Any):
        self._record("StatusNotification", kw)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, **kw: Any):
        self._record("Authorize", kw)
        return call_result.Authorize(id_tag_info={"status": "Accepted"})

    @on(Action.start_transaction)
    async def on_start(self, **kw: Any):
        if self.central.start_delay_s:
            await asyncio.sleep(self.central.start_delay_s)
        tx = next(self.central.tx_ids)
        self._record("StartTransaction", {**kw, "transaction_id": tx})
        return call_result.StartTransaction(transaction_id=tx, id_tag_info={"status": "Accepted"})

    @after(Action.start_transaction)
    async def after_start(self, **kw: Any):
        """Optionally send a TxProfile right after answering StartTransaction (the race a real CSMS makes)."""
        make = self.central.profile_after_start
        if make is not None:
            tx = self.of("StartTransaction")[-1]["transaction_id"]
            res = await self.call(
                call.SetChargingProfile(connector_id=kw["connector_id"], cs_charging_profiles=make(tx))
            )
            self._record("SetChargingProfile.result", {"status": res.status, "transaction_id": tx})

    @on(Action.stop_transaction)
    def on_stop(self, **kw: Any):
        self._record("StopTransaction", kw)
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter(self, **kw: Any):
        self._record("MeterValues", kw)
        return call_result.MeterValues()

    @on(Action.heartbeat)
    def on_heartbeat(self, **kw: Any):
        self._record("Heartbeat", kw)
        return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())


class TestCentral:
    __test__ = False

    def __init__(self) -> None:
        self.chargers: dict[str, CsmsSide] = {}
        self.tx_ids = itertools.count(101)
        self.boot_status = "Accepted"
        self.profile_after_start: Callable[[int], Any] | None = None
        self.headers: dict[str, Any] = {}
        self.start_delay_s = 0.0
        self.url = ""
        self._cond = asyncio.Condition()
        self._tasks: set[asyncio.Task] = set()

    def changed(self) -> None:
        task = asyncio.ensure_future(self._notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def handler(self, ws: Any) -> None:
        cp_id = ws.request.path.rstrip("/").split("/")[-1]
        self.headers[cp_id] = ws.request.headers
        side = CsmsSide(cp_id, ws, self)
        self.chargers[cp_id] = side
        self.changed()
        try:
            await side.start()
        except Exception:
            pass

    async def wait_for(self, pred: Callable[[], Any], timeout: float = 1.5) -> Any:
        """Wait until ``pred()`` is truthy and return its value."""

        async def loop() -> Any:
            async with self._cond:  # woken by messages; also re-checks every 5 ms for simulator state
                while not (value := pred()):
                    try:
                        await asyncio.wait_for(self._cond.wait(), 0.005)
                    except TimeoutError:
                        pass
                return value

        return await asyncio.wait_for(loop(), timeout)

    async def message(
        self, cp_id: str, action: str, match: Callable[[dict], bool] = lambda p: True, timeout: float = 1.5
    ) -> dict[str, Any]:
        """Wait for the first ``action`` message from ``cp_id`` that satisfies ``match``."""

        def find() -> Any:
            side = self.chargers.get(cp_id)
            return next((p for p in side.of(action) if match(p)), None) if side else None

        return await self.wait_for(find, timeout)


async def _central():
    c = TestCentral()
    async with serve(c.handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
        port = server.sockets[0].getsockname()[1]
        c.url = f"ws://127.0.0.1:{port}/ocpp"
        yield c


def profile(
    limit: float,
    *,
    unit: str = "A",
    purpose: str = "TxProfile",
    transaction_id: int | None = None,
    stack_level: int = 1,
    profile_id: int = 1,
    phases: int | None = None,
    kind: str = "Relative",
    periods: list[tuple[int, float]] | None = None,
    start_schedule: datetime | None = None,
    duration: int | None = None,
) -> dt.ChargingProfile:
    """A ChargingProfile with one period of ``limit`` (or the given (startPeriod, limit) periods)."""
    periods = periods or [(0, limit)]
    return dt.ChargingProfile(
        charging_profile_id=profile_id,
        stack_level=stack_level,
        charging_profile_purpose=purpose,
        charging_profile_kind=kind,
        transaction_id=transaction_id,
        charging_schedule=dt.ChargingSchedule(
            charging_rate_unit=unit,
            duration=duration,
            start_schedule=start_schedule.isoformat().replace("+00:00", "Z") if start_schedule else None,
            charging_schedule_period=[
                dt.ChargingSchedulePeriod(start_period=s, limit=lim, number_phases=phases) for s, lim in periods
            ],
        ),
    )
