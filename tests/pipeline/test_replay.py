"""A real-data replay through the whole loop, compressed hard so it runs in seconds."""

from __future__ import annotations

from datetime import date

from pipeline.replay.driver import ReplayOptions, run_replay


async def test_a_real_day_replays_within_the_breaker_with_every_charger_in_sync():
    summary = await run_replay(ReplayOptions(day=date(2024, 6, 4), speed=8000, chargers=6, limit_kw=70,
                                             evs_per_charger=2.5, seed=3))
    for key in ("sessions", "energy_delivered_kwh", "energy_requested_kwh", "peak_site_kw", "breaker_limit_kw",
                "seconds_over_limit", "profiles_sent", "updates_collapsed"):
        assert key in summary
    assert summary["sessions"] > 5
    assert 0 < summary["energy_delivered_kwh"] <= summary["energy_requested_kwh"] + 1e-6
    assert summary["seconds_over_limit"] == 0
    assert summary["peak_site_kw"] <= 70
    assert summary["profiles_sent"] > 0
    assert summary["sync_checks"] > 0 and summary["sync_mismatches"] == 0
    assert summary["chargers_holding_latest_setpoint"] == summary["active_sessions_at_end"]
