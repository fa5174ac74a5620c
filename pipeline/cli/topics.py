"""``pipeline topics create``: the Kafka topics of :mod:`pipeline.contracts.topics` and their ``.dlq``."""

from __future__ import annotations

import asyncio

import click

from pipeline.cli.errors import one_line_errors
from pipeline.cli.transport import quiet_client_logs, transport_options

__all__ = ["topics"]


@click.group("topics")
def topics() -> None:
    """The Kafka topics of pipeline.contracts.topics (and their .dlq), as the settings lay them out."""


@topics.command("create")
@transport_options(("kafka",), "kafka", help="where the topics live (a shared broker)")
@one_line_errors
def topics_create(transport):
    """Create the missing topics: partitions and replication from the settings, upsert topics compacted.

    Every service creates them at start too; run this before `pipeline migrate apply` on RisingWave,
    whose sources need their topics to exist.
    """
    from pipeline.transport.kafka import KafkaTransport

    quiet_client_logs()
    built = transport.build()
    assert isinstance(built, KafkaTransport)
    created = asyncio.run(built.ensure_topics())
    total = len(built.all_topics())
    where = f"{built.settings.bootstrap_servers} (prefix {built.prefix!r})"
    click.echo(
        f"created {len(created)} of {total} topics on {where}" if created else f"all {total} topics exist on {where}"
    )
