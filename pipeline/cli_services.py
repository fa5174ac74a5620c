"""``pipeline executor`` and ``pipeline engine``: the click layer over :mod:`pipeline.services`.

Registered on the ``pipeline`` group by :mod:`pipeline.cli` (``main.add_command``). Both run on Kafka:
alone, each half of the loop needs a broker to meet the other half.
"""

from __future__ import annotations

import asyncio

import click

from pipeline.cli import _logging, log_level_option, one_line_errors
from pipeline.cli_transport import transport_options

__all__ = ["engine", "executor", "topics"]


def _load_cfg(config_path: str | None):
    if config_path is None:
        return None
    from pipeline.site_config import load_config

    return load_config(config_path)


_kafka_only = transport_options(("kafka",), "kafka", help="where the topics live (a shared broker)")
_config = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                       help="site YAML: publish its topology on site.topology at start")


@click.command("executor")
@_config
@click.option("--host", help="OCPP websocket bind address [setting executor.host: 127.0.0.1]")
@click.option("--port", type=int, help="OCPP websocket port, chargers on /ocpp/{id} [setting executor.port: 9000]")
@click.option("--group", help="consumer group for the setpoint and topology topics (prefixed by --topic-prefix) "
                              "[setting executor.group: executor]")
@_kafka_only
@log_level_option()
@one_line_errors
def executor(config_path, host, port, group, transport, log_level):
    """Serve chargers alone (beside RisingWave or `pipeline engine`), until Ctrl-C.

    At start it reads the compacted ocpp.setpoint.commands to its end, then reconciles every charger
    that connects to its latest setpoint.
    """
    from pipeline.services import run_until_signalled, start_executor

    cfg = _load_cfg(config_path)
    settings = transport.settings(executor={"host": host, "port": port, "group": group})
    built = transport.build(settings)
    _logging(log_level, settings)
    x = settings.executor
    asyncio.run(run_until_signalled(lambda: start_executor(built, cfg, host=x.host, port=x.port, group=x.group,
                                                           executor_options=x.executor_options())))


@click.command("engine")
@_config
@click.option("--tick", "tick_s", type=float, help="re-evaluation period, s [setting engine.tick_s: 1]")
@_kafka_only
@log_level_option()
@one_line_errors
def engine(config_path, tick_s, transport, log_level):
    """Run the embedded engine alone (DuckDB over sql/), until Ctrl-C.

    Its database is in memory, so every start rebuilds from the beginning of the input topics in a
    fresh consumer group before it publishes a setpoint.
    """
    from pipeline.services import run_until_signalled, start_engine

    cfg = _load_cfg(config_path)
    settings = transport.settings(engine={"tick_s": tick_s})
    built = transport.build(settings)
    _logging(log_level, settings)
    eng = settings.engine
    asyncio.run(run_until_signalled(lambda: start_engine(built, cfg, tick_s=eng.tick_s, sql_dir=eng.sql_dir,
                                                         engine_options=eng.service_options())))


@click.group("topics")
def topics() -> None:
    """The Kafka topics of pipeline.topics (and their .dlq), as the settings lay them out."""


@topics.command("create")
@_kafka_only
@one_line_errors
def topics_create(transport):
    """Create the missing topics: partitions and replication from the settings, upsert topics compacted.

    Every service creates them at start too; run this before `pipeline migrate apply` on RisingWave,
    whose sources need their topics to exist.
    """
    from pipeline.cli_transport import quiet_client_logs
    from pipeline.transport.kafka import KafkaTransport

    quiet_client_logs()
    built = transport.build()
    assert isinstance(built, KafkaTransport)
    created = asyncio.run(built.ensure_topics())
    total = len(built.all_topics())
    where = f"{built.settings.bootstrap_servers} (prefix {built.prefix!r})"
    click.echo(f"created {len(created)} of {total} topics on {where}" if created else f"all {total} topics exist on {where}")
