"""A real-data replay through the whole loop, compressed hard so it runs in seconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest

from pipeline.contracts.clock import SimClock
from pipeline.replay.driver import ReplayOptions, price_releases, replay_config, run_replay
from pipeline.replay.meter import SetpointExcess, SiteMeter, grid_phases
from pipeline.replay.series import ReplaySeries
from pipeline.replay.settle import run_clock_to


async def test_a_real_day_replays_within_the_breaker_with_every_charger_in_sync():
    series, progress = ReplaySeries(), []
    summary = await run_replay(
        ReplayOptions(
            day=date(2024, 6, 4), speed=8000, chargers=6, limit_kw=70, breaker_a=110, evs_per_charger=2.5, seed=3
        ),
        series=series,
        progress=lambda done, total, now: progress.append((done, total)),
    )
    for key in (
        "sessions",
        "energy_delivered_kwh",
        "energy_requested_kwh",
        "peak_site_kw",
        "breaker_limit_kw",
        "seconds_over_limit",
        "profiles_sent",
        "updates_collapsed",
    ):
        assert key in summary
    assert summary["sessions"] > 5
    assert 0 < summary["energy_delivered_kwh"] <= summary["energy_requested_kwh"] + 1e-6
    assert summary["seconds_over_limit"] == 0
    assert summary["peak_site_kw"] <= 70
    assert summary["profiles_sent"] > 0
    assert summary["sync_checks"] > 0 and summary["sync_mismatches"] == 0
    assert summary["chargers_holding_latest_setpoint"] == summary["active_sessions_at_end"]
    # per phase: 70 kW over three phases is 101 A, within the 110 A rating on every phase
    assert summary["seconds_over_limit_a"] == {"L1": 0.0, "L2": 0.0, "L3": 0.0}
    assert 0 < max(summary["peak_phase_a"].values()) <= 110
    # every session offered, what it got and how it ended: what the quality benchmark's LP is built from
    results = summary["session_results"]
    assert len(results) == summary["sessions"]
    assert sum(r["energy_delivered_kwh"] for r in results) == pytest.approx(summary["energy_delivered_kwh"], abs=0.01)
    assert sum(r["energy_unmet_kwh"] for r in results) == pytest.approx(summary["energy_unmet_kwh"], abs=0.01)
    ended = [r for r in results if "ended_at" in r]
    assert len(ended) == len(results) - summary["active_sessions_at_end"]
    for r in ended:  # each ended when its need was met (Local) or its EV left, not before it arrived
        assert r["arrival_at"] <= r["ended_at"] <= r["departure_at"]
        assert r["reason"] in ("Local", "EVDisconnected")
        assert (r["reason"] == "Local") == (r["energy_unmet_kwh"] < 1e-3)
    # the series for --report: each simulated minute (as the loaded event loop wakes for it) and each event,
    # in time order, across the day, as the meter saw it
    times = [t for t, *_ in series.load]
    assert times == sorted(times) and times[0] < series.start + 60 and times[-1] >= series.end
    assert len(times) > 4 * 96  # more than the building load's steps and the EVs' events alone
    assert 0 < max(b + ev for _, b, ev, _ in series.load[:-1]) <= summary["peak_site_kw"] + 1e-3
    assert len(series.sessions) == summary["sessions"] and len(series.prices) == 24 and len(series.dr_windows) == 1
    assert progress[-1] == (86400.0, 86400.0) and all(
        a[0] <= b[0] for a, b in zip(progress, progress[1:], strict=False)
    )


def test_the_site_meter_counts_seconds_over_the_limit_in_force_dr_included():
    t0 = datetime(2024, 6, 3, 15, tzinfo=UTC)
    meter = SiteMeter(100.0, t0)
    meter.add_window(t0 + timedelta(seconds=100), t0 + timedelta(seconds=200), 80.0)
    meter.set_building(70.0, t0)
    meter.on_power("CP1", 1, 20.0, t0)  # 90 kW: under the breaker, over the DR limit while the window is open
    meter.on_power("CP1", 1, 5.0, t0 + timedelta(seconds=150))
    meter.set_building(85.0, t0 + timedelta(seconds=170))  # the building alone over the DR limit ...
    meter.on_power("CP1", 1, 0.0, t0 + timedelta(seconds=180))  # ... and every EV shed: not counted
    meter.advance(t0 + timedelta(seconds=300))
    assert meter.seconds_over_limit == 0.0
    assert meter.seconds_over_limit_in_force == 50.0 + 10.0  # 100 .. 150 s, and 170 .. 180 s
    assert (meter.limit_in_force(t0), meter.limit_in_force(t0 + timedelta(seconds=199))) == (100.0, 80.0)
    # each span over it, for diagnosis: when, how long, by what
    assert [(e["start"][11:19], e["seconds"], e["peak_kw"], e["limit_kw"]) for e in meter.over_episodes] == [
        ("15:01:40", 50.0, 90.0, 80.0),
        ("15:02:50", 10.0, 90.0, 80.0),
    ]
    assert meter.over_episodes[0]["ev_kw"] == {"CP1/1": 20.0}


def test_the_site_meter_counts_seconds_over_the_rating_per_phase():
    t0 = datetime(2024, 6, 3, 15, tzinfo=UTC)
    phases = {"CP1": (0,), "CP2": (0, 1, 2)}  # a 1-phase EV on L1, a 3-phase one
    meter = SiteMeter(100.0, t0, limit_a=32.0, voltage_v=230.0, phases_of=lambda cp, _c: phases[cp])
    meter.set_building(6.9, t0)  # 10 A on each phase
    meter.on_power("CP2", 1, 6.9, t0)  # + 10 A on each phase
    meter.on_power("CP1", 1, 2.76, t0 + timedelta(seconds=10))  # + 12 A on L1: 32 A, not over
    meter.on_power("CP1", 1, 3.68, t0 + timedelta(seconds=20))  # + 16 A on L1: 36 A, over on L1 alone
    meter.on_power("CP1", 1, 0.0, t0 + timedelta(seconds=50))
    meter.advance(t0 + timedelta(seconds=60))
    assert meter.seconds_over_limit_a == [30.0, 0.0, 0.0]
    assert meter.peak_a == pytest.approx([36.0, 20.0, 20.0])
    assert meter.seconds_over_limit == 0.0  # 17.48 kW: well within the breaker's kW


def test_setpoint_minutes_above_the_draw_count_learned_sessions_past_the_margin_only():
    t0 = datetime(2024, 6, 3, tzinfo=UTC)
    excess = SetpointExcess(t0, margin_kw=1.0, margin_frac=0.1)
    # 11 kW over a 4 kW draw with its cap learned; 5 kW over 4 kW is within the margin; 11 kW over 4 kW
    # not learned yet: one session over for 2 minutes
    excess.observe(t0, [(11.0, 4.0, True), (5.0, 4.0, True), (11.0, 4.0, False)])
    excess.observe(t0 + timedelta(minutes=2), [(11.0, 20.0, True), (23.0, 20.0, True)])
    # then 23 kW over a 20 kW draw: past max(1 kW, 2 kW), for 30 s
    excess.observe(t0 + timedelta(minutes=2, seconds=30), [])
    excess.observe(t0 + timedelta(minutes=5), [])
    assert excess.minutes == pytest.approx(2.5)


def test_grid_phases_follow_the_chargers_rotation():
    assert grid_phases(3) == (0, 1, 2) and grid_phases(1) == (0,)
    assert grid_phases(1, "SRT") == (1,) and grid_phases(2, "TSR") == (2, 1)


def test_the_breaker_rating_per_phase_goes_on_the_sites_topology_node():
    nodes = replay_config(ReplayOptions(breaker_a=145.0)).topology()
    assert [(n.kind, n.limit_a) for n in nodes if n.kind == "site"] == [("site", 145.0)]
    assert all(n.limit_a is None for n in nodes if n.kind == "charger")
    assert all(n.limit_a is None for n in replay_config(ReplayOptions()).topology())


def test_prices_come_a_day_ahead_unless_every_price_is_known_from_the_start():
    """By default each day's curve at 13:00 local (11:00 UTC in June) the day before, the first at the
    start; ``prices_known`` (a yardstick) publishes both days' 48 hours at the start."""
    start = datetime(2024, 6, 2, 22, tzinfo=UTC)  # local midnight of 3 June (CEST)
    market = price_releases(ReplayOptions(day=date(2024, 6, 3)), 2)
    assert [(at, len(signals)) for at, signals in market] == [(start, 24), (datetime(2024, 6, 3, 11, tzinfo=UTC), 24)]
    known = price_releases(ReplayOptions(day=date(2024, 6, 3), prices_known=True), 2)
    assert [(at, len(signals)) for at, signals in known] == [(start, 48)]
    assert known[0][1] == market[0][1] + market[1][1]


