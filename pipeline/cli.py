"""The ``pipeline`` command: a thin click layer over plain functions.

Every command's work lives in a module that tests call directly; this file only parses options, prints
results and turns the project's errors into a one-line message with a non-zero exit (never a traceback).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import click
from pydantic import ValidationError

from pipeline.cli_pgwire import pg_options, pg_overrides, pg_service_args, replay_pg_args
from pipeline.cli_transport import TransportChoice, echo_published, publish_direct, transport_options
from pipeline.logs import FORMATS, LEVELS
from pipeline.migrate.cli import migrate
from pipeline.replay.data import DataError
from pipeline.settings import Settings, load_settings
from pipeline.site_config import ConfigError
from pipeline.sqlobjects import SqlError
from pipeline.topics import RecordError

EXPECTED = (ConfigError, SqlError, RecordError, DataError, ValidationError, OSError)


class IsoTime(click.ParamType):
    """An ISO-8601 timestamp; without an offset it is taken as UTC."""

    name = "ISO-8601"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 time (e.g. 2024-06-03T17:00:00Z)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


ISO = IsoTime()


def one_line_errors(func):
    """Turn expected failures into ``Error: <one line>`` and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EXPECTED as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise click.ClickException(message) from None
        except KeyboardInterrupt:
            raise SystemExit(130) from None

    return wrapper


def _logging(level: str | None, settings: Settings | None = None, default: str = "info") -> None:
    """Set up logging (:mod:`pipeline.logs`). Level: the command's ``--log-level``, else the group's, else
    ``log.level`` (env, settings file), else ``default``; format: the group's ``--log-format``, else
    ``log.format``. ``settings`` default to the environment and ``$PIPELINE_SETTINGS_FILE``."""
    from pipeline.logs import configure_logging

    ctx = click.get_current_context(silent=True)
    group = ctx.find_root().params if ctx is not None else {}
    log = (settings or load_settings()).log
    configure_logging(level or group.get("log_level") or log.level or default, group.get("log_format") or log.format)


def log_level_option(default: str = "info"):
    """The per-command ``--log-level`` (the group's ``pipeline --log-level`` works for every command)."""
    return click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False),
                        help=f"default: --log-level before the command, log.level setting, else {default}")


@click.group()
@click.version_option(package_name="ev-setpoint-pipeline")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False),
              help="for every command (env PIPELINE_LOG__LEVEL) [default: info; replay: warning]")
@click.option("--log-format", type=click.Choice(FORMATS, case_sensitive=False),
              help="text, or json: one JSON object a line on stderr (env PIPELINE_LOG__FORMAT) [default: text]")
