"""``pipeline replay``: one site through real days, the whole loop over real websockets.

Real Dutch day-ahead prices go on ``tariff.price.signals``, real household load (summed) is the building
load on ``bems.site.demand``, and EVs drawn from the ElaadNL distributions arrive at simulated OCPP 1.6J
charge points that connect to the executor. The embedded engine allocates; the executor dispatches.

Time is a :class:`~pipeline.contracts.clock.SimClock` running ``speed`` times faster than real time. At each
event (an EV plugs in, the building load steps, a DR window opens or closes, a session ends because its
need is met or its EV leaves, the engine's next temporal boundary) the clock lands on the event's instant and holds until the loop has settled
(no record in flight on the transport and none sent for a short quiet time, the executor and engine idle,
every session end reported), then runs on. Session ends are foreseen from each station's draw and also
caught as the station reports them (``on_power``), whichever comes first. So the figures measure the
allocation and the dispatch, not websocket latency stretched by the speed-up; the benchmarks measure
latency in real time. What the loop does on its own clock between events (the engine's tick, meter
values, the executor's debounce) runs on the moving clock.

The site meter counts seconds over the breaker, over the limit in force (DR included) and, when the
breaker has a rating per phase (``--breaker-a``, ``limit_a`` on the site's ``site.topology`` node), over
that rating on each phase. The summary lists every session (what it was offered and what it got), which
``python -m benchmarks quality`` sets against the optimum.

A :class:`~pipeline.replay.series.ReplaySeries` passed in collects the site's load, each session's draw
and the sum of setpoints every simulated minute and at every event, for ``--report``'s plots.

With ``drain`` the replay runs on past its last day, with no new arrivals but the next day's building load
and day-ahead prices, until every EV that came has left (at most a day): a session that waits for the
night's cheap hours is then measured on what it got by its departure, not cut at midnight.

With ``plans`` each plugged EV's driver tells the loop when it leaves and what it needs, as a real driver
would: a ``session.plans`` record keyed ``session:{session_id}`` at plug-in (departure = the EV's real
departure, energy = its real need), so the allocation plans the session (docs/architecture.md, "Plans").
An EV that stays past the replay's end leaves there, as far as the replay and the optimum it is measured
against are concerned, so its plan says it leaves at the end: told the real departure, the loop would
rightly wait for cheap hours after the end and be measured short of a need it was right to defer.
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
    ACTIVE_SESSIONS,
    DR_SIGNALS,
    PRICE_SIGNALS,
    SESSION_PLANS,
    SETPOINT_COMMANDS,
    SITE_DEMAND,
    DRSignal,
    PhaseRotation,
    PriceSignal,
    SessionPlan,
    SiteDemand,
    TopologyNode,
    plan_key,
    session_key,
)
from pipeline.engine.config import EngineConfig
from pipeline.pgwire.config import PgwireSettings
from pipeline.replay.data import SITE_TZ, EVSampler, building_load, day_ahead_releases, day_start_utc
from pipeline.replay.meter import PHASES, SetpointExcess, SiteMeter, grid_phases
from pipeline.replay.series import ReplaySeries
from pipeline.replay.settle import UNSETTLED, run_clock_to, settle, settle_dispatch, step_dispatch
from pipeline.sim import SimulatedChargePoint
from pipeline.sim.ev import EV
from pipeline.sim.session import Connector
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
    breaker_a: float | None = None  # the main breaker's rating per phase, A (None: limit_kw alone)
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
    plans: bool = False  # each driver publishes its departure and need on session.plans at plug-in
    drain: bool = False  # run on past the last day (no new EVs) until every EV has left, at most a day
    rotate_phases: bool = True  # charger i wired RST, STR, TRS in turn (see WIRING); False: every one RST
    prices_known: bool = False  # every day's prices at the start, not a day ahead (a yardstick, not a market)


WIRING: tuple[PhaseRotation, ...] = ("RST", "STR", "TRS")
"""The replay's chargers are wired to the grid in these rotations in turn (charger 1 RST, 2 STR, 3 TRS, 4 RST,
...), as installers spread single-phase loads over the three phases; each charger declares its wiring in
``site.topology`` (``phase_rotation``, OCPP 1.6 ``ConnectorPhaseRotation``), so the allocation knows which
grid phase a 1- or 2-phase EV loads."""


def wiring(o: ReplayOptions, i: int) -> PhaseRotation:
    """Charger ``i``'s (1-based) ``phase_rotation``: :data:`WIRING` in turn, or ``"RST"`` without
    ``o.rotate_phases``."""
    return WIRING[(i - 1) % len(WIRING)] if o.rotate_phases else "RST"


class _ReplaySite(PipelineConfig):
    """The replay's site file, whose site node also carries the breaker's rating per phase (A)."""

    breaker_a: float | None = None

    def topology(self) -> list[TopologyNode]:
        nodes = super().topology()
        if self.breaker_a is None:
            return nodes
        return [n.model_copy(update={"limit_a": self.breaker_a}) if n.kind == "site" else n for n in nodes]


def replay_config(o: ReplayOptions) -> PipelineConfig:
    """The replayed site: ``o.chargers`` chargers of ``o.charger_kw`` behind one breaker of ``o.limit_kw`` kW
    (and ``o.breaker_a`` A per phase when set, as ``limit_a`` on the site's ``site.topology`` node)."""
    chargers = [
        ChargerConfig(id=f"CP{i:03d}", max_power_kw=o.charger_kw, phase_rotation=wiring(o, i))
        for i in range(1, o.chargers + 1)
    ]
    return _ReplaySite(
        sites=[SiteConfig(site_id=o.site_id, limit_kw=o.limit_kw, chargers=chargers)], breaker_a=o.breaker_a
    )


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
    unsettled: list[datetime] = []
    UNSETTLED.set(unsettled)
    start, end = day_start_utc(o.day), day_start_utc(o.day + timedelta(days=o.days))
    sampler = EVSampler(o.seed, o.profile)
    per_day = round(o.chargers * o.evs_per_charger)
    arrivals = [ev for d in range(o.days) for ev in sampler.day_visits(o.day + timedelta(days=d), per_day)]
    data_days = o.days + (1 if o.drain else 0)  # the day after: its building load and day-ahead prices
    if o.drain:
        end = min(max([end, *(ev.departure_at for ev in arrivals)]), end + timedelta(days=1))
    clock = SimClock(start, o.speed)
    clock.hold()
    transport = MemoryTransport()
    series = series if series is not None else ReplaySeries()
    series.begin(o.site_id, start, end, o.limit_kw)
    by_id: dict[str, SimulatedChargePoint] = {}

    def phases_of(charge_point_id: str, connector_id: int) -> tuple[int, ...]:
        cp = by_id.get(charge_point_id)
        if cp is None:
            return (0, 1, 2)
        return grid_phases(cp.connectors[connector_id].phases_in_use, cp.phase_rotation)

    meter = SiteMeter(o.limit_kw, start, series, limit_a=o.breaker_a, phases_of=phases_of)
    # A session's end (its need met, or its EV leaving) is an event too: the station reports it through
    # on_power, which holds the clock at once and wakes the driver to let the loop settle.
    session_ended = asyncio.Event()

    def on_power(charge_point_id: str, connector_id: int, power_kw: float, at: datetime) -> None:
        meter.on_power(charge_point_id, connector_id, power_kw, at)
        cp = by_id.get(charge_point_id)
        session = cp.connectors[connector_id].session if cp is not None else None
        if session is not None and session.end_at is not None:
            clock.hold()
            session_ended.set()

    releases = price_releases(o, data_days)
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
            on_power=on_power,
            ev_response_s=o.ev_response_s,
            phase_rotation=wiring(o, i),
        )
        for i in range(1, o.chargers + 1)
    ]
    by_id.update((cp.charge_point_id, cp) for cp in chargers)
    await asyncio.gather(*(cp.start() for cp in chargers))

    # (when, order at the same instant: the building load first, what happens) per event the driver makes
    events: list[tuple[datetime, int, float | EV | list[PriceSignal] | None]] = [
        (t, 0, kw) for t, kw in building_load(o.day, data_days, o.households) if t < end
    ]
    events += [(t, 3, prices) for t, prices in releases[1:]]  # the next day's curve, when the market has it
    # a DR window's start and end: the clock holds there while the loop reacts, as at any other event
    events += [(t, 2, None) for a, b, _ in meter.windows for t in (a, b) if start <= t < end]
    events += [(ev.arrival_at, 1, ev) for ev in arrivals]
    events.sort(key=lambda e: (e[0], e[1]))

    plugged, turned_away, requested_kwh = 0, 0, 0.0
    visits: dict[str, dict[str, Any]] = {}  # per plugged EV: what the session was offered (for the summary)
    sync_checks = sync_mismatches = sync_waiting = 0

    excess = SetpointExcess(start, executor.config.learned_cap_margin_kw, executor.config.learned_cap_margin_frac)

    def sample() -> None:
        now = clock.now()
        excess.observe(now, _learned_sessions(transport, chargers, meter))
        series.record(now.timestamp(), meter.building_kw, meter.ev_kw, _setpoints_kw(transport, chargers))
        if progress is not None:
            progress(
                min((now - start).total_seconds(), (end - start).total_seconds()), (end - start).total_seconds(), now
            )

    def check_sync() -> None:
        nonlocal sync_checks, sync_waiting, sync_mismatches
        in_sync, waiting, active = _check_sync(transport, chargers, executor)
        sync_checks += active
        sync_waiting += waiting
        sync_mismatches += active - in_sync - waiting

    def nothing_due() -> bool:
        """No session has ended, or is due to end by now, without its end reported (StopTransaction
        answered): the loop is not quiet before the executor has heard of it; and no charger has a limit
        change due by now (a schedule period's start) it has not applied, so the meter never reads a draw
        the charger should already have cut. A session with either due is woken to find it (its task may
        sleep a moment past it: it set its wake time on the moving clock)."""
        now = clock.now()
        due = [c for c, t in _session_ends(chargers) if t <= now]
        for c in due:
            c.wake.set()
        limits_due = [cp.wake_due() for cp in chargers]  # every one woken, not only the first
        return not due and not any(limits_due)

    async def run_to(at: datetime) -> None:
        """Run the clock to ``at`` (held there), holding it at every session end on the way (each one
        found by the station as it happens, or foreseen from the draw now) and at the engine's next
        temporal boundary (a price slot's start, a plan turning urgent) while the loop settles: under a
        compressed clock a reaction the loop makes on its own would otherwise land minutes late."""
        while True:
            session_ended.clear()
            now = clock.now()
            foreseen = min((t for _, t in _session_ends(chargers) if now < t < at), default=None)
            boundary = engine.engine.next_boundary()  # a NOW() comparison flips: a price slot, a plan's urgency
            if boundary is not None and now < boundary < at:
                foreseen = boundary if foreseen is None else min(foreseen, boundary)
            target = at if foreseen is None else min(at, foreseen + timedelta(milliseconds=1))
            await run_clock_to(clock, target, session_ended, on_the_way=step_on)
            if target == at and not session_ended.is_set() and clock.now() >= at:
                return
            await settle_dispatch(clock, transport, executor, o.quiet_s, at, engine=engine, ready=nothing_due)
            sample()
            check_sync()
            if clock.now() >= at:
                return

    async def step_on(until: datetime) -> None:
        await step_dispatch(clock, transport, executor, o.quiet_s, until, engine=engine)

    def until_next(i: int) -> datetime:
        return events[i + 1][0] if i + 1 < len(events) else end

    await settle(clock, transport, o.quiet_s, engine=engine)
    sampling = asyncio.create_task(_every(clock, start, end, sample_s, sample), name="replay-sampler")
    try:
        for i, (at, _, payload) in enumerate(events):
            await run_to(at)
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
                cp_id = await _plug_in_anywhere(chargers, payload, series) if payload.departure_at > now else None
                if cp_id is not None:
                    plugged += 1
                    requested_kwh += payload.energy_need_kwh
                    visits[payload.ev_id] = _visit(payload, by_id[cp_id], now)
                    if o.plans:
                        visits[payload.ev_id]["plan"] = await _publish_plan(transport, by_id[cp_id], payload, now, end)
                else:
                    turned_away += 1
            await settle_dispatch(
                clock, transport, executor, o.quiet_s, until_next(i), engine=engine, ready=nothing_due
            )
            sample()
            check_sync()
        await run_to(end)
        await settle_dispatch(clock, transport, executor, o.quiet_s, end + timedelta(minutes=1), engine=engine)
        meter.advance(clock.now())
        sample()
        in_sync, _, active = _check_sync(transport, chargers, executor)
        delivered = sum(cp.delivered_kwh for cp in chargers)
        sessions = _session_results(chargers, visits)
        over_a = dict(zip(PHASES, (round(x, 3) for x in meter.seconds_over_limit_a), strict=True))
        summary = {
            "site_id": o.site_id,
            "replay_start": start.isoformat(),
            "replay_end": end.isoformat(),
            "sessions": plugged,
            "evs_turned_away": turned_away,
            "energy_delivered_kwh": round(delivered, 3),
            "energy_requested_kwh": round(requested_kwh, 3),
            "energy_unmet_kwh": round(sum(v["energy_unmet_kwh"] for v in sessions), 3),
            "worst_session_unmet_kwh": round(max((v["energy_unmet_kwh"] for v in sessions), default=0.0), 3),
            "peak_site_kw": round(meter.peak_kw, 3),
            "peak_building_kw": round(meter.peak_building_kw, 3),
            "breaker_limit_kw": o.limit_kw,
            "breaker_limit_a": o.breaker_a,
            "seconds_over_limit": round(meter.seconds_over_limit, 3),
            "seconds_over_limit_in_force": round(meter.seconds_over_limit_in_force, 3),
            "over_limit_episodes": meter.over_episodes,
            "seconds_over_limit_a": over_a if o.breaker_a is not None else None,
            "setpoint_minutes_above_draw": round(excess.minutes, 1),
            "peak_phase_a": dict(zip(PHASES, (round(x, 2) for x in meter.peak_a), strict=True)),
            "profiles_sent": executor.stats.profiles_sent,
            "updates_collapsed": executor.stats.updates_collapsed,
            "setpoint_records": len(transport.log(SETPOINT_COMMANDS)),
            "setpoints_bound_by_plan": _bound_by_plan(transport),
            "engine_evaluations": engine.stats.evaluations,
            "active_sessions_at_end": active,
            "chargers_holding_latest_setpoint": in_sync,
            "sync_checks": sync_checks,
            "sync_mismatches": sync_mismatches,
            "sync_waiting": sync_waiting,
            "speed": o.speed,
            "wall_clock_s": round(time.monotonic() - wall_start, 2),
            "unsettled_events": len(unsettled),
            "unsettled_at": [t.isoformat() for t in unsettled[:20]],
            "dr_windows": [
                {"start": a.isoformat(), "end": b.isoformat(), "limit_kw": round(kw, 3)} for a, b, kw in meter.windows
            ],
            "session_results": sessions,
            "options": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(o).items()},
        }
        return summary
    finally:
        sampling.cancel()
        clock.release()
        await asyncio.gather(*(cp.stop() for cp in chargers), return_exceptions=True)
        await loop.stop()


