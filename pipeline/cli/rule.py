"""``pipeline rule set|clear|list``: the operator's controls on ``control.rules``.

A rule caps, pauses, reserves headroom for, or overrides a site, node, charger or session, in force on
``[--from, --until)``; its id is ``{source}:{scope}:{id}``, so setting it again replaces it and ``clear``
withdraws it (a tombstone). ``set`` and ``clear`` go through ``pipeline run``'s gateway, or straight to
Kafka with ``--transport kafka``; ``list`` reads the rules over Postgres wire (the embedded engine's
port or RisingWave), as ``pipeline status`` does.
"""

from __future__ import annotations

import asyncio
import json

import click

from pipeline.cli.errors import one_line_errors
from pipeline.cli.options import ISO, dsn_option
from pipeline.cli.transport import (
    TransportChoice,
    echo_published,
    gateway_option,
    publish_direct,
    via_options,
    withdraw,
)
from pipeline.contracts.topics import CONTROL_RULES

__all__ = ["rule"]

SOURCES = ("operator", "partner", "utility", "safety")
SCOPES = ("site", "node", "charger", "session")
ACTIONS = ("cap", "pause", "reserve", "override")


@click.group("rule")
def rule() -> None:
    """Set, clear and list control rules (cap, pause, reserve, override)."""


_source = click.option(
    "--source",
    type=click.Choice(SOURCES),
    default="operator",
    show_default=True,
    help="whose rule: precedence safety > utility > partner > operator",
)
_scope = click.option("--scope", type=click.Choice(SCOPES), required=True)
_id = click.option("--id", "scope_id", required=True, help="the site, node, charger or session id")


@rule.command("set")
@_scope
@_id
@click.option("--action", type=click.Choice(ACTIONS), required=True)
@click.option("--limit-kw", type=float, help="cap, reserve and override: the limit in kW (pause takes none)")
@_source
@click.option("--from", "valid_from", type=ISO, help="in force from (default: now)")
@click.option("--until", "valid_to", type=ISO, help="in force until (default: until cleared)")
@click.option("--reason", help="why, for the operators who read it later")
@click.option("--force", is_flag=True, help="send it even for a site, node or charger site.topology does not name")
@click.option("--dry-run", is_flag=True, help="print the record instead of publishing it")
@gateway_option
@via_options
@one_line_errors
def rule_set(
    scope, scope_id, action, limit_kw, source, valid_from, valid_to, reason, force, dry_run, gateway, transport
):
    """Set (or replace) the rule of SOURCE on a scope."""
    from pipeline.app.gateway import send_record
    from pipeline.app.signals import control_rule
    from pipeline.contracts.topics import encode

    topic, record = control_rule(
        scope,
        scope_id,
        action,
        source=source,
        limit_kw=limit_kw,
        valid_from=valid_from,
        valid_to=valid_to,
        reason=reason,
    )
    if dry_run:
        click.echo(json.dumps({"topic": topic, "value": json.loads(encode(record))}))
        return
    what = f"{action}{f' {limit_kw:g} kW' if limit_kw is not None else ''} on {scope} {scope_id}"
    until = f" until {valid_to.isoformat()}" if valid_to is not None else ""
    if transport.kind == "kafka":
        asyncio.run(publish_direct(transport, topic, record, check=not force))
        echo_published(f"rule {record.rule_id}: {what}{until}", transport)
        return
    asyncio.run(send_record(gateway, topic, encode(record), force=force))
    click.echo(f"set rule {record.rule_id}: {what}{until}")


@rule.command("clear")
@_scope
@_id
@_source
@gateway_option
@via_options
@one_line_errors
def rule_clear(scope, scope_id, source, gateway, transport: TransportChoice):
    """Withdraw the rule of SOURCE on a scope (a tombstone on control.rules)."""
    from pipeline.app.signals import rule_id

    key = rule_id(source, scope, scope_id)
    withdraw(transport, gateway, CONTROL_RULES, key)
    click.echo(f"cleared rule {key}")


@rule.command("list")
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@one_line_errors
def rule_list(dsn, as_json):
    """The rules on control.rules and whether each is in force now."""
    from pipeline.status.collect import fetch_rows

    rows = fetch_rows(
        dsn,
        {
            "rules": "SELECT r.rule_id, r.source, r.scope, r.scope_id, r.action, r.limit_kw, r.valid_from, r.valid_to, "
            "r.reason, a.rule_id IS NOT NULL AS in_force FROM control_rules AS r "
            "LEFT JOIN active_rules AS a ON a.rule_id = r.rule_id ORDER BY r.scope, r.scope_id, r.source",
        },
    )["rules"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Rules ({len(rows)})", title_justify="left")
    for name in ("Rule", "Action", "Limit kW", "From", "Until", "In force", "Reason"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(
            r["rule_id"],
            r["action"],
            "-" if r["limit_kw"] is None else f"{r['limit_kw']:g}",
            r["valid_from"] or "-",
            r["valid_to"] or "-",
            "yes" if r["in_force"] else "no",
            r["reason"] or "",
        )
    Console(highlight=False).print(table)
