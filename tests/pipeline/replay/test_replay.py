"""A real-data replay through the whole loop, compressed hard so it runs in seconds."""

from __future__ import annotations

from datetime import date

from pipeline.replay.driver import ReplayOptions, run_replay
from pipeline.replay.series import ReplaySeries


async def test_a_real_day_replays_within_the_breaker_with_every_charger_in_sync():
    series, progress = ReplaySeries(), []
    summary = await run_replay(
        ReplayOptions(day=date(2024, 6, 4), speed=8000, chargers=6, limit_kw=70, evs_per_charger=2.5, seed=3),
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
    from datetime import UTC, datetime, timedelta

    from pipeline.replay.driver import SiteMeter

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
