"""``pipeline param set|clear|list``: tunable parameters on ``pipeline.params``, changed without a migration.

The tariff multipliers (the share of its cap a flexible session may take in each price tier) and the
alert thresholds (deviation and breaker margins, the clock-skew threshold) are parameters, each with
bounds of its own (:data:`pipeline.contracts.topics.PARAMETERS`): a record on the upsert topic overrides a
default, a tombstone returns to it. ``set`` and ``clear`` go through ``pipeline run``'s gateway or straight
to Kafka; ``list`` reads the values in force (the ``pipeline_settings`` view) over Postgres wire.
Thresholds inside temporal filters (meter staleness) stay literals in ``sql/`` (docs/architecture.md,
"Parameters").
"""

from __future__ import annotations

import asyncio
import json

import click

from pipeline.cli.errors import one_line_errors
from pipeline.cli.options import dsn_option
from pipeline.cli.transport import echo_published, gateway_option, publish_direct, via_options, withdraw
from pipeline.contracts.topics import PARAMETERS, PARAMS

__all__ = ["param"]

_name = click.argument("name", type=click.Choice(sorted(PARAMETERS)))


@click.group("param")
def param() -> None:
    """Set, clear and list tunable parameters (tariff multipliers, alert thresholds)."""


@param.command("set")
@_name
@click.argument("value", type=float)
@click.option("--reason", help="why, for the operators who read it later")
@gateway_option
@via_options
@one_line_errors
def param_set(name, value, reason, gateway, transport):
    """Set parameter NAME to VALUE (within its bounds)."""
    from pipeline.app.gateway import send_record
    from pipeline.app.signals import parameter
    from pipeline.contracts.topics import encode

    topic, record = parameter(name, value, reason=reason)
    default = PARAMETERS[name][0]
    if transport.kind == "kafka":
        asyncio.run(publish_direct(transport, topic, record, check=False))
        echo_published(f"{name} = {value:g} (default {default:g})", transport)
        return
    asyncio.run(send_record(gateway, topic, encode(record)))
    click.echo(f"set {name} = {value:g} (default {default:g})")


@param.command("clear")
@_name
@gateway_option
@via_options
@one_line_errors
def param_clear(name, gateway, transport):
    """Return parameter NAME to its default."""
    withdraw(transport, gateway, PARAMS, name)
    click.echo(f"cleared {name}: back to its default {PARAMETERS[name][0]:g}")


@param.command("list")
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@one_line_errors
def param_list(dsn, as_json):
    """The parameters in force: their value, and whether it is the default or was set."""
    from pipeline.status.collect import fetch_rows

    rows = fetch_rows(
        dsn,
        {
            "params": "SELECT name, value, source, min_value, max_value FROM pipeline_settings ORDER BY name",
        },
    )["params"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        default = PARAMETERS.get(row["name"], (None,))[0]
        origin = "default" if row["source"] == "default" else f"set; default {default:g}"
        click.echo(f"{row['name']} = {row['value']:g} ({origin}; bounds {row['min_value']:g} .. {row['max_value']:g})")
