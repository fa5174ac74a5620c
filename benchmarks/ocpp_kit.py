"""What the latency and cold-start benchmarks share on the charger side: a light recording charge point,
a bare central system, and the bare SetChargingProfile floors measured with them.

The charge point is a plain ``ocpp.v16.ChargePoint`` (the library the executor is built on) over a
``websockets`` client: it answers GetConfiguration (``Current``), SetChargingProfile and
ClearChargingProfile with ``Accepted`` and stamps every TxProfile it receives with ``time.perf_counter()``
at the moment the frame reaches its OCPP router (right after the websocket ``recv``). With
:meth:`BenchCharger.start_metering` it also meters as a real charger does (:class:`Metering`): MeterValues
every few seconds, the EV drawing the limit it holds once its response time has passed. The floors use the same charge point class against a bare central system (the
library's ``ChargePoint`` behind ``websockets.serve``, nothing else), so figure and floor share the
charger side and the library.

Time stamps are ``time.perf_counter()`` seconds of this process; reported durations are milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.datatypes import ChargingProfile, ChargingSchedule, ChargingSchedulePeriod
from ocpp.v16.enums import Action
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from pipeline.app.site import PipelineConfig, parse_config
from pipeline.sim.session import PERIODIC, MeterReading
from pipeline.sim.v16 import meter_values

__all__ = [
    "BenchCharger",
    "Metering",
    "Watch",
    "bare_fanout_ms",
    "bare_round_trips_ms",
    "bare_site",
    "close_all",
    "connect_all",
    "site_config",
    "timed_fanout",
    "tx_profile_request",
]

SUBPROTOCOL = "ocpp1.6"
VOLTAGE_V = 230.0
PHASES = 3


class Metering:
    """How a :class:`BenchCharger` meters, as a real charger with a charging EV does: a MeterValues.req
    (OCPP 1.6 section 4.7; Power.Active.Import in W, Energy.Active.Import.Register in Wh, Current.Import per
    phase in A) every ``interval_s`` real seconds, the first after a random part of an interval so a site's
    chargers do not report in step. The EV draws the TxProfile limit it holds (A per phase x
    :data:`PHASES` x :data:`VOLTAGE_V`) from ``ev_response_s`` after the profile arrived (the EV's
    response time; before it, the previous draw), with a uniform jitter of +- ``jitter_w`` (W) per
    reading, as a real meter's noise."""

    def __init__(self, interval_s: float = 5.0, ev_response_s: float = 2.0, jitter_w: float = 30.0) -> None:
        self.interval_s = interval_s
        self.ev_response_s = ev_response_s
        self.jitter_w = jitter_w


def site_config(
    chargers: int, per_site: int = 20, site_limit_kw: float = 200.0, charger_kw: float = 22.0
) -> PipelineConfig:
    """``chargers`` 3-phase 230 V chargers of ``charger_kw`` (kW) in sites of ``per_site`` behind a main
    breaker of ``site_limit_kw`` (kW); ids ``S{site:03}`` and ``S{site:03}-CP{n:02}``."""
    sites = []
    for s in range(0, chargers, per_site):
        site = f"S{s // per_site:03d}"
        sites.append(
            {
                "site_id": site,
                "limit_kw": site_limit_kw,
                "chargers": [
                    {"id": f"{site}-CP{i:02d}", "max_power_kw": charger_kw} for i in range(min(per_site, chargers - s))
                ],
            }
        )
    return parse_config({"sites": sites})


class Watch:
    """Waits until every charger in ``expected`` (``{charge_point_id: TxProfile limit, A}``) holds its
    limit, counting only TxProfiles received after it was created. ``done`` fires then; ``held_at`` gives
    each charger's receipt time (perf_counter s) of the TxProfile that made it hold its limit."""

    def __init__(self, expected: dict[str, float]) -> None:
        self.expected = expected
        self.started = time.perf_counter()
        self.held_at: dict[str, float] = {}
        self.done = asyncio.Event()
        if not expected:
            self.done.set()

    def seen(self, cp: str, limit: float, at: float) -> None:
        want = self.expected.get(cp)
        if want is None:
            return
        if abs(limit - want) < 1e-6:
            self.held_at[cp] = at
            if len(self.held_at) == len(self.expected):
                self.done.set()
        else:
            self.held_at.pop(cp, None)