def main(log_level, log_format) -> None:
    """Streaming-SQL setpoint pipeline for EV smart charging."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="site YAML")
@click.option("--host", help="OCPP websocket bind address [setting executor.host: 127.0.0.1]")
@click.option("--port", type=int, help="OCPP websocket port, chargers on /ocpp/{id} [setting executor.port: 9000]")
@click.option("--gateway-host", help="signal gateway bind address [setting gateway.host: 127.0.0.1]")
@click.option("--gateway-port", type=int, help="signal gateway port, ws /topics/{topic} [setting gateway.port: 9001]")
@click.option("--tick", "tick_s", type=float, help="engine re-evaluation period, s [setting engine.tick_s: 1]")
@pg_options
@transport_options()
@log_level_option()
@one_line_errors
def run(config_path, host, port, gateway_host, gateway_port, tick_s, pg, pg_host, pg_port, transport, log_level):
    """Serve chargers: embedded engine + executor on the memory (or Kafka) transport, until Ctrl-C."""
    from pipeline.runner import run_forever
    from pipeline.site_config import load_config

    cfg = load_config(config_path)
    settings = transport.settings(executor={"host": host, "port": port}, engine={"tick_s": tick_s},
                                  gateway={"host": gateway_host, "port": gateway_port},
                                  pgwire=pg_overrides(pg, pg_host, pg_port))
    built = transport.build(settings)
    _logging(log_level, settings)
    x, eng = settings.executor, settings.engine
    asyncio.run(run_forever(cfg, host=x.host, port=x.port, gateway_host=settings.gateway.host,
                            gateway_port=settings.gateway.port, tick_s=eng.tick_s, transport=built,
                            executor_options=x.executor_options(), engine_options=eng.service_options(),
                            sql_dir=eng.sql_dir, **pg_service_args(settings)))


@main.command()
@click.option("--url", required=True, help="central system base URL, e.g. ws://127.0.0.1:9000/ocpp")
@click.option("--chargers", default=1, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--rated-kw", default=22.0, show_default=True, type=click.FloatRange(min=1))
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(min=0.001), help="time acceleration")
@click.option("--prefix", default="CP", show_default=True, help="charge point id prefix (CP001, CP002, ...)")
@click.option("--evs-per-charger", default=2.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--seed", default=7, show_default=True)
@click.option("--duration", "duration_s", type=click.FloatRange(min=1), help="stop after this many clock seconds")
@log_level_option()
@one_line_errors
def simulate(url, chargers, rated_kw, speed, prefix, evs_per_charger, seed, duration_s, log_level):
    """Simulated OCPP 1.6J charge points with EVs drawn from the ElaadNL distributions."""
    from pipeline.simulate.run import simulate as run_simulation

    _logging(log_level)
    summary = asyncio.run(
        run_simulation(url, chargers, rated_kw=rated_kw, speed=speed, prefix=prefix,
                       evs_per_charger=evs_per_charger, seed=seed, duration_s=duration_s)
    )
    click.echo(json.dumps(summary, indent=2))


@main.group()
def signal() -> None:
    """Publish one utility or operator signal into a running pipeline."""


def _publish(topic: str, record, gateway: str, dry_run: bool, transport: TransportChoice | None = None) -> None:
    from pipeline.gateway import GatewayError, send_record
    from pipeline.topics import encode

    payload = encode(record)
    if dry_run:
        click.echo(json.dumps({"topic": topic, "value": json.loads(payload)}))
        return
    if transport is not None and transport.kind == "kafka":
        asyncio.run(publish_direct(transport, topic, record))
        echo_published(topic, transport)
        return
    try:
        asyncio.run(send_record(gateway, topic, payload))
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"published to {topic}")


_gateway = click.option("--gateway", default="ws://127.0.0.1:9001", show_default=True, help="pipeline run's gateway")
_dry = click.option("--dry-run", is_flag=True, help="print the record instead of publishing it")
_via = transport_options(("gateway", "kafka"), "gateway", help="through pipeline run's gateway, or straight to Kafka")


@signal.command("dr")
@click.option("--site", required=True)
@click.option("--curtailment-pct", type=float, help="cut the site limit by this percentage (0-100)")
@click.option("--limit-kw", type=float, help="or cap the site at this many kW")
@click.option("--start", type=ISO, help="event start (default now)")
@click.option("--end", type=ISO, help="event end (default start + duration)")
@click.option("--duration-min", type=float, help="event length in minutes (default 60)")
@click.option("--event-id", help="DR event id; re-send the same id to move or cancel an event")
@_gateway
@_via
@_dry
@one_line_errors
def signal_dr(site, curtailment_pct, limit_kw, start, end, duration_min, event_id, gateway, transport, dry_run):
    """A demand-response event on utility.dr.signals."""
    from pipeline.signals import dr_signal

    topic, record = dr_signal(site, curtailment_pct=curtailment_pct, limit_kw=limit_kw, start=start, end=end,
                              duration_min=duration_min, event_id=event_id)
    _publish(topic, record, gateway, dry_run, transport)


@signal.command("price")
@click.option("--site", required=True)
@click.option("--price", "price_per_kwh", required=True, type=float, help="price per kWh")
@click.option("--tier", required=True, type=click.Choice(["OFF_PEAK", "MID_PEAK", "ON_PEAK", "CRITICAL_PEAK"],
                                                          case_sensitive=False))
@click.option("--from", "valid_from", type=ISO, help="valid from (default now)")
@click.option("--to", "valid_to", type=ISO, help="valid to (default from + 1 h)")
@click.option("--currency", default="EUR", show_default=True)
@_gateway
@_via
@_dry
@one_line_errors
def signal_price(site, price_per_kwh, tier, valid_from, valid_to, currency, gateway, transport, dry_run):
    """A tariff price on tariff.price.signals."""
    from pipeline.signals import price_signal

    topic, record = price_signal(site, price_per_kwh=price_per_kwh, tier=tier, valid_from=valid_from,
                                 valid_to=valid_to, currency=currency)
    _publish(topic, record, gateway, dry_run, transport)


@signal.command("demand")
@click.option("--site", required=True)
@click.option("--demand-kw", "current_demand_kw", required=True, type=float, help="total site load, EVs included")
@click.option("--ev-kw", "ev_load_kw", default=0.0, show_default=True, type=float, help="EV part of the load")
@click.option("--limit-kw", "demand_limit_kw", type=float, help="contracted site limit")
@_gateway
@_via
@_dry
@one_line_errors
def signal_demand(site, current_demand_kw, ev_load_kw, demand_limit_kw, gateway, transport, dry_run):
    """A site meter reading on bems.site.demand."""
    from pipeline.signals import demand_signal

    topic, record = demand_signal(site, current_demand_kw=current_demand_kw, ev_load_kw=ev_load_kw,
                                  demand_limit_kw=demand_limit_kw)
    _publish(topic, record, gateway, dry_run, transport)


@main.command()
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="snapshot JSON: {topic: [records]} ('-' for stdin)")
@click.option("--now", type=ISO, help="evaluation time for NOW() (default: the current time)")
@one_line_errors
def allocate(input_path, now):
    """What-if: run the views over a snapshot and print the setpoint records as a JSON array."""
    from pipeline.allocate import allocate as run_allocate

    text = sys.stdin.read() if input_path == "-" else Path(input_path).read_text()
    try:
        snapshot = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{input_path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:  # a number past the int-string limit, nesting too deep
        raise click.ClickException(f"{input_path}: not JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    click.echo(json.dumps(run_allocate(snapshot, now), indent=2))


@main.command()
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), default="2024-06-03", show_default=True,
              help="first local day (data covers 2024-06-03 to 2024-06-09)")
@click.option("--days", default=1, show_default=True, type=click.IntRange(1, 7))
@click.option("--speed", default=1440.0, show_default=True, type=click.FloatRange(min=1), help="time acceleration")
@click.option("--chargers", default=10, show_default=True, type=click.IntRange(1, 500))
@click.option("--charger-kw", default=22.0, show_default=True, type=click.FloatRange(min=3.7))
@click.option("--limit-kw", default=100.0, show_default=True, type=click.FloatRange(min=1), help="main breaker, kW")
@click.option("--households", default=12, show_default=True, type=click.IntRange(1, 25))
@click.option("--evs-per-charger", default=2.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--dr/--no-dr", default=True, show_default=True, help="a 20 % DR event 17:00-19:00 local each day")
@click.option("--seed", default=7, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the summary here")
@click.option("--report", "report_dir", type=click.Path(path_type=Path),
              help="also write PNG plots and summary.md into this directory (created if missing)")
@pg_options
@log_level_option("warning")
@one_line_errors
def replay(day, days, speed, chargers, charger_kw, limit_kw, households, evs_per_charger, dr, seed, json_path,
           report_dir, pg, pg_host, pg_port, log_level):
    """Replay real days (ev2gym data) through the whole loop over real websockets."""
    import os

    from pipeline.replay.driver import ReplayOptions, run_replay
    from pipeline.replay.report import print_summary, replay_progress, write_report
    from pipeline.replay.series import ReplaySeries

    if report_dir is not None:  # before the replay, not after it
        if report_dir.exists() and not report_dir.is_dir():
            raise click.ClickException(f"--report {report_dir}: exists and is not a directory")
        report_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(report_dir, os.W_OK):
            raise click.ClickException(f"--report {report_dir}: not writable")
    _logging(log_level, default="warning")
    pg_args = replay_pg_args(pg, pg_host, pg_port)
    options = ReplayOptions(
        pg_host=pg_args["pg_host"], pg_port=pg_args["pg_port"],
        day=day.date() if isinstance(day, datetime) else date.fromisoformat(day), days=days, speed=speed,
        chargers=chargers, charger_kw=charger_kw, limit_kw=limit_kw, households=households,
        evs_per_charger=evs_per_charger, dr_event=dr, seed=seed,
    )
    series = ReplaySeries()
    with replay_progress() as progress:
        summary = asyncio.run(run_replay(options, series=series, progress=progress, pg_password=pg_args["pg_password"]))
    print_summary(summary)
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
    if report_dir is not None:
        written = write_report(summary, series, report_dir)
        click.echo(f"report: {', '.join(str(p) for p in written)}")


@main.command("charger-password")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input instead of a prompt")
@one_line_errors
def charger_password(password_stdin):
    """Hash a charger's Basic-auth password for ``password_hash`` in the site YAML (salted scrypt)."""
    from executor.ocpp.auth import hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        click.echo(hash_password(password))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


main.add_command(migrate)

from pipeline.cli_services import engine, executor, topics  # noqa: E402 - registers on main, defined above

main.add_command(executor)
main.add_command(engine)
main.add_command(topics)

from pipeline.cli_config import config  # noqa: E402 - imports one_line_errors from this module

main.add_command(config)

from pipeline.cli_status import status  # noqa: E402 - imports one_line_errors from this module

main.add_command(status)