def price_releases(o: ReplayOptions, days: int) -> list[tuple[datetime, list[PriceSignal]]]:
    """When the replay publishes ``days`` days of prices from ``o.day``: ``[(at UTC, signals)]`` in time
    order. By default as the market does (:func:`~pipeline.replay.data.day_ahead_releases`: each day's curve
    at 13:00 local the day before); with ``o.prices_known`` all of them at the replay's start, a yardstick
    that tells what the day-ahead horizon costs a plan from what its rules cost (``benchmarks quality
    --scenario NAME --plans --prices-known``)."""
    releases = day_ahead_releases(o.site_id, o.day, days)
    if o.prices_known:
        return [(releases[0][0], [s for _, signals in releases for s in signals])]
    return releases


async def _publish_prices(transport: MemoryTransport, series: ReplaySeries, prices: list[PriceSignal]) -> None:
    """One release of :func:`price_releases`: its hours on ``tariff.price.signals`` at once, ahead of the
    hours they price (the engine keeps every future slot: ``price_slots``)."""
    for signal in prices:
        series.add_price(signal)
        await publish(transport, PRICE_SIGNALS, signal)


async def _publish_plan(
    transport: MemoryTransport, cp: SimulatedChargePoint, ev: EV, now: datetime, end: datetime
) -> dict[str, Any]:
    """The driver's plan for ``ev``'s session on ``cp`` (just started): a ``session.plans`` record keyed by
    its session id (``{charge_point_id}-{transaction_id}``, the executor's) with the EV's real departure,
    or the replay's ``end`` if it stays longer (the replay and the optimum it is set against stop there),
    its need (kWh from the session's start, ``energy_needed_kwh``) and its battery's size (``battery_kwh``,
    as a driver's app knows it: with the SoC the EV reports, the plan times the taper); returns what was
    published."""
    session = cp.connectors[1].session
    assert session is not None and session.transaction_id is not None
    session_id = session_key(cp.charge_point_id, session.transaction_id)
    departure = min(ev.departure_at, end)
    plan = SessionPlan(
        plan_id=plan_key(session_id, None),
        session_id=session_id,
        departure_at=departure,
        energy_needed_kwh=round(ev.energy_need_kwh, 4),
        battery_kwh=ev.battery_kwh,
        source="driver",
        updated_at=now,
    )
    await publish(transport, SESSION_PLANS, plan)
    return {
        "session_id": session_id,
        "departure_at": departure.isoformat(),
        "energy_needed_kwh": plan.energy_needed_kwh,
        "battery_kwh": plan.battery_kwh,
    }