class _Link(ChargePoint):
    """The library charge point; the owning :class:`BenchCharger` records what it receives."""

    def __init__(self, owner: BenchCharger, ws) -> None:
        super().__init__(owner.cp_id, ws, response_timeout=60)
        self._owner = owner
        self._rx = 0.0

    async def route_message(self, raw_msg):
        self._rx = time.perf_counter()
        await super().route_message(raw_msg)

    @on(Action.get_configuration)
    def _configuration(self, key=None, **_):
        self._owner.calls += 1
        self._owner.config_at = self._rx
        known = {"ChargingScheduleAllowedChargingRateUnit": "Current"}
        wanted = key or list(known)
        return call_result.GetConfiguration(
            configuration_key=[{"key": k, "readonly": True, "value": known[k]} for k in wanted if k in known],
            unknown_key=[k for k in wanted if k not in known] or None,
        )

    @on(Action.set_charging_profile)
    def _profile(self, connector_id, cs_charging_profiles, **_):
        self._owner.calls += 1
        if cs_charging_profiles.get("charging_profile_purpose") == "TxProfile":
            period = cs_charging_profiles["charging_schedule"]["charging_schedule_period"][0]
            self._owner.received(float(period["limit"]), self._rx)
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def _clear(self, **_):
        self._owner.calls += 1
        return call_result.ClearChargingProfile(status="Accepted")


class BenchCharger:
    """One OCPP 1.6J charge point with one connector that records the TxProfiles it receives.

    ``limit`` is the latest TxProfile limit (A per phase) and ``received_at`` its receipt time
    (perf_counter s); ``count`` how many TxProfiles arrived, ``calls`` how many calls of any kind the
    central system made, ``config_at`` when the latest GetConfiguration arrived. ``watch`` (a
    :class:`Watch`) is told of each TxProfile.
    """

    def __init__(self, cp_id: str) -> None:
        self.cp_id = cp_id
        self.limit: float | None = None
        self.received_at = 0.0
        self.count = 0
        self.calls = 0
        self.config_at = 0.0
        self.transaction_id: int | None = None
        self.watch: Watch | None = None
        self.link: _Link | None = None
        self.meter_values_sent = 0
        self._ws = None
        self._task: asyncio.Task | None = None
        self._meter_task: asyncio.Task | None = None
        self._draws: list[tuple[float, float]] = []  # (perf_counter s from which the EV draws it, A per phase)

    def received(self, limit: float, at: float) -> None:
        self.limit, self.received_at = limit, at
        self.count += 1
        self._draws.append((at, limit))
        if self.watch is not None:
            self.watch.seen(self.cp_id, limit, at)

    def draw_a(self, at: float, ev_response_s: float) -> float:
        """The EV's draw (A per phase) at ``at`` (perf_counter s): the newest limit received at least
        ``ev_response_s`` before, 0 before any."""
        current = 0.0
        keep = 0
        for i, (since, limit) in enumerate(self._draws):
            if since + ev_response_s <= at:
                current, keep = limit, i
        del self._draws[:keep]
        return current

    def start_metering(self, metering: Metering, rng: random.Random) -> None:
        """Send MeterValues for the open transaction as :class:`Metering` says, until :meth:`close`."""
        self._meter_task = asyncio.create_task(self._meter(metering, rng))

    async def _meter(self, metering: Metering, rng: random.Random) -> None:
        register_wh = 0.0
        last = time.perf_counter()
        await asyncio.sleep(rng.uniform(0.0, metering.interval_s))
        while self.link is not None:
            now = time.perf_counter()
            amps = self.draw_a(now, metering.ev_response_s)
            power_w = max(0.0, amps * PHASES * VOLTAGE_V + rng.uniform(-metering.jitter_w, metering.jitter_w))
            register_wh += power_w * (now - last) / 3600.0
            last = now
            reading = MeterReading(
                power_kw=power_w / 1000.0,
                register_wh=register_wh,
                currents_a=(power_w / PHASES / VOLTAGE_V,) * PHASES,
            )
            request = meter_values(1, self.transaction_id, datetime.now(UTC), PERIODIC, reading)
            with contextlib.suppress(Exception):
                await self.link.call(request)
                self.meter_values_sent += 1
            await asyncio.sleep(metering.interval_s)

    async def connect(self, base_url: str, boot: bool = True) -> None:
        """Open ``{base_url}/{cp_id}``; with ``boot`` send BootNotification (else stay silent, as a
        charger that reconnects and has not spoken yet)."""
        self._ws = await connect(
            f"{base_url}/{self.cp_id}", subprotocols=[SUBPROTOCOL], open_timeout=60, ping_interval=None, max_queue=None
        )
        self.link = _Link(self, self._ws)
        self._task = asyncio.create_task(self._serve())
        if boot:
            await self.link.call(call.BootNotification(charge_point_model="Bench", charge_point_vendor="Bench"))

    async def _serve(self) -> None:
        with contextlib.suppress(Exception):
            await self.link.start()

    async def start_transaction(self) -> int:
        result = await self.link.call(
            call.StartTransaction(
                connector_id=1,
                id_tag="BENCH",
                meter_start=0,
                timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            )
        )
        self.transaction_id = result.transaction_id
        return result.transaction_id

    async def status(self) -> None:
        """StatusNotification ``Charging`` on connector 1 (what a reconnecting charger says first)."""
        await self.link.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))

    async def close(self) -> None:
        if self._meter_task is not None:
            self._meter_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._meter_task
            self._meter_task = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._ws = self.link = self._task = None


