"""``pipeline replay --report``: the series the driver collects, the plots and summary.md, the CLI's errors."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from rich.console import Console

from pipeline.cli.main import main
from pipeline.contracts.topics import DRSignal, PriceSignal, PriceTier
from pipeline.replay.plots import PLOTS, write_plots
from pipeline.replay.report import replay_progress, summary_markdown, write_report
from pipeline.replay.series import PriceStep, ReplaySeries, dr_limit_kw, session_matrix, step_values, tier_spans

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
T0 = datetime(2024, 6, 3, 22, 0, tzinfo=UTC)  # local midnight, Europe/Amsterdam
H = 3600.0


def test_a_step_function_holds_each_value_until_the_next_change_and_is_zero_before_the_first():
    changes = [(10.0, 5.0), (20.0, 0.0), (30.0, 7.5)]
    assert step_values(changes, [0, 10, 15, 20, 29.9, 30, 99]) == [0.0, 5.0, 5.0, 0.0, 0.0, 7.5, 7.5]
    assert step_values([], [1.0, 2.0]) == [0.0, 0.0]


def test_a_dr_signal_lowers_the_limit_by_its_percentage_or_to_its_limit_whichever_is_lower():
    kw = dict(site_id="s", dr_event_id="e", event_start=T0, event_end=T0 + timedelta(hours=2), signal_at=T0)
    assert dr_limit_kw(100.0, DRSignal(curtailment_pct=20, **kw)) == pytest.approx(80.0)
    assert dr_limit_kw(100.0, DRSignal(limit_kw=50, **kw)) == 50.0


def test_consecutive_hours_of_one_tier_merge_into_one_span_and_a_gap_splits_them():
    prices = [
        PriceStep(0, 1, 0.1, "OFF_PEAK"),
        PriceStep(2, 3, 0.3, "ON_PEAK"),
        PriceStep(1, 2, 0.1, "OFF_PEAK"),
        PriceStep(3, 4, 0.3, "ON_PEAK"),
        PriceStep(5, 6, 0.3, "ON_PEAK"),
    ]
    assert tier_spans(prices) == [(0, 2, "OFF_PEAK"), (2, 4, "ON_PEAK"), (5, 6, "ON_PEAK")]


def test_the_series_keeps_one_sample_per_instant_in_time_order_and_carries_the_setpoint_sum():
    s = ReplaySeries()
    s.record(10, 5.0, 0.0, 11.0)
    s.record(10, 6.0, 1.0)  # the clock held: the later state at the same instant wins
    s.record(8, 6.0, 2.0)  # a change booked a moment before the last sample is placed at it
    s.record(20, 6.0, 0.0, 0.0)
    assert s.load == [(10, 6.0, 2.0, 11.0), (20, 6.0, 0.0, 0.0)]


def test_sessions_are_the_connector_power_between_plug_ins_in_order_of_first_draw():
    s = ReplaySeries()
    s.record(0, 1.0, 0.0)
    s.on_power("CP1", 1, 9.0, 1)  # nobody plugged in: not a session
    s.plug("CP1", 1, "EV2 (CP1)")
    s.on_power("CP1", 1, 11.0, 5)
    s.on_power("CP1", 1, 0.0, 9)
    s.plug("CP2", 1, "EV1 (CP2)")
    s.on_power("CP2", 1, 7.0, 3)
    s.plug("CP3", 1, "EV3 (CP3)")
    s.on_power("CP3", 1, 0.0, 4)  # never drew power: left out of the plot
    labels, rows = session_matrix(s, [0, 3, 5, 9])
    assert labels == ["EV1 (CP2)", "EV2 (CP1)"]
    assert rows == [[0.0, 7.0, 7.0, 7.0], [0.0, 0.0, 11.0, 0.0]]


def synthetic_series(sessions: int = 3) -> ReplaySeries:
    """A day at one-minute samples: building load, ``sessions`` EVs at 7 kW, hourly prices, a DR event."""
    s = ReplaySeries()
    s.begin("site-x", T0, T0 + timedelta(days=1), 100.0)
    tiers = [PriceTier.OFF_PEAK, PriceTier.MID_PEAK, PriceTier.ON_PEAK, PriceTier.CRITICAL_PEAK]
    for h in range(24):
        s.add_price(
            PriceSignal(
                site_id="site-x",
                price_per_kwh=0.05 + 0.01 * (h % 7),
                price_tier=tiers[h % 4],
                valid_from=T0 + timedelta(hours=h),
                valid_to=T0 + timedelta(hours=h + 1),
            )
        )
    s.add_dr(
        DRSignal(
            site_id="site-x",
            dr_event_id="dr-1",
            curtailment_pct=20,
            event_start=T0 + timedelta(hours=17),
            event_end=T0 + timedelta(hours=19),
            signal_at=T0,
        )
    )
    start = T0.timestamp()
    for i in range(sessions):
        s.plug(f"CP{i}", 1, f"EV{i} (CP{i})")
    for m in range(24 * 60):
        t = start + 60 * m
        on = [i for i in range(sessions) if 8 * 60 + 20 * i <= m < 16 * 60 + 20 * i]
        for i in range(sessions):
            s.on_power(f"CP{i}", 1, 7.0 if i in on else 0.0, t)
        s.record(t, 20.0 + 10.0 * (m // 60 % 3), 7.0 * len(on), 7.4 * len(on))
    return s


@pytest.mark.parametrize("sessions", [0, 30])  # none drew power; too many for a legend (a few: the next test)
def test_every_plot_is_a_png_for_a_day_with_no_or_many_sessions(tmp_path, sessions):
    written = write_plots(synthetic_series(sessions), tmp_path)
    assert sorted(written) == sorted(PLOTS)
    for path in written.values():
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_summary_md_has_the_figures_as_a_table_the_dr_events_and_links_to_the_plots(tmp_path):
    summary = {
        "site_id": "site-x",
        "replay_start": T0.isoformat(),
        "replay_end": (T0 + timedelta(days=1)).isoformat(),
        "speed": 1440.0,
        "sessions": 20,
        "energy_delivered_kwh": 192.3,
        "breaker_limit_kw": 100.0,
        "seconds_over_limit": 0.0,
        "options": {
            "chargers": 10,
            "charger_kw": 22.0,
            "households": 12,
            "evs_per_charger": 2.0,
            "profile": "public",
            "seed": 7,
        },
    }
    text = summary_markdown(summary, synthetic_series(), {"site_load": ("site_load.png", "Site load")})
    assert "2024-06-04 00:00 CEST to 2024-06-05 00:00 CEST" in text
    assert "| figure | value |" in text and "| sessions | 20 |" in text and "| energy delivered, kWh | 192.3 |" in text
    assert "| dr-1 | 2024-06-04 17:00 | 2024-06-04 19:00 | 80 |" in text
    assert "[Site load](site_load.png)" in text and "![Site load](site_load.png)" in text
    written = write_report(summary, synthetic_series(), tmp_path / "new" / "dir")
    assert [p.name for p in written] == [*(f"{n}.png" for n in PLOTS), "summary.md"]
    assert all(f"({n}.png)" in written[-1].read_text() for n in PLOTS)
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in written[:-1])


def test_the_progress_bar_draws_nothing_where_output_is_not_a_terminal():
    out = io.StringIO()
    with replay_progress(Console(file=out, force_terminal=True)) as progress:  # colours forced, still no TTY
        progress(0.0, 86400.0, T0)
        progress(43200.0, 86400.0, T0 + timedelta(hours=12))
    assert out.getvalue() == ""


def test_replay_with_report_writes_the_plots_and_summary_md_and_keeps_json_and_stdout_clean(tmp_path):
    out, json_path = tmp_path / "report", tmp_path / "replay.json"
    result = CliRunner().invoke(
        main,
        [
            "replay",
            "--date",
            "2024-01-17",  # a winter weekday
            "--speed",
            "20000",
            "--chargers",
            "3",
            "--breaker-kw",
            "40",
            "--breaker-a",
            "58",
            "--households",
            "4",
            "--evs-per-charger",
            "2",
            "--seed",
            "3",
            "--report",
            str(out),
            "--json",
            str(json_path),
            "--pg-port",
            "0",  # not 4566: a replay or loop running beside the suite holds it
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(json_path.read_text())
    assert summary["sessions"] > 0 and summary["seconds_over_limit"] == 0
    assert summary["replay_start"] == "2024-01-16T23:00:00+00:00"  # local midnight, CET
    assert summary["breaker_limit_a"] == 58 and set(summary["seconds_over_limit_a"]) == {"L1", "L2", "L3"}
    for name in PLOTS:
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    md = (out / "summary.md").read_text()
    assert f"| sessions | {summary['sessions']} |" in md and "(site_load.png)" in md
    assert "\r" not in result.output and "\x1b[" not in result.output  # no progress bar redraws in the output
    assert result.output.rstrip().endswith(f"{out / 'summary.md'}")


def test_report_into_an_existing_file_is_one_line_and_exit_1_before_any_replay(tmp_path):
    existing = tmp_path / "taken"
    existing.write_text("not a directory")
    result = CliRunner().invoke(main, ["replay", "--report", str(existing)])
    assert result.exit_code == 1
    assert result.output == f"Error: --report {existing}: exists and is not a directory\n"
    result = CliRunner().invoke(main, ["replay", "--report", str(existing / "below")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_a_day_outside_the_shipped_weeks_is_one_line_and_exit_1():
    result = CliRunner().invoke(main, ["replay", "--date", "2024-03-01", "--no-pg"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the shipped data covers 2024-01-15..2024-01-21, ")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
