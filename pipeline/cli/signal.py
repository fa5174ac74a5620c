"""``pipeline signal dr|price|demand``: publish one utility or operator signal into a running pipeline,
through ``pipeline run``'s gateway or straight to Kafka."""

from __future__ import annotations

import asyncio
import json

import click

from pipeline.cli.errors import one_line_errors
from pipeline.cli.options import ISO
from pipeline.cli.transport import TransportChoice, echo_published, gateway_option, publish_direct, via_options

__all__ = ["signal"]


@click.group("signal")
def signal() -> None:
    """Publish one utility or operator signal into a running pipeline."""


def _publish(
    topic: str,
    record,
    gateway: str,
    dry_run: bool,
    transport: TransportChoice | None = None,
    force: bool = False,
    what: str = "",
) -> None:
    """Publish ``record`` through the gateway or straight to Kafka, refusing a site that ``site.topology``
    does not name unless ``force``; ``what`` (e.g. the DR event id) is printed with the confirmation."""
    from pipeline.app.gateway import send_record
    from pipeline.contracts.topics import encode

    payload = encode(record)
    if dry_run:
        click.echo(json.dumps({"topic": topic, "value": json.loads(payload)}))
        return
    prefix = f"{what} " if what else ""
    if transport is not None and transport.kind == "kafka":
        asyncio.run(publish_direct(transport, topic, record, check=not force))
        echo_published(f"{prefix}to {topic}", transport)
        return
    asyncio.run(send_record(gateway, topic, payload, force=force))
    click.echo(f"published {prefix}to {topic}")


_dry = click.option("--dry-run", is_flag=True, help="print the record instead of publishing it")
_force = click.option("--force", is_flag=True, help="send it even for a site site.topology does not name (yet)")


@signal.command("dr")
@click.option("--site", required=True)
@click.option("--curtailment-pct", type=float, help="cut the site limit by this percentage (0-100)")
@click.option("--limit-kw", type=float, help="or cap the site at this many kW")
@click.option("--start", type=ISO, help="event start (default now)")
@click.option("--end", type=ISO, help="event end (default start + duration)")
@click.option("--duration-min", type=float, help="event length in minutes (default 60)")
@click.option("--event-id", help="DR event id (default: a new one, printed); re-send the same id to move an event")
@click.option("--cancel", "cancel_id", metavar="EVENT_ID", help="cancel this DR event now (no other event option)")
@gateway_option
@via_options
@_dry
@_force
@one_line_errors
def signal_dr(
    site, curtailment_pct, limit_kw, start, end, duration_min, event_id, cancel_id, gateway, transport, dry_run, force
):
    """A demand-response event on utility.dr.signals (or its cancellation)."""
    from pipeline.app.signals import dr_cancel, dr_signal

    if cancel_id is not None:
        given = [
            name
            for name, value in (
                ("--curtailment-pct", curtailment_pct),
                ("--limit-kw", limit_kw),
                ("--start", start),
                ("--end", end),
                ("--duration-min", duration_min),
                ("--event-id", event_id),
            )
            if value is not None
        ]
        if given:
            raise click.UsageError(f"--cancel takes no {', '.join(given)}")
        topic, record = dr_cancel(site, cancel_id)
        _publish(topic, record, gateway, dry_run, transport, force, what=f"cancellation of {cancel_id}")
        return
    topic, record = dr_signal(
        site,
        curtailment_pct=curtailment_pct,
        limit_kw=limit_kw,
        start=start,
        end=end,
        duration_min=duration_min,
        event_id=event_id,
    )
    _publish(topic, record, gateway, dry_run, transport, force, what=record.dr_event_id)


@signal.command("price")
@click.option("--site", required=True)
@click.option("--price", "price_per_kwh", required=True, type=float, help="price per kWh")
@click.option(
    "--tier",
    required=True,
    type=click.Choice(["OFF_PEAK", "MID_PEAK", "ON_PEAK", "CRITICAL_PEAK"], case_sensitive=False),
)
@click.option("--from", "valid_from", type=ISO, help="valid from (default now)")
@click.option("--to", "valid_to", type=ISO, help="valid to (default from + 1 h)")
@click.option("--currency", default="EUR", show_default=True)
@gateway_option
@via_options
@_dry
@_force
@one_line_errors
def signal_price(site, price_per_kwh, tier, valid_from, valid_to, currency, gateway, transport, dry_run, force):
    """A tariff price on tariff.price.signals."""
    from pipeline.app.signals import price_signal

    topic, record = price_signal(
        site, price_per_kwh=price_per_kwh, tier=tier, valid_from=valid_from, valid_to=valid_to, currency=currency
    )
    _publish(topic, record, gateway, dry_run, transport, force)


@signal.command("demand")
@click.option("--site", required=True)
@click.option("--demand-kw", "current_demand_kw", required=True, type=float, help="total site load, EVs included")
@click.option("--ev-kw", "ev_load_kw", default=0.0, show_default=True, type=float, help="EV part of the load")
@click.option("--limit-kw", "demand_limit_kw", type=float, help="contracted site limit")
@gateway_option
@via_options
@_dry
@_force
@one_line_errors
def signal_demand(site, current_demand_kw, ev_load_kw, demand_limit_kw, gateway, transport, dry_run, force):
    """A site meter reading on bems.site.demand."""
    from pipeline.app.signals import demand_signal

    topic, record = demand_signal(
        site, current_demand_kw=current_demand_kw, ev_load_kw=ev_load_kw, demand_limit_kw=demand_limit_kw
    )
    _publish(topic, record, gateway, dry_run, transport, force)
