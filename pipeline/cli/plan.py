"""``pipeline plan set|clear|list``: when an EV leaves and what it needs by then, on ``session.plans``.

A plan names one session (``--session``) or one charger (``--charger``: whatever session runs there and
started before the departure). The allocation then charges it in the cheapest price slots that still meet
the need before it leaves, and at full speed when the need is at risk (docs/architecture.md, "Plans").
The EV's own figures (OCPP 2.0.1 NotifyEVChargingNeeds) outrank a plan; a plan outranks the site file's
defaults. ``set`` and ``clear`` go through ``pipeline run``'s gateway, or straight to Kafka with
``--transport kafka``; ``list`` reads the plans over Postgres wire, as ``pipeline status`` does.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from pipeline.cli.errors import one_line_errors
from pipeline.cli.options import dsn_option
from pipeline.cli.transport import echo_published, gateway_option, publish_direct, via_options, withdraw
from pipeline.contracts.topics import PLAN_SOURCES, SESSION_PLANS, plan_key

__all__ = ["Departure", "plan"]

_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class Departure(click.ParamType):
    """``HH:MM`` (the next such time of day, UTC) or an ISO-8601 timestamp (UTC without an offset)."""

    name = "HH:MM|ISO-8601"

    def __init__(self, now: Any = None) -> None:
        self._now = now or (lambda: datetime.now(UTC))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        match = _CLOCK.match(value.strip())
        if match:
            now = self._now()
            at = now.replace(hour=int(match[1]), minute=int(match[2]), second=0, microsecond=0)
            return at if at > now else at + timedelta(days=1)
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is neither HH:MM nor an ISO-8601 time (e.g. 07:30, 2024-06-04T07:30:00Z)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@click.group("plan")
def plan() -> None:
    """Set, clear and list fleet plans (departure and energy needed)."""


_charger = click.option("--charger", "charge_point_id", help="the charger whose sessions the plan is for")
_session = click.option("--session", "session_id", help="the one session the plan is for")


def _target(session_id: str | None, charge_point_id: str | None) -> None:
    if (session_id is None) == (charge_point_id is None):
        raise click.UsageError("give exactly one of --charger and --session")


@plan.command("set")
@_charger
@_session
@click.option("--depart", "departure_at", type=Departure(), required=True, help="07:30 (next, UTC) or ISO-8601")
@click.option("--energy-kwh", type=float, help="energy needed from the session's start, kWh")
@click.option("--target-soc", "target_soc_pct", type=float, help="state of charge wanted at departure, %")
@click.option(
    "--battery-kwh",
    type=float,
    help="the battery's usable capacity, kWh: needed with --target-soc; with --energy-kwh it times the taper",
)
@click.option("--source", type=click.Choice(PLAN_SOURCES), default="operator", show_default=True)
@click.option("--force", is_flag=True, help="send it even for a charger site.topology does not name")
@click.option("--dry-run", is_flag=True, help="print the record instead of publishing it")
@gateway_option
@via_options
@one_line_errors
def plan_set(
    charge_point_id,
    session_id,
    departure_at,
    energy_kwh,
    target_soc_pct,
    battery_kwh,
    source,
    force,
    dry_run,
    gateway,
    transport,
):
    """Set (or replace) the plan of a charger or a session."""
    from pipeline.app.gateway import send_record
    from pipeline.app.signals import session_plan
    from pipeline.contracts.topics import encode

    _target(session_id, charge_point_id)
    if (energy_kwh is None) == (target_soc_pct is None):
        raise click.UsageError("give exactly one of --energy-kwh and --target-soc")
    if target_soc_pct is not None and battery_kwh is None:
        raise click.UsageError("--target-soc needs --battery-kwh")
    topic, record = session_plan(
        session_id=session_id,
        charge_point_id=charge_point_id,
        departure_at=departure_at,
        energy_needed_kwh=energy_kwh,
        target_soc_pct=target_soc_pct,
        battery_kwh=battery_kwh,
        source=source,
    )
    if dry_run:
        click.echo(json.dumps({"topic": topic, "value": json.loads(encode(record))}))
        return
    need = f"{energy_kwh:g} kWh" if energy_kwh is not None else f"{target_soc_pct:g} % of {battery_kwh:g} kWh"
    what = f"plan {record.plan_id}: leaves {departure_at.astimezone(UTC).isoformat()} needing {need}"
    if transport.kind == "kafka":
        asyncio.run(publish_direct(transport, topic, record, check=not force))
        echo_published(what, transport)
        return
    asyncio.run(send_record(gateway, topic, encode(record), force=force))
    click.echo(f"set {what}")


@plan.command("clear")
@_charger
@_session
@gateway_option
@via_options
@one_line_errors
def plan_clear(charge_point_id, session_id, gateway, transport):
    """Withdraw the plan of a charger or a session (a tombstone on session.plans)."""
    _target(session_id, charge_point_id)
    key = plan_key(session_id, charge_point_id)
    withdraw(transport, gateway, SESSION_PLANS, key)
    click.echo(f"cleared plan {key}")


@plan.command("list")
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@one_line_errors
def plan_list(dsn, as_json):
    """The plans on session.plans, and the sessions each is in force for."""
    from pipeline.status.collect import fetch_rows

    rows = fetch_rows(
        dsn,
        {
            "plans": "SELECT plan_id, departure_at, energy_needed_kwh, target_soc_pct, battery_kwh, source, updated_at "
            "FROM session_plans ORDER BY plan_id",
            "used": "SELECT plan_id, session_id FROM session_plan_targets WHERE plan_id IS NOT NULL",
        },
    )
    used: dict[str, list[str]] = {}
    for row in rows["used"]:
        used.setdefault(row["plan_id"], []).append(row["session_id"])
    plans = [r | {"sessions": sorted(used.get(r["plan_id"], []))} for r in rows["plans"]]
    if as_json:
        click.echo(json.dumps(plans, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Plans ({len(plans)})", title_justify="left")
    for name in ("Plan", "Departs", "Needs", "Source", "Sessions"):
        table.add_column(name, overflow="fold")
    for p in plans:
        need = (
            f"{p['energy_needed_kwh']:g} kWh"
            if p["energy_needed_kwh"] is not None
            else f"{p['target_soc_pct']:g} % of {p['battery_kwh']:g} kWh"
        )
        table.add_row(p["plan_id"], p["departure_at"], need, p["source"], ", ".join(p["sessions"]) or "-")
    Console(highlight=False).print(table)