async def _every(clock: SimClock, start: datetime, end: datetime, interval_s: float, call: Callable[[], None]) -> None:
    """``call()`` at ``start`` and every ``interval_s`` clock seconds after it, until ``end``."""
    while True:
        call()
        elapsed = (clock.now() - start).total_seconds()
        if elapsed >= (end - start).total_seconds():
            return
        await clock.sleep(interval_s - elapsed % interval_s)


def _bound_by_plan(transport: MemoryTransport) -> int:
    """How many setpoint records the engine published with binding ``plan`` (a planned session held back
    for cheaper slots, or stopped with its need met)."""
    records = transport.log(SETPOINT_COMMANDS)
    return sum(1 for r in records if r.value is not None and json.loads(r.value)["binding"] == "plan")


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


def _learned_sessions(
    transport: MemoryTransport, chargers: list[SimulatedChargePoint], meter: SiteMeter
) -> list[tuple[float, float, bool]]:
    """``(setpoint_kw, draw_kw, cap learned)`` of every running session with a published setpoint: the
    engine's latest setpoint, its true draw, and whether the executor has published a learned cap."""
    by_id = {cp.charge_point_id: cp for cp in chargers}
    setpoints = transport.latest(SETPOINT_COMMANDS)
    out = []
    for key, raw in transport.latest(ACTIVE_SESSIONS).items():
        rec, cmd = json.loads(raw), setpoints.get(key)
        cp = by_id.get(rec["charge_point_id"])
        if cmd is None or cp is None or not cp.session_active(rec["connector_id"]):
            continue
        draw = meter.ev.get((rec["charge_point_id"], rec["connector_id"]), 0.0)
        out.append((json.loads(cmd)["setpoint_kw"], draw, rec.get("learned_cap_kw") is not None))
    return out


