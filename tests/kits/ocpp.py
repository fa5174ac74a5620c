"""Test kit for the executor tests: a test-only OCPP 1.6 charge point, setpoint records, polling.

The charge point is a plain ``ocpp.v16.ChargePoint`` over a real websocket; it records every raw frame it
receives, answers SetChargingProfile with scripted statuses after a configurable delay, and never depends
on ``pipeline.sim``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect

from pipeline.contracts.topics import SetpointCommand, TopologyNode

T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
SITE_NODES = [
    TopologyNode(node_id="depot-1", site_id="depot-1", kind="site", limit_kw=100),
    TopologyNode(node_id="panel-a", site_id="depot-1", parent_id="depot-1", kind="panel", limit_kw=60),
    TopologyNode(
        node_id="CP1", site_id="depot-1", parent_id="panel-a", kind="charger", limit_kw=22, phases=3, voltage_v=230
    ),
    TopologyNode(
        node_id="CP2", site_id="depot-1", parent_id="depot-1", kind="charger", limit_kw=11, phases=1, voltage_v=230
    ),
]


class FixedClock:
    """A clock frozen at ``now`` (advance it by hand); ``sleep`` is real so backoff stays short."""

    def __init__(self, now: datetime = T0) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: datetime) -> None:
        await asyncio.sleep(max(0.0, (when - self.current).total_seconds()))


class TestChargePoint(ChargePoint):
    """A scripted OCPP 1.6 charge point for tests."""

    __test__ = False  # not a pytest test class

    def __init__(self, cp_id: str, connection: ClientConnection) -> None:
        super().__init__(cp_id, connection, response_timeout=2)
        self.frames: list[Any] = []  # every frame received, JSON-decoded
        self.profiles: list[dict[str, Any]] = []  # raw SetChargingProfile payloads, as on the wire
        self.clears: list[dict[str, Any]] = []  # raw ClearChargingProfile payloads
        self.rate_units = "Current,Power"  # ChargingScheduleAllowedChargingRateUnit; None: unknown key
        self.max_periods: str | None = None  # ChargingScheduleMaxPeriods; None: unknown key
        self.statuses: list[str] = []  # TxProfile answers, in order ("raise" -> CALLERROR); then "Accepted"
        self.station_status = "Accepted"  # the answer to every other SetChargingProfile
        self.delays: list[float] = []  # per-TxProfile answer delays (s), in order; then ``delay_s``
        self.delay_s = 0.0
        self.in_handler = asyncio.Event()

    async def route_message(self, raw_msg):
        frame = json.loads(raw_msg)
        self.frames.append(frame)
        if isinstance(frame, list) and frame[:1] == [2] and frame[2] == "SetChargingProfile":
            self.profiles.append(frame[3])
        if isinstance(frame, list) and frame[:1] == [2] and frame[2] == "ClearChargingProfile":
            self.clears.append(frame[3])
        await super().route_message(raw_msg)

    def of(self, purpose: str) -> list[dict[str, Any]]:
        """The SetChargingProfile payloads received for one chargingProfilePurpose."""
        return [p for p in self.profiles if p["csChargingProfiles"]["chargingProfilePurpose"] == purpose]

    @property
    def tx_profiles(self) -> list[dict[str, Any]]:
        return self.of("TxProfile")

    @on(Action.get_configuration)
    def _test_get_configuration(self, key=None, **_):
        known = {
            "ChargingScheduleAllowedChargingRateUnit": self.rate_units,
            "ChargingScheduleMaxPeriods": self.max_periods,
        }
        asked = list(key or known)
        return call_result.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": True, "value": known[k]} for k in asked if known.get(k) is not None
            ],
            unknown_key=[k for k in asked if known.get(k) is None] or None,
        )

    @on(Action.clear_charging_profile)
    def _test_clear_charging_profile(self, **_):
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.set_charging_profile)
    async def _test_set_charging_profile(self, connector_id, cs_charging_profiles, **_):
        if cs_charging_profiles["charging_profile_purpose"] != "TxProfile":
            return call_result.SetChargingProfile(status=self.station_status)
        self.in_handler.set()
        delay = self.delays.pop(0) if self.delays else self.delay_s
        if delay:
            await asyncio.sleep(delay)
        status = self.statuses.pop(0) if self.statuses else "Accepted"
        if status == "raise":
            raise RuntimeError("scripted failure")
        return call_result.SetChargingProfile(status=status)

    async def boot(self) -> call_result.BootNotification:
        return await self.call(call.BootNotification(charge_point_model="TestModel", charge_point_vendor="Test"))

    async def start_tx(self, connector_id: int = 1, meter_start: int = 1000, when: datetime = T0) -> int:
        result = await self.call(
            call.StartTransaction(
                connector_id=connector_id, id_tag="TAG1", meter_start=meter_start, timestamp=iso(when)
            )
        )
        return result.transaction_id


@contextlib.asynccontextmanager
async def open_charge_point(port: int, cp_id: str = "CP1", **connect_kwargs: Any) -> AsyncIterator[TestChargePoint]:
    """A connected test charge point serving its side of the connection until the block exits."""
    async with connect(f"ws://127.0.0.1:{port}/ocpp/{cp_id}", subprotocols=["ocpp1.6"], **connect_kwargs) as ws:
        cp = TestChargePoint(cp_id, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def wait_for(predicate: Callable[[], Any], timeout: float = 1.5, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def command(
    cp: str = "CP1",
    connector: int = 1,
    tx: int | str = 1,
    setpoint_a: float = 16.0,
    computed_at: datetime = T0,
    phases: int = 3,
    voltage_v: float = 230.0,
    **extra: Any,
) -> SetpointCommand:
    """A SetpointCommand whose setpoint_kw is consistent with setpoint_a; the node and site limits are the
    test site's breakers (panel-a 60 kW, depot-1 100 kW) unless given: a missing limit holds increases."""
    fields = dict(
        session_id=f"{cp}-{tx}",
        charge_point_id=cp,
        connector_id=connector,
        transaction_id=str(tx),
        site_id="depot-1",
        node_id="panel-a",
        setpoint_kw=round(setpoint_a * phases * voltage_v / 1000, 4),
        setpoint_a=setpoint_a,
        phases=phases,
        voltage_v=voltage_v,
        binding="headroom",
        computed_at=computed_at,
        node_limit_kw=60.0,
        site_limit_kw=100.0,
    )
    fields.update(extra)
    return SetpointCommand(**fields)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)
