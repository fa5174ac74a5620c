"""``pipeline run``, ``pipeline executor`` and ``pipeline engine``: the loop, or one half of it, until Ctrl-C.

``run`` puts the embedded engine, the executor, the signal gateway and Postgres wire in one process
(memory transport by default, or Kafka). In production they part: RisingWave computes the setpoints and
``pipeline executor`` serves the chargers beside it; on an edge box ``pipeline engine`` may run the embedded
engine on its own. Alone, each half needs a broker to meet the other half, so those two run on Kafka.
All three start through :func:`pipeline.app.loop.start_loop`.
"""

from __future__ import annotations

import asyncio

import click

from pipeline.app.site import PipelineConfig
from pipeline.cli.errors import one_line_errors
from pipeline.cli.options import log_level_option, pg_options, pg_overrides, setup_logging
from pipeline.cli.transport import transport_options

__all__ = ["engine", "executor", "run"]


def _load_site(config_path: str | None) -> PipelineConfig | None:
    if config_path is None:
        return None
    from pipeline.app.site import load_config

    return load_config(config_path)


_kafka_only = transport_options(("kafka",), "kafka", help="where the topics live (a shared broker)")
_config = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="site YAML: publish its topology on site.topology at start",
)


@click.command("run")
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
    from pipeline.app.loop import run_until_signalled, start_loop

    site = _load_site(config_path)
    settings = transport.settings(
        executor={"host": host, "port": port},
        engine={"tick_s": tick_s},
        gateway={"host": gateway_host, "port": gateway_port},
        pgwire=pg_overrides(pg, pg_host, pg_port),
    )
    built = transport.build(settings)
    setup_logging(log_level, settings)
    asyncio.run(
        run_until_signalled(
            lambda: start_loop(
                built,
                site=site,
                engine=settings.engine,
                executor=settings.executor,
                gateway=settings.gateway,
                pgwire=settings.pgwire,
                alerts=settings.alerts,
            )
        )
    )


@click.command("executor")
@_config
@click.option("--host", help="OCPP websocket bind address [setting executor.host: 127.0.0.1]")
@click.option("--port", type=int, help="OCPP websocket port, chargers on /ocpp/{id} [setting executor.port: 9000]")
@click.option(
    "--group",
    help="consumer group for the setpoint and topology topics (prefixed by --topic-prefix) "
    "[setting executor.group: executor]",
)
@_kafka_only
@log_level_option()
@one_line_errors
def executor(config_path, host, port, group, transport, log_level):
    """Serve chargers alone (beside RisingWave or `pipeline engine`), until Ctrl-C.

    At start it reads the compacted ocpp.setpoint.commands to its end, then reconciles every charger
    that connects to its latest setpoint.
    """
    from pipeline.app.loop import run_until_signalled, start_loop

    site = _load_site(config_path)
    settings = transport.settings(executor={"host": host, "port": port, "group": group})
    built = transport.build(settings)
    setup_logging(log_level, settings)
    asyncio.run(
        run_until_signalled(lambda: start_loop(built, site=site, executor=settings.executor, alerts=settings.alerts))
    )


@click.command("engine")
@_config
@click.option("--tick", "tick_s", type=float, help="re-evaluation period, s [setting engine.tick_s: 1]")
@_kafka_only
@log_level_option()
@one_line_errors
def engine(config_path, tick_s, transport, log_level):
    """Run the embedded engine alone over sql/ (its backend: engine.backend, default hybrid), until Ctrl-C.

    Its database is in memory, so every start rebuilds from the beginning of the input topics in a
    fresh consumer group before it publishes a setpoint.
    """
    from pipeline.app.loop import run_until_signalled, start_loop

    site = _load_site(config_path)
    settings = transport.settings(engine={"tick_s": tick_s})
    built = transport.build(settings)
    setup_logging(log_level, settings)
    asyncio.run(run_until_signalled(lambda: start_loop(built, site=site, engine=settings.engine)))