async def test_the_clock_lands_on_an_event_exactly_or_stops_where_a_session_end_woke_it():
    t0 = datetime(2024, 6, 3, tzinfo=UTC)
    clock, woken = SimClock(t0, speed=1000), asyncio.Event()
    await run_clock_to(clock, t0 + timedelta(minutes=10), woken)
    assert clock.held and clock.now() == t0 + timedelta(minutes=10)

    async def session_end() -> None:  # what the replay's on_power does when a station reports an end
        await clock.sleep(60)
        clock.hold()
        woken.set()

    ending = asyncio.create_task(session_end())
    await run_clock_to(clock, t0 + timedelta(hours=1), woken)
    await ending
    assert clock.held and t0 + timedelta(minutes=11) <= clock.now() < t0 + timedelta(hours=1)


def test_session_ends_are_foreseen_from_the_draw_and_an_unreported_end_is_kept():
    from types import SimpleNamespace

    from pipeline.replay.driver import _session_ends
    from pipeline.sim.ev import EV
    from pipeline.sim.session import Connector, Session

    t0 = datetime(2024, 6, 3, 8, tzinfo=UTC)

    def connector(need_kwh: float, leaves_after: timedelta, kw: float, ended: datetime | None = None) -> Connector:
        ev = EV("EV1", "m", 60.0, 11.0, 20.0, need_kwh, t0, t0 + leaves_after)
        s = Session(ev, t0, 0, need_kwh * 1000, t0, transaction_id=1, energy_wh=1000.0, end_at=ended)
        return Connector(1, 3, power_kw=kw, last_t=t0, session=s)

    full = connector(6.5, timedelta(hours=8), 11.0)  # 5.5 kWh left at 11 kW: met in 30 min
    leaves = connector(50.0, timedelta(minutes=20), 11.0)  # leaves before it is full
    paused = connector(50.0, timedelta(hours=2), 0.0)  # draws nothing: ends when it leaves
    ended = connector(50.0, timedelta(hours=2), 0.0, ended=t0 + timedelta(minutes=5))  # StopTransaction not answered
    chargers = [SimpleNamespace(connectors={1: c}) for c in (full, leaves, paused, ended)]
    assert [t for _, t in _session_ends(chargers)] == [  # type: ignore[arg-type]
        t0 + timedelta(minutes=30),
        t0 + timedelta(minutes=20),
        t0 + timedelta(hours=2),
        t0 + timedelta(minutes=5),
    ]


