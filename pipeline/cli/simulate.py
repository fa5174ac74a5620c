"""``pipeline simulate``: simulated OCPP charge points with EVs, against any central system."""

from __future__ import annotations

import asyncio
import json

import click

from pipeline.cli.errors import one_line_errors
from pipeline.cli.options import log_level_option, setup_logging

__all__ = ["simulate"]


class LagParam(click.ParamType):
    """An EV response lag in clock seconds: ``S`` (every EV) or ``LOW-HIGH`` (drawn per session)."""

    name = "seconds"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            parts = [float(x) for x in value.split("-", 1)]
        except ValueError:
            self.fail(f"{value!r} is not S or LOW-HIGH seconds", param, ctx)
        low, high = parts[0], parts[-1]
        if not 0 <= low <= high < 3600:
            self.fail(f"{value!r}: seconds must be 0 <= LOW <= HIGH < 3600", param, ctx)
        return low if len(parts) == 1 else (low, high)


@click.command("simulate")
@click.option("--url", required=True, help="central system base URL, e.g. ws://127.0.0.1:9000/ocpp")
@click.option("--chargers", default=1, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--rated-kw", default=22.0, show_default=True, type=click.FloatRange(min=1))
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(min=0.001), help="time acceleration")
@click.option("--prefix", default="CP", show_default=True, help="charge point id prefix (CP001, CP002, ...)")
@click.option("--evs-per-charger", default=2.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--seed", default=7, show_default=True)
@click.option("--duration", "duration_s", type=click.FloatRange(min=1), help="stop after this many clock seconds")
@click.option("--protocol", type=click.Choice(["ocpp1.6", "ocpp2.0.1"]), default="ocpp1.6", show_default=True)
@click.option(
    "--ev-lag",
    "ev_lag",
    type=LagParam(),
    default="2-11",
    show_default=True,
    help="clock seconds an EV takes to follow a new limit: S, or LOW-HIGH drawn per session (seeded by --seed)",
)
@click.option(
    "--password",
    envvar="PIPELINE_SIM_PASSWORD",
    help="HTTP Basic auth password of every charger (username: its id; env PIPELINE_SIM_PASSWORD)",
)
@log_level_option()
@one_line_errors
def simulate(
    url, chargers, rated_kw, speed, prefix, evs_per_charger, seed, duration_s, protocol, ev_lag, password, log_level
):
    """Simulated OCPP 1.6J or 2.0.1 charge points with EVs drawn from the ElaadNL distributions.

    Exits 1 with one line when no charger could connect (wrong URL, protocol or password)."""
    from pipeline.sim.run import simulate as run_simulation

    setup_logging(log_level)
    summary = asyncio.run(
        run_simulation(
            url,
            chargers,
            rated_kw=rated_kw,
            speed=speed,
            prefix=prefix,
            evs_per_charger=evs_per_charger,
            seed=seed,
            duration_s=duration_s,
            protocol=protocol,
            password=password,
            ev_response_s=ev_lag,
        )
    )
    click.echo(json.dumps(summary, indent=2))
