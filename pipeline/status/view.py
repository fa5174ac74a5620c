"""How ``pipeline status`` shows a snapshot: rich tables, once or live, or JSON for machines.

The data comes from :mod:`pipeline.status.collect` as plain dicts; this module only lays them out. One screen
holds four tables: sites and their breakers (limit in force, building and fixed load, the EV headroom
left under the limit, what the sessions under them are set to and how much of that headroom it takes,
what they draw, what limits them), the DR event and tariff in force per site,
the sessions (setpoint, measured draw, binding constraint, state of charge), the sessions' plans (departure,
energy needed and delivered, laxity, whether the plan is met; only when a session has one) and the
chargers the executor has connected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipeline.status.collect import StatusError, snapshot

__all__ = ["render", "run_status"]


def _kw(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def _time(value: Any, with_date: bool = False) -> str:
    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def _used(setpoints: Any, headroom: Any) -> Text:
    """How much of a breaker's EV headroom the setpoints under it take, in percent (red above 100 %)."""
    if setpoints is None or headroom is None:
        return Text("-")
    if headroom <= 0:
        return Text("full" if setpoints <= 0 else "over", style="red")
    used = 100.0 * setpoints / headroom
    return Text(f"{used:.0f}%", style="red" if used > 100.5 else "yellow" if used > 90 else "green")


def _sites(snap: dict) -> Table:
    table = Table(title="Sites and breakers (kW)", title_justify="left", expand=False)
    for name in (
        "Site / breaker",
        "Limit",
        "Building",
        "Fixed",
        "Headroom",
        "Setpoints",
        "Used",
        "Measured",
        "EVs",
        "Limited by",
    ):
        _column(table, name, justify="left" if name in ("Site / breaker", "Limited by") else "right")
    for site in snap["sites"]:
        table.add_row(
            Text(site["site_id"], style="bold"),
            _kw(site["limit_kw"]),
            _kw(site["building_kw"]),
            _kw(site["fixed_kw"]),
            _kw(site["headroom_kw"]),
            _kw(site["setpoint_kw"]),
            _used(site["setpoint_kw"], site["headroom_kw"]),
            _kw(site["measured_kw"]),
            str(site["sessions"]),
            str(site["limited_by"] or "-"),
        )
        for node in site["nodes"]:
            table.add_row(
                "  " * int(node["depth"] or 1) + str(node["node_id"]),
                _kw(node["limit_kw"]),
                "",
                _kw(node["fixed_kw"]),
                _kw(node["headroom_kw"]),
                _kw(node["setpoint_kw"]),
                _used(node["setpoint_kw"], node["headroom_kw"]),
                _kw(node["measured_kw"]),
                str(node["sessions"]),
                str(node["limited_by"] or "-"),
            )
    if not snap["sites"]:
        table.add_row("(no sites: is site.topology published?)", *[""] * 9)
    return table


def _signals(snap: dict) -> Table:
    table = Table(title="Demand response and tariff", title_justify="left")
    for name in (
        "Site",
        "DR event",
        "Curtailment %",
        "DR limit kW",
        "DR ends",
        "Price tier",
        "Price / kWh",
        "Tier until",
    ):
        _column(table, name, justify="right" if "%" in name or "kW" in name else "left")
    for site in snap["sites"]:
        price = site["price"] or {}
        tier = price.get("price_tier")
        events = site.get("dr_events") or [None]
        for i, dr in enumerate(events):  # one row per DR event in force, each with its own id, limit and end
            event = dr or {}
            table.add_row(
                site["site_id"] if i == 0 else "",
                Text(event["dr_event_id"], style="bold red") if dr else Text("none", style="dim"),
                _pct(event.get("curtailment_pct")),
                _kw(event.get("limit_kw")),
                _time(event.get("ends_at")),
                *(
                    (
                        Text(tier or "-", style="red" if tier in ("ON_PEAK", "CRITICAL_PEAK") else ""),
                        "-"
                        if price.get("price_per_kwh") is None
                        else f"{price['price_per_kwh']:.4f} {price.get('currency') or ''}",
                        _time(price.get("valid_to")),
                    )
                    if i == 0
                    else ("", "", "")
                ),
            )
    return table


def _alerts(snap: dict) -> Table:
    alerts = snap.get("alerts") or []
    table = Table(title=f"Alerts ({len(alerts)})", title_justify="left")
    for name in ("Severity", "Kind", "Site", "Subject", "Value kW", "Limit kW", "Since", "Message"):
        _column(table, name, justify="right" if "kW" in name else "left")
    for alert in alerts:
        critical = alert["severity"] == "critical"
        table.add_row(
            Text(alert["severity"], style="bold red" if critical else "yellow"),
            alert["kind"],
            alert.get("site_id") or "-",
            alert["subject_id"],
            _kw(alert.get("value_kw")),
            _kw(alert.get("limit_kw")),
            _time(alert.get("since")),
            alert["message"],
        )
    if not alerts:
        table.add_row(Text("none", style="dim"), *[""] * 7)
    return table


def _sessions(snap: dict) -> Table:
    table = Table(title=f"Sessions ({len(snap['sessions'])})", title_justify="left")
    for name in (
        "Session",
        "Charger",
        "Node",
        "Set kW",
        "Set A",
        "Drawn kW",
        "Binding",
        "SoC %",
        "Tier",
        "Computed",
    ):
        _column(table, name, justify="right" if name[-1] in "WA%" else "left")
    for s in snap["sessions"]:
        binding = s["binding"]
        table.add_row(
            str(s["session_id"]),
            f"{s['charge_point_id']}/{s['connector_id']}",
            str(s["node_id"] or "-"),
            _kw(s["setpoint_kw"]),
            "-" if s["setpoint_a"] is None else f"{s['setpoint_a']:.1f}",
            _kw(s["measured_kw"]),
            Text(binding or "-", style="yellow" if binding in ("paused", "stale", "dr") else ""),
            _pct(s["soc_pct"]),
            str(s["price_tier"] or "-"),
            _time(s["computed_at"]),
        )
    return table


