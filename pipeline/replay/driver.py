"""``pipeline replay``: one site through real days, the whole loop over real websockets.

Real Dutch day-ahead prices go on ``tariff.price.signals``, real household load (summed) is the building
load on ``bems.site.demand``, and EVs drawn from the ElaadNL distributions arrive at simulated OCPP 1.6J
charge points that connect to the executor. The embedded engine allocates; the executor dispatches.

Time is a :class:`~pipeline.contracts.clock.SimClock` running ``speed`` times faster than real time. At each
event the driver makes (an EV plugs in, the building load steps) the clock holds until the loop has
settled (no record in flight on the transport and none sent for a short quiet time), then runs on.
So the figures measure the allocation and the dispatch, not websocket latency stretched by the speed-up;
the benchmarks measure latency in real time. Events the driver does not make (EVs leaving, DR windows
opening on the engine's tick) run on the moving clock.

A :class:`~pipeline.replay.series.ReplaySeries` passed in collects the site's load, each session's draw
and the sum of setpoints every simulated minute and at every event, for ``--report``'s plots.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from executor import Executor, ExecutorConfig
from pipeline.app.loop import start_loop
from pipeline.app.site import ChargerConfig, PipelineConfig, SiteConfig
from pipeline.contracts.clock import SimClock
from pipeline.contracts.topics import (
    DR_SIGNALS,
    PRICE_SIGNALS,
    SETPOINT_COMMANDS,
    SITE_DEMAND,
    DRSignal,
    PriceSignal,
    SiteDemand,
)
from pipeline.engine.config import EngineConfig
from pipeline.engine.service import EngineService
from pipeline.pgwire.config import PgwireSettings
from pipeline.replay.data import SITE_TZ, EVSampler, building_load, day_ahead_releases, day_start_utc
from pipeline.replay.series import ReplaySeries
from pipeline.sim import SimulatedChargePoint
from pipeline.sim.ev import EV
from pipeline.transport.base import publish
from pipeline.transport.memory import MemoryTransport

log = logging.getLogger(__name__)


@dataclass
class ReplayOptions:
    """What to replay. Powers in kW; ``speed`` is simulated seconds per real second."""

    day: date = date(2024, 6, 3)
    days: int = 1
    speed: float = 1440.0
    chargers: int = 10
    charger_kw: float = 22.0
    limit_kw: float = 100.0
    households: int = 12
    evs_per_charger: float = 2.0
    dr_event: bool = True
    dr_curtailment_pct: float = 20.0
    seed: int = 7
    profile: str = "public"
    site_id: str = "replay-site"
    meter_interval_s: float = 300.0
    tick_s: float = 60.0
    quiet_s: float = 0.03
    ev_response_s: float = 0.0
    setpoint_ttl_s: float = 3 * 3600.0
    pg_host: str = "127.0.0.1"
    pg_port: int | None = None  # serve the engine's views read-only on Postgres wire (0: a free port)


class SiteMeter:
    """The site's true load over clock time: building load plus every EV's draw, piecewise constant.

    ``seconds_over_limit`` (over the breaker) and ``seconds_over_limit_in_force`` (over the breaker or the
    lower limit a DR window puts in force, :meth:`add_window`, while EVs draw: when the building alone is
    over a DR limit, shedding every EV is all the controller can do) and ``peak_kw`` count only states that
    lasted a positive time. Every change is also recorded in ``series`` (the site's load and the session's draw).
    """

    def __init__(self, limit_kw: float, start: datetime, series: ReplaySeries | None = None) -> None:
        self.limit_kw = limit_kw
        self.windows: list[tuple[datetime, datetime, float]] = []
        self.seconds_over_limit_in_force = 0.0
        self.building_kw = 0.0
        self.ev: dict[tuple[str, int], float] = {}
        self._t = start
        self.seconds_over_limit = 0.0
        self.peak_kw = 0.0
        self.peak_building_kw = 0.0
        self.series = series if series is not None else ReplaySeries()

    @property
    def ev_kw(self) -> float:
        return sum(self.ev.values())

    def add_window(self, start: datetime, end: datetime, limit_kw: float) -> None:
        """A DR window: on ``[start, end)`` the limit in force is ``limit_kw`` (kW) if lower than the breaker."""
        self.windows.append((start, end, limit_kw))

    def limit_in_force(self, t: datetime) -> float:
        """The site's limit at ``t`` (kW): the breaker, or a DR window's lower limit."""
        return min([self.limit_kw, *(kw for a, b, kw in self.windows if a <= t < b)])

    def advance(self, t: datetime) -> None:
        dt = (t - self._t).total_seconds()
        if dt <= 0:
            return
        total = self.building_kw + self.ev_kw
        if total > self.limit_kw + 1e-6:
            self.seconds_over_limit += dt
        cuts = sorted({self._t, t, *(x for a, b, _ in self.windows for x in (a, b) if self._t < x < t)})
        for a, b in zip(cuts, cuts[1:], strict=False):  # the state held on [a, b) against each limit in force
            if total > self.limit_in_force(a) + 1e-6 and self.ev_kw > 1e-6:
                self.seconds_over_limit_in_force += (b - a).total_seconds()
        self.peak_kw = max(self.peak_kw, total)
        self.peak_building_kw = max(self.peak_building_kw, self.building_kw)
        self._t = t

    def on_power(self, charge_point_id: str, connector_id: int, power_kw: float, at: datetime) -> None:
        self.advance(at)
        self.ev[(charge_point_id, connector_id)] = power_kw
        t = max(at, self._t).timestamp()
        self.series.on_power(charge_point_id, connector_id, power_kw, t)
        self.series.record(t, self.building_kw, self.ev_kw)

    def set_building(self, kw: float, at: datetime) -> None:
        self.advance(at)
        self.building_kw = kw
        self.series.record(max(at, self._t).timestamp(), self.building_kw, self.ev_kw)


def replay_config(o: ReplayOptions) -> PipelineConfig:
    chargers = [ChargerConfig(id=f"CP{i:03d}", max_power_kw=o.charger_kw) for i in range(1, o.chargers + 1)]
    return PipelineConfig(sites=[SiteConfig(site_id=o.site_id, limit_kw=o.limit_kw, chargers=chargers)])


async def settle(
    clock: SimClock,
    transport: MemoryTransport,
    quiet_s: float,
    executor: Executor | None = None,
    timeout_s: float = 10.0,
    engine: EngineService | None = None,
) -> bool:
    """Hold the clock until no record is unconsumed, none was sent for ``quiet_s`` real seconds, the
    executor (if given) has no call in flight or due, and the engine (if given) is not mid-evaluation."""
    clock.hold()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        if (
            transport.lag() == 0
            and transport.idle_for() >= quiet_s
            and (executor is None or executor.idle)
            and (engine is None or not engine.busy)
        ):
            return True
    log.warning("the loop did not settle within %.1fs", timeout_s)
    return False


async def settle_dispatch(
    clock: SimClock,
    transport: MemoryTransport,
    executor: Executor,
    quiet_s: float,
    until: datetime,
    engine: EngineService | None = None,
) -> None:
    """Settle, then step the held clock (never past ``until``, the next event) to when an increase the
    executor holds back on clock time may go (its debounce, or the EV response lag after a cut), and settle
    again: those waits are part of dispatch, so they take simulated time, but not real time."""
    await settle(clock, transport, quiet_s, executor, engine=engine)
    for _ in range(20):
        release = executor.pending_until()
        if release is None or release >= until:
            return
        clock.advance(max(0.0, (release - clock.now()).total_seconds()) + 0.001)
        if not await settle(clock, transport, quiet_s, executor, engine=engine):
            return


async def run_replay(
    o: ReplayOptions,
    series: ReplaySeries | None = None,
    progress: Callable[[float, float, datetime], None] | None = None,
    sample_s: float = 60.0,
    pg_password: str | None = None,
) -> dict[str, Any]:
    """Run the replay; returns the summary (see README, "Replay summary").

    ``series``, when given, is filled as the replay runs (sampled every ``sample_s`` simulated seconds and
    at every event). ``progress(done_s, total_s, now)`` is called at each sample: simulated seconds done
    of the replay's total, and the simulated time (aware UTC). With ``o.pg_port`` the engine's tables and
    views are served read-only on Postgres wire while the replay runs (:mod:`pipeline.pgwire.server`; clients
    must give ``pg_password`` if one is set)."""
    wall_start = time.monotonic()
    start, end = day_start_utc(o.day), day_start_utc(o.day + timedelta(days=o.days))
    clock = SimClock(start, o.speed)
    clock.hold()
    transport = MemoryTransport()
    series = series if series is not None else ReplaySeries()
    series.begin(o.site_id, start, end, o.limit_kw)
    meter = SiteMeter(o.limit_kw, start, series)

    releases = day_ahead_releases(o.site_id, o.day, o.days)
    await _publish_prices(transport, series, releases[0][1])
    if o.dr_event:
        for d in range(o.days):
            local = datetime.combine(o.day + timedelta(days=d), datetime.min.time(), SITE_TZ)
            dr = DRSignal(
                site_id=o.site_id,
                dr_event_id=f"dr-{(o.day + timedelta(days=d)).isoformat()}",
                curtailment_pct=o.dr_curtailment_pct,
                event_start=local + timedelta(hours=17),
                event_end=local + timedelta(hours=19),
                signal_at=start,
            )
            series.add_dr(dr)
            meter.add_window(dr.event_start, dr.event_end, o.limit_kw * (1 - o.dr_curtailment_pct / 100))
            await publish(transport, DR_SIGNALS, dr)

    # Open mode (the replay's chargers have no passwords). The setpoint TTL is longer than the default:
    # the building load steps every 15 min, but under a compressed clock the engine's evaluations delay
    # the driver's events, and a TTL below that spacing would measure the replay, not the site.
    pgwire = None if o.pg_port is None else PgwireSettings(host=o.pg_host, port=o.pg_port, password=pg_password)
    loop = await start_loop(
        transport,
        site=replay_config(o),
        clock=clock,
        engine=EngineConfig(tick_s=o.tick_s),
        executor=ExecutorConfig(port=0, setpoint_ttl_s=o.setpoint_ttl_s, metrics=False),
        pgwire=pgwire,
    )
    assert loop.engine is not None and loop.executor is not None
    engine, executor = loop.engine, loop.executor
    url = f"ws://127.0.0.1:{executor.port}/ocpp"
    chargers = [
        SimulatedChargePoint(
            f"CP{i:03d}",
            url,
            clock,
            rated_power_kw=o.charger_kw,
            meter_interval_s=o.meter_interval_s,
            on_power=meter.on_power,
            ev_response_s=o.ev_response_s,
        )
        for i in range(1, o.chargers + 1)
    ]
    await asyncio.gather(*(cp.start() for cp in chargers))

    sampler = EVSampler(o.seed, o.profile)
    per_day = round(o.chargers * o.evs_per_charger)
    # (when, order at the same instant: the building load first, what happens) per event the driver makes
    events: list[tuple[datetime, int, float | EV | list[PriceSignal] | None]] = [
        (t, 0, kw) for t, kw in building_load(o.day, o.days, o.households)
    ]
    events += [(t, 3, prices) for t, prices in releases[1:]]  # the next day's curve, when the market has it
    # a DR window's start and end: the clock holds there while the loop reacts, as at any other event
    events += [(t, 2, None) for a, b, _ in meter.windows for t in (a, b) if start <= t < end]
    for d in range(o.days):
        events += [(ev.arrival_at, 1, ev) for ev in sampler.day_visits(o.day + timedelta(days=d), per_day)]
    events.sort(key=lambda e: (e[0], e[1]))

    plugged, turned_away, requested_kwh = 0, 0, 0.0
    sync_checks = sync_mismatches = sync_waiting = 0

    def sample() -> None:
        now = clock.now()
        series.record(now.timestamp(), meter.building_kw, meter.ev_kw, _setpoints_kw(transport, chargers))
        if progress is not None:
            progress(
                min((now - start).total_seconds(), (end - start).total_seconds()), (end - start).total_seconds(), now
            )

    await settle(clock, transport, o.quiet_s, engine=engine)
    sampling = asyncio.create_task(_every(clock, start, end, sample_s, sample), name="replay-sampler")
    try:
        for i, (at, _, payload) in enumerate(events):
            clock.release()
            await clock.sleep_until(at)
            clock.hold()
            now = clock.now()
            if payload is None:  # a DR window opens or closes: nothing to do but let the loop react
                pass
            elif isinstance(payload, list):
                await _publish_prices(transport, series, payload)
            elif not isinstance(payload, EV):  # the building load steps to ``payload`` kW
                meter.set_building(payload, now)
                await publish(
                    transport,
                    SITE_DEMAND,
                    SiteDemand(
                        site_id=o.site_id,
                        current_demand_kw=round(payload + meter.ev_kw, 3),
                        ev_load_kw=round(meter.ev_kw, 3),
                        measured_at=now,
                    ),
                )
            else:
                if payload.departure_at > now and await _plug_in_anywhere(chargers, payload, series):
                    plugged += 1
                    requested_kwh += payload.energy_need_kwh
                else:
                    turned_away += 1
            await settle_dispatch(
                clock, transport, executor, o.quiet_s, events[i + 1][0] if i + 1 < len(events) else end, engine=engine
            )
            sample()
            in_sync, waiting, active = _check_sync(transport, chargers, executor)
            sync_checks += active
            sync_waiting += waiting
            sync_mismatches += active - in_sync - waiting
        clock.release()
        await clock.sleep_until(end)
        await settle_dispatch(clock, transport, executor, o.quiet_s, end + timedelta(minutes=1), engine=engine)
        meter.advance(clock.now())
        sample()
        in_sync, _, active = _check_sync(transport, chargers, executor)
        delivered = sum(cp.delivered_kwh for cp in chargers)
        summary = {
            "site_id": o.site_id,
            "replay_start": start.isoformat(),
            "replay_end": end.isoformat(),
            "sessions": plugged,
            "evs_turned_away": turned_away,
            "energy_delivered_kwh": round(delivered, 3),
            "energy_requested_kwh": round(requested_kwh, 3),
            "peak_site_kw": round(meter.peak_kw, 3),
            "peak_building_kw": round(meter.peak_building_kw, 3),
            "breaker_limit_kw": o.limit_kw,
            "seconds_over_limit": round(meter.seconds_over_limit, 3),
            "seconds_over_limit_in_force": round(meter.seconds_over_limit_in_force, 3),
            "profiles_sent": executor.stats.profiles_sent,
            "updates_collapsed": executor.stats.updates_collapsed,
            "setpoint_records": len(transport.log(SETPOINT_COMMANDS)),
            "engine_evaluations": engine.stats.evaluations,
            "active_sessions_at_end": active,
            "chargers_holding_latest_setpoint": in_sync,
            "sync_checks": sync_checks,
            "sync_mismatches": sync_mismatches,
            "sync_waiting": sync_waiting,
            "speed": o.speed,
            "wall_clock_s": round(time.monotonic() - wall_start, 2),
            "options": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(o).items()},
        }
        return summary
    finally:
        sampling.cancel()
        clock.release()
        await asyncio.gather(*(cp.stop() for cp in chargers), return_exceptions=True)
        await loop.stop()


async def _publish_prices(transport: MemoryTransport, series: ReplaySeries, prices: list[PriceSignal]) -> None:
    """One day-ahead release: every hour of the next day on ``tariff.price.signals`` at once, ahead of the
    hours it prices (the engine keeps every future slot: ``price_slots``)."""
    for signal in prices:
        series.add_price(signal)
        await publish(transport, PRICE_SIGNALS, signal)


async def _every(clock: SimClock, start: datetime, end: datetime, interval_s: float, call: Callable[[], None]) -> None:
    """``call()`` at ``start`` and every ``interval_s`` clock seconds after it, until ``end``."""
    while True:
        call()
        elapsed = (clock.now() - start).total_seconds()
        if elapsed >= (end - start).total_seconds():
            return
        await clock.sleep(interval_s - elapsed % interval_s)


def _setpoints_kw(transport: MemoryTransport, chargers: list[SimulatedChargePoint]) -> float:
    """The sum of the latest setpoints (kW) published for sessions that are running."""
    by_id = {cp.charge_point_id: cp for cp in chargers}
    total = 0.0
    for raw in transport.latest(SETPOINT_COMMANDS).values():
        cmd = json.loads(raw)
        cp = by_id.get(cmd["charge_point_id"])
        if cp is not None and cp.session_active(cmd["connector_id"]):
            total += cmd["setpoint_kw"]
    return total


async def _plug_in_anywhere(chargers: list[SimulatedChargePoint], ev: EV, series: ReplaySeries) -> bool:
    """Plug ``ev`` into the first charger whose connector is free; False when none is. Its draw is
    recorded in ``series`` as session ``"<ev_id> (<charger>)"``."""
    for cp in chargers:
        if cp.status(1) != "Available":
            continue
        series.plug(cp.charge_point_id, 1, f"{ev.ev_id} ({cp.charge_point_id})")
        try:
            if await cp.plug_in(ev) is not None:
                return True
        except RuntimeError:  # the connector is still finishing its last session
            continue
    return False


def _check_sync(
    transport: MemoryTransport, chargers: list[SimulatedChargePoint], executor: Executor
) -> tuple[int, int, int]:
    """``(in_sync, waiting, active)`` over active sessions: in sync when the charger holds exactly the latest
    setpoint published for it; waiting when it holds less and the executor reports that connector's
    increase held back (break before make: a cut elsewhere not yet followed, or the increase debounce).
    Anything else is a mismatch."""
    by_id = {cp.charge_point_id: cp for cp in chargers}
    held_back = executor.held_back()
    in_sync = waiting = active = 0
    for raw in transport.latest(SETPOINT_COMMANDS).values():
        cmd = json.loads(raw)
        cp = by_id.get(cmd["charge_point_id"])
        if cp is None or not cp.session_active(cmd["connector_id"]):
            continue  # no session, or one whose end is known and on its way to the executor
        active += 1
        held = cp.held_limit(cmd["connector_id"])
        unit_a = cp.held_limit_unit(cmd["connector_id"]) == "A"
        if held is not None and unit_a and abs(held - cmd["setpoint_a"]) < 0.05:
            in_sync += 1
        elif (cmd["charge_point_id"], cmd["connector_id"]) in held_back and (held is None or held < cmd["setpoint_a"]):
            waiting += 1
    return in_sync, waiting, active
