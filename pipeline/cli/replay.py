"""``pipeline replay``: real days (ev2gym data) through the whole loop over real websockets."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from pathlib import Path

import click

from pipeline.cli.errors import one_line_errors
from pipeline.cli.options import log_level_option, pg_options, replay_pg_args, setup_logging

__all__ = ["replay"]


@click.command("replay")
@click.option(
    "--date",
    "--day",
    "day",
    type=click.DateTime(["%Y-%m-%d"]),
    default="2024-06-03",
    show_default=True,
    help="first local day; the data covers a week per season of 2024: from 15 Jan, 15 Apr, 3 Jun and 14 Oct",
)
@click.option("--days", default=1, show_default=True, type=click.IntRange(1, 7), help="days from --date")
@click.option("--speed", default=1440.0, show_default=True, type=click.FloatRange(min=1), help="time acceleration")
@click.option("--chargers", default=10, show_default=True, type=click.IntRange(1, 500))
@click.option("--charger-kw", default=22.0, show_default=True, type=click.FloatRange(min=3.7))
@click.option(
    "--breaker-kw",
    "--limit-kw",
    "limit_kw",
    default=100.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="main breaker, kW",
)
@click.option(
    "--breaker-a",
    type=click.FloatRange(min=1, max=4000),
    help="main breaker's rating per phase, A (limit_a on the site's topology; seconds over it per phase)",
)
@click.option("--households", default=12, show_default=True, type=click.IntRange(1, 25))
@click.option("--evs-per-charger", default=2.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--dr/--no-dr", default=True, show_default=True, help="a 20 % DR event 17:00-19:00 local each day")
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--drain/--no-drain",
    default=False,
    show_default=True,
    help="run on past the last day, with no new EVs, until every EV has left (at most a day)",
)
@click.option(
    "--plans/--no-plans",
    default=False,
    show_default=True,
    help="each driver publishes a session.plans record at plug-in: the EV's real departure (the replay's end "
    "at the latest) and energy need",
)
@click.option(
    "--prices-known/--day-ahead",
    default=False,
    show_default=True,
    help="publish every day's prices at the start (a yardstick: what the day-ahead horizon costs plans); "
    "default: each day's at 13:00 local the day before, as the EPEX SPOT auction publishes them",
)
@click.option(
    "--rotate-phases/--no-rotate-phases",
    default=True,
    show_default=True,
    help="wire the chargers RST, STR, TRS in turn, as installers spread 1-phase EVs; off: every one RST",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the summary here")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path),
    help="also write PNG plots and summary.md into this directory (created if missing)",
)
@pg_options
@log_level_option("warning")
@one_line_errors
def replay(
    day,
    days,
    speed,
    chargers,
    charger_kw,
    limit_kw,
    breaker_a,
    households,
    evs_per_charger,
    dr,
    seed,
    drain,
    plans,
    prices_known,
    rotate_phases,
    json_path,
    report_dir,
    pg,
    pg_host,
    pg_port,
    log_level,
):
    """Replay real days (ev2gym data) through the whole loop over real websockets."""
    import os

    from pipeline.replay.driver import ReplayOptions, run_replay
    from pipeline.replay.report import print_summary, replay_progress, write_report
    from pipeline.replay.series import ReplaySeries

    if report_dir is not None:  # before the replay, not after it
        if report_dir.exists() and not report_dir.is_dir():
            raise click.ClickException(f"--report {report_dir}: exists and is not a directory")
        try:
            report_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.ClickException(f"--report {report_dir}: {exc.strerror}") from None
        if not os.access(report_dir, os.W_OK):
            raise click.ClickException(f"--report {report_dir}: not writable")
    setup_logging(log_level, default="warning")
    pg_args = replay_pg_args(pg, pg_host, pg_port)
    options = ReplayOptions(
        pg_host=pg_args["pg_host"],
        pg_port=pg_args["pg_port"],
        day=day.date() if isinstance(day, datetime) else date.fromisoformat(day),
        days=days,
        speed=speed,
        chargers=chargers,
        charger_kw=charger_kw,
        limit_kw=limit_kw,
        breaker_a=breaker_a,
        households=households,
        evs_per_charger=evs_per_charger,
        dr_event=dr,
        seed=seed,
        plans=plans,
        drain=drain,
        rotate_phases=rotate_phases,
        prices_known=prices_known,
    )
    series = ReplaySeries()
    with replay_progress() as progress:
        summary = asyncio.run(run_replay(options, series=series, progress=progress, pg_password=pg_args["pg_password"]))
    print_summary(summary)
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            raise click.ClickException(f"--json {json_path}: {exc.strerror}") from None
    if report_dir is not None:
        written = write_report(summary, series, report_dir)
        click.echo(f"report: {', '.join(str(p) for p in written)}")
