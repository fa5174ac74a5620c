"""Print a replay summary as a rich table (the JSON form is the summary dict itself)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

LABELS = {
    "sessions": "sessions",
    "evs_turned_away": "EVs turned away (no free charger)",
    "energy_requested_kwh": "energy requested, kWh",
    "energy_delivered_kwh": "energy delivered, kWh",
    "breaker_limit_kw": "breaker limit, kW",
    "peak_site_kw": "peak site load, kW",
    "peak_building_kw": "peak building load, kW",
    "seconds_over_limit": "seconds over limit",
    "profiles_sent": "SetChargingProfile calls (TxProfile)",
    "updates_collapsed": "updates collapsed",
    "setpoint_records": "setpoint records",
    "engine_evaluations": "engine evaluations",
    "chargers_holding_latest_setpoint": "chargers holding latest setpoint",
    "active_sessions_at_end": "active sessions at end",
    "sync_checks": "charger checks after each event",
    "sync_mismatches": "chargers not holding their latest setpoint",
    "sync_waiting": "chargers whose increase waits (break before make)",
    "wall_clock_s": "wall clock, s",
}


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"Replay {summary['replay_start']} -> {summary['replay_end']} at {summary['speed']:g}x")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, label in LABELS.items():
        if key in summary:
            table.add_row(label, f"{summary[key]:,}" if isinstance(summary[key], int) else f"{summary[key]}")
    console.print(table)