async def _plug_in_anywhere(chargers: list[SimulatedChargePoint], ev: EV, series: ReplaySeries) -> str | None:
    """Plug ``ev`` into the first charger whose connector is free and return its id; None when none is.
    Its draw is recorded in ``series`` as session ``"<ev_id> (<charger>)"``."""
    for cp in chargers:
        if cp.status(1) != "Available":
            continue
        series.plug(cp.charge_point_id, 1, f"{ev.ev_id} ({cp.charge_point_id})")
        try:
            if await cp.plug_in(ev) is not None:
                return cp.charge_point_id
        except RuntimeError:  # the connector is still finishing its last session
            continue
    return None


def _session_ends(chargers: list[SimulatedChargePoint]) -> list[tuple[Connector, datetime]]:
    """When each running session ends: the instant its need is met or its EV leaves at its present draw,
    whichever is first, or, for one that has ended without its end reported yet (StopTransaction not
    answered), the instant it ended; with its connector."""
    ends: list[tuple[Connector, datetime]] = []
    for cp in chargers:
        for c in cp.connectors.values():
            s = c.session
            if s is None or s.transaction_id is None:
                continue
            if s.end_at is not None:
                ends.append((c, s.end_at))
                continue
            finish = c.finish_time()
            ends.append((c, min(s.ev.departure_at, finish) if finish is not None else s.ev.departure_at))
    return ends