def _laxity(seconds: Any) -> str:
    """Laxity as ``+1h05`` / ``-0h20`` (hours and minutes; ``-`` when unknown)."""
    if seconds is None:
        return "-"
    sign, minutes = ("-" if seconds < 0 else "+"), round(abs(seconds) / 60)
    return f"{sign}{minutes // 60}h{minutes % 60:02d}"


PLAN_STYLES = {"met": "green", "on track": "", "at risk": "bold red", "unknown": "dim"}


def _plans(snap: dict) -> Table:
    planned = [s for s in snap["sessions"] if s.get("plan")]
    table = Table(title=f"Plans ({len(planned)}; kWh)", title_justify="left")
    for name in ("Session", "Departs", "Needed", "Delivered", "Remaining", "Laxity", "Plan", "From"):
        _column(table, name, justify="right" if name in ("Needed", "Delivered", "Remaining", "Laxity") else "left")
    for s in planned:
        p = s["plan"]
        table.add_row(
            str(s["session_id"]),
            _time(p.get("departure_at"), with_date=True),
            _kw(p.get("energy_needed_kwh")),
            _kw(p.get("delivered_kwh")),
            _kw(p.get("remaining_kwh")),
            _laxity(p.get("laxity_s")),
            Text(p["state"], style=PLAN_STYLES.get(p["state"], "")),
            f"{p.get('departure_from') or '-'} / {p.get('need_from') or '-'}",
        )
    return table


def _chargers(executor: dict) -> RenderableType:
    if not executor["reachable"]:
        return Text(f"Chargers: executor unreachable ({executor['error']})", style="red")
    table = Table(title=f"Chargers connected ({len(executor['chargers'])}) at {executor['url']}", title_justify="left")
    for name in (
        "Charger",
        "Protocol",
        "Unit",
        "Connected since",
        "Last message",
        "Transactions (connector: tx, limit)",
    ):
        _column(table, name)
    for c in executor["chargers"]:
        unit = c.get("rate_unit") or ""
        txs = (
            ", ".join(
                f"{t['connector_id']}: {t['transaction_id']}"
                + ("" if t.get("limit") is None else f" {t['limit']:g} {unit}")
                + ("" if not t.get("held_back") else f" (held: {t['held_back']})")
                for t in c.get("connectors", [])
            )
            or "-"
        )
        table.add_row(
            str(c["charge_point_id"]),
            str(c.get("protocol") or "-"),
            unit or "-",
            _time(c.get("connected_since"), with_date=True),
            _time(c.get("last_message_at")),
            txs,
        )
    return table


TIME_COLUMNS = ("DR ends", "Tier until", "Since", "Computed", "Last message", "Connected since", "Departs")


def _column(table: Table, name: str, justify: JustifyMethod = "left") -> None:
    """A column whose header wraps only between words and whose times never wrap (narrow terminals fold
    long cells instead: ``pipeline status`` stays readable at 100 columns)."""
    widest = max(len(word) for word in name.split())
    table.add_column(name, justify=justify, overflow="fold", min_width=max(widest, 8 if name in TIME_COLUMNS else 0))


def render(snap: dict) -> Group:
    """The snapshot of :func:`pipeline.status.collect.snapshot` as rich tables."""
    parts: list[RenderableType] = [
        Text(f"pipeline status: views at {snap['dsn']}, {_time(snap['at'], with_date=True)} UTC", style="bold"),
        _sites(snap),
        _alerts(snap),
        _signals(snap),
        _sessions(snap),
    ]
    if any(s.get("plan") for s in snap["sessions"]):
        parts.append(_plans(snap))
    if snap.get("executor") is not None:
        parts.append(_chargers(snap["executor"]))
    return Group(*parts)


def run_status(
    dsn: str,
    executor_url: str | None,
    *,
    once: bool,
    as_json: bool,
    interval_s: float = 2.0,
    password: str | None = None,
    console: Console | None = None,
    gather: Callable[[], dict] | None = None,
) -> None:
    """Print status: one snapshot (``once``) or refresh every ``interval_s`` s until Ctrl-C; as JSON (one
    document, or one line per refresh when live) with ``as_json``, else as tables (live: in place).

    Raises :class:`pipeline.status.collect.StatusError` when the first snapshot fails; later failures while live
    are shown (tables) or printed as ``{"error": ...}`` lines (JSON) and retried.
    """
    console = console or Console()
    gather = gather or (lambda: snapshot(dsn, executor_url, password=password))
    first = gather()
    if as_json:
        print(json.dumps(first, indent=2 if once else None), flush=True)
        while not once:
            time.sleep(interval_s)
            try:
                print(json.dumps(gather()), flush=True)
            except StatusError as exc:
                print(json.dumps({"error": str(exc)}), flush=True)
        return
    if once:
        console.print(render(first))
        return
    if not console.is_terminal:  # piped or logged: one snapshot after another, as `watch` would
        console.print(render(first))
        while True:
            time.sleep(interval_s)
            try:
                console.print(render(gather()))
            except StatusError as exc:
                console.print(Text(str(exc), style="red"))
    with Live(render(first), console=console, refresh_per_second=4, screen=False) as live:
        while True:
            time.sleep(interval_s)
            try:
                live.update(render(gather()))
            except StatusError as exc:
                live.update(Text(f"{exc} (retrying every {interval_s:g} s)", style="red"))