async def connect_all(chargers: Sequence[BenchCharger], base_url: str, boot: bool = True, batch: int = 50) -> None:
    """Connect ``chargers`` ``batch`` at a time (a bigger burst overflows the listen backlog and costs
    SYN retransmits of a second)."""
    for i in range(0, len(chargers), batch):
        await asyncio.gather(*(c.connect(base_url, boot) for c in chargers[i : i + batch]))


async def close_all(chargers: Iterable[BenchCharger]) -> None:
    await asyncio.gather(*(c.close() for c in chargers), return_exceptions=True)


def tx_profile_request(limit: float, transaction_id: int | None = 1) -> call.SetChargingProfile:
    """The SetChargingProfile.req the executor sends for a TxProfile (connector 1, profile 1001,
    Relative, one period of ``limit`` A on 3 phases)."""
    return call.SetChargingProfile(
        connector_id=1,
        cs_charging_profiles=ChargingProfile(
            charging_profile_id=1001,
            stack_level=1,
            charging_profile_purpose="TxProfile",
            charging_profile_kind="Relative",
            transaction_id=transaction_id,
            charging_schedule=ChargingSchedule(
                charging_rate_unit="A",
                charging_schedule_period=[ChargingSchedulePeriod(start_period=0, limit=limit, number_phases=3)],
            ),
        ),
    )


async def timed_fanout(calls: Sequence[tuple[ChargePoint, BenchCharger, float, int | None]]) -> tuple[float, float]:
    """Send one TxProfile on each ``(central-side link, charger, limit, transaction id)`` at once; returns
    ``(ms until the last charger received its profile, ms until the last answer came back)``."""
    watch = Watch({ch.cp_id: limit for _, ch, limit, _ in calls})
    for _, ch, _, _ in calls:
        ch.watch = watch
    t0 = time.perf_counter()
    await asyncio.gather(*(link.call(tx_profile_request(limit, tx)) for link, _, limit, tx in calls))
    answered = time.perf_counter()
    await watch.done.wait()
    for _, ch, _, _ in calls:
        ch.watch = None
    return (max(watch.held_at.values()) - t0) * 1000, (answered - t0) * 1000


class _BareCentral:
    """``websockets.serve`` with one library ``ChargePoint`` per connection, nothing else."""

    def __init__(self) -> None:
        self.links: dict[str, ChargePoint] = {}
        self.arrived = asyncio.Condition()

    async def handler(self, connection) -> None:
        cp_id = connection.request.path.rstrip("/").rsplit("/", 1)[-1]
        link = ChargePoint(cp_id, connection, response_timeout=60)
        self.links[cp_id] = link
        async with self.arrived:
            self.arrived.notify_all()
        with contextlib.suppress(Exception):
            await link.start()

    async def wait_for(self, count: int) -> None:
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.links) >= count)


@contextlib.asynccontextmanager
async def bare_site(count: int):
    """A bare central system with ``count`` :class:`BenchCharger` connected; yields ``(central, chargers)``."""
    central = _BareCentral()
    async with serve(
        central.handler, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL], ping_interval=None, max_queue=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        chargers = [BenchCharger(f"BARE{i:04d}") for i in range(count)]
        await connect_all(chargers, f"ws://127.0.0.1:{port}/ocpp", boot=False)
        await central.wait_for(count)
        try:
            yield central, chargers
        finally:
            await close_all(chargers)


async def bare_round_trips_ms(samples: int, pause_s: Callable[[], float] = lambda: 0.0) -> list[float]:
    """``samples`` sequential SetChargingProfile round trips (ms): a bare central system calling one bare
    charge point, the limit alternating so each is a change."""
    async with bare_site(1) as (central, (charger,)):
        link = central.links[charger.cp_id]
        for i in range(20):  # warm up
            await link.call(tx_profile_request(10.0 + i % 2))
        out = []
        for i in range(samples):
            t0 = time.perf_counter()
            await link.call(tx_profile_request(8.0 + i % 2))
            out.append((time.perf_counter() - t0) * 1000)
            if (pause := pause_s()) > 0:
                await asyncio.sleep(pause)
        return out


async def bare_fanout_ms(count: int, samples: int) -> list[float]:
    """``samples`` times: one SetChargingProfile to each of ``count`` bare charge points at once; each
    sample is the ms until the last of them received its profile."""
    async with bare_site(count) as (central, chargers):
        out = []
        for i in range(samples + 3):
            calls = [(central.links[ch.cp_id], ch, 8.0 + i % 2, 1) for ch in chargers]
            received_ms, _ = await timed_fanout(calls)
            if i >= 3:  # the first three warm up
                out.append(received_ms)
        return out