def _visit(ev: EV, cp: SimulatedChargePoint, at: datetime) -> dict[str, Any]:
    """What a plugged EV's session was offered: its charger, window (ISO-8601 UTC), need (kWh), the most it
    could draw (kW: its on-board charger's limit within the charger's rating), the phases it draws on and
    the charger's wiring, and how its acceptance tapers (battery kWh, SoC at arrival %, the on-board
    charger's kW, the taper's start % and end fraction)."""
    return {
        "ev_id": ev.ev_id,
        "charge_point_id": cp.charge_point_id,
        "arrival_at": at.isoformat(),
        "departure_at": ev.departure_at.isoformat(),
        "energy_requested_kwh": round(ev.energy_need_kwh, 4),
        "max_power_kw": round(min(cp.rated_power_kw, ev.max_ac_kw), 4),
        "phases": cp.connectors[1].phases_in_use,
        "phase_rotation": cp.phase_rotation,
        "battery_kwh": ev.battery_kwh,
        "arrival_soc_pct": ev.arrival_soc_pct,
        "ev_max_ac_kw": ev.max_ac_kw,
        "taper_from_pct": ev.taper_from_pct,
        "taper_end_fraction": ev.taper_end_fraction,
        "voltage_v": cp.voltage_v,
    }


def _session_results(chargers: list[SimulatedChargePoint], visits: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per plugged EV, its visit (:func:`_visit`) with ``energy_delivered_kwh``, ``energy_unmet_kwh`` and,
    once it ended, ``ended_at`` and the stop ``reason``; in order of arrival."""
    done: dict[str, dict[str, Any]] = {}
    for cp in chargers:
        for summary in cp.sessions:
            done[summary.ev_id] = {
                "energy_delivered_kwh": summary.energy_kwh,
                "ended_at": summary.ended_at.isoformat(),
                "reason": summary.reason,
            }
        for c in cp.connectors.values():
            if c.session is not None and not c.session.booked:
                c.advance(cp.clock.now())
                done[c.session.ev.ev_id] = {"energy_delivered_kwh": c.session.energy_wh / 1000.0}
    out = []
    for ev_id, visit in visits.items():
        result = {**visit, **done.get(ev_id, {"energy_delivered_kwh": 0.0})}
        result["energy_unmet_kwh"] = round(max(0.0, visit["energy_requested_kwh"] - result["energy_delivered_kwh"]), 4)
        result["energy_delivered_kwh"] = round(result["energy_delivered_kwh"], 4)
        out.append(result)
    return out


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