async def test_a_plan_says_the_ev_leaves_at_the_replays_end_when_it_stays_longer():
    """The replay, like the optimum it is measured against, stops at its end: an EV that stays longer leaves
    there, so its driver's plan says so, or the loop would wait for cheap hours after the end and be
    measured short of a need it was right to defer."""
    summary = await run_replay(
        ReplayOptions(day=date(2024, 6, 3), speed=8000, chargers=3, evs_per_charger=1.5, plans=True)
    )
    end = summary["replay_end"]
    plans = [(r["plan"]["departure_at"], r["departure_at"]) for r in summary["session_results"]]
    assert any(real > end for _, real in plans)  # someone stays the night
    assert all(
        datetime.fromisoformat(planned) == min(datetime.fromisoformat(real), datetime.fromisoformat(end))
        for planned, real in plans
    )


async def test_with_plans_each_driver_tells_the_loop_and_drain_runs_on_until_every_ev_left():
    summary = await run_replay(
        ReplayOptions(day=date(2024, 6, 3), speed=8000, chargers=3, evs_per_charger=1.5, plans=True, drain=True)
    )
    results = summary["session_results"]
    assert results
    for r in results:  # a session.plans record per session, keyed by the executor's session id
        plan = r["plan"]
        assert plan["session_id"].startswith(f"{r['charge_point_id']}-")
        leaves = min(datetime.fromisoformat(r["departure_at"]), datetime.fromisoformat(summary["replay_end"]))
        assert (datetime.fromisoformat(plan["departure_at"]), plan["energy_needed_kwh"]) == (
            leaves,
            r["energy_requested_kwh"],
        )
        assert "ended_at" in r  # drained: every EV left before the replay ended
    assert summary["active_sessions_at_end"] == 0
    last = max(datetime.fromisoformat(r["departure_at"]) for r in results)
    assert datetime.fromisoformat(summary["replay_end"]) == min(last, datetime(2024, 6, 4, 22, tzinfo=UTC))
    assert summary["replay_end"] > "2024-06-03T22:00:00+00:00"  # past the day: someone stayed the night
    assert summary["setpoints_bound_by_plan"] > 0  # the engine held sessions for cheaper slots


async def test_a_loop_that_does_not_settle_is_logged_with_what_it_waits_on_and_counted(caplog):
    from pipeline.replay.settle import UNSETTLED, settle
    from pipeline.transport.memory import MemoryTransport

    t0 = datetime(2024, 6, 3, 15, tzinfo=UTC)
    missed: list[datetime] = []
    UNSETTLED.set(missed)
    clock = SimClock(t0)
    settled = await settle(clock, MemoryTransport(), 0.0, timeout_s=0.05, ready=lambda: False)
    assert settled is False and missed == [clock.now()]  # held where it gave up
    assert "(waiting on: a session end unreported, or a charger's limit change due)" in caplog.text
