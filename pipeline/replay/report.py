"""How a replay is shown: its summary as a rich table or as Markdown with its plots (``--report``), and a
progress bar of simulated time while it runs. The JSON form is the summary dict itself.

matplotlib is imported only when a report is written, so a plain replay does not pay for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.replay.data import SITE_TZ
from pipeline.replay.series import ReplaySeries

LABELS = {
    "sessions": "sessions",
    "evs_turned_away": "EVs turned away (no free charger)",
    "energy_requested_kwh": "energy requested, kWh",
    "energy_delivered_kwh": "energy delivered, kWh",
    "energy_unmet_kwh": "energy unmet at departure (sum over sessions), kWh",
    "worst_session_unmet_kwh": "energy unmet at departure (worst session), kWh",
    "breaker_limit_kw": "breaker limit, kW",
    "breaker_limit_a": "breaker rating per phase, A",
    "peak_site_kw": "peak site load, kW",
    "peak_building_kw": "peak building load, kW",
    "seconds_over_limit": "seconds over the breaker limit",
    "seconds_over_limit_in_force": "seconds over the limit in force (DR included)",
    "seconds_over_limit_a": "seconds over the breaker's rating per phase",
    "peak_phase_a": "peak current per phase, A",
    "profiles_sent": "SetChargingProfile calls (TxProfile)",
    "updates_collapsed": "updates collapsed",
    "setpoint_records": "setpoint records",
    "engine_evaluations": "engine evaluations",
    "active_sessions_at_end": "at the end: sessions still open",
    "chargers_holding_latest_setpoint": "at the end: of those, chargers holding their latest setpoint",
    "sync_checks": "after each event: checks of chargers with a session",
    "sync_mismatches": "after each event: checks not holding the latest setpoint",
    "sync_waiting": "after each event: checks with an increase waiting (break before make)",
    "wall_clock_s": "wall clock, s",
}


def print_summary(summary: dict, console: Console | None = None) -> None:
    """Print the figures of :data:`LABELS` found in ``summary`` as a table."""
    console = console or Console()
    table = Table(title=f"Replay {summary['replay_start']} -> {summary['replay_end']} at {summary['speed']:g}x")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, label in LABELS.items():
        if summary.get(key) is not None:
            table.add_row(label, _value(summary[key]))
    console.print(table)


def _value(v) -> str:
    if isinstance(v, dict):  # per phase
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items())
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{v}"


def _local(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(SITE_TZ).strftime("%Y-%m-%d %H:%M %Z")


def summary_markdown(summary: dict, series: ReplaySeries, images: dict[str, tuple[str, str]]) -> str:
    """The summary as Markdown: what was replayed, the figures of :data:`LABELS` as a table, the DR events
    and the plots. ``images`` maps a plot's name to ``(relative path, title)``."""
    opts = summary.get("options", {})
    lines = [
        f"# Replay of {summary['site_id']}",
        "",
        f"{_local(summary['replay_start'])} to {_local(summary['replay_end'])}, simulated at "
        f"{summary['speed']:g}x real time.",
    ]
    if opts:
        lines += [
            "",
            f"{opts.get('chargers')} chargers of {opts.get('charger_kw')} kW behind a "
            f"{summary['breaker_limit_kw']:g} kW breaker, {opts.get('households')} households as the "
            f"building load, {opts.get('evs_per_charger')} EVs per charger a day "
            f"({opts.get('profile')} profile, seed {opts.get('seed')}).",
        ]
    lines += ["", "| figure | value |", "| --- | ---: |"]
    lines += [f"| {label} | {_value(summary[key])} |" for key, label in LABELS.items() if summary.get(key) is not None]
    if series.dr_windows:
        lines += ["", "## Demand response", "", "| event | from | to | site limit, kW |", "| --- | --- | --- | ---: |"]
        for w in series.dr_windows:
            start, end = (datetime.fromtimestamp(t, SITE_TZ).strftime("%Y-%m-%d %H:%M") for t in (w.start, w.end))
            lines.append(f"| {w.event_id} | {start} | {end} | {w.limit_kw:g} |")
    if images:
        lines += ["", "## Plots", ""]
        lines += [f"- [{title}]({path})" for path, title in images.values()]
        for path, title in images.values():
            lines += ["", f"### {title}", "", f"![{title}]({path})"]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(summary: dict, series: ReplaySeries, out_dir: Path) -> list[Path]:
    """Write the plots (``<name>.png``) and ``summary.md`` into ``out_dir`` (created if missing); returns the
    paths written, summary.md last."""
    from pipeline.replay.plots import PLOTS, write_plots

    images = write_plots(series, out_dir)
    md = out_dir / "summary.md"
    md.write_text(summary_markdown(summary, series, {name: (path.name, PLOTS[name]) for name, path in images.items()}))
    return [*images.values(), md]


@contextlib.contextmanager
def replay_progress(console: Console | None = None) -> Iterator[Callable[[float, float, datetime], None]]:
    """A progress bar of simulated time, on stderr; yields the ``progress(done_s, total_s, now)`` callback
    :func:`~pipeline.replay.driver.run_replay` takes.

    It is drawn only on an interactive terminal and is transient (gone when the replay ends), so piped
    output, ``--json`` files, test runs and CI logs are untouched."""
    console = console or Console(stderr=True)
    isatty = getattr(console.file, "isatty", None)
    shown = console.is_interactive and callable(isatty) and isatty()
    columns = (
        TextColumn("replay"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[at]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not shown) as bar:
        task = bar.add_task("replay", total=None, at="")

        def update(done_s: float, total_s: float, now: datetime) -> None:
            bar.update(task, completed=done_s, total=total_s, at=now.astimezone(SITE_TZ).strftime("%a %d %b %H:%M"))

        yield update
