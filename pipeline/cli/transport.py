"""The ``--transport`` option family shared by ``pipeline run``, ``signal``, ``executor`` and ``engine``.

It lives apart from :mod:`pipeline.cli.main` so that module can decorate its commands with it without an
import cycle. Kafka settings come from :mod:`pipeline.app.settings` (``PIPELINE_KAFKA__*`` variables,
``--settings FILE``); ``--bootstrap-servers`` and ``--topic-prefix`` override them for one command.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pipeline.app import SETTINGS_FILE_ENV

if TYPE_CHECKING:  # the settings load pydantic-settings: only commands that read them pay for it
    from pydantic import BaseModel

    from pipeline.app.settings import EngineOverrides, ExecutorOverrides, GatewayOverrides, PgwireOverrides, Settings
    from pipeline.transport.base import Transport

__all__ = [
    "TransportChoice",
    "delete_direct",
    "echo_published",
    "gateway_option",
    "via_options",
    "withdraw",
    "publish_direct",
    "quiet_client_logs",
    "transport_options",
]

R = TypeVar("R")


@dataclass(frozen=True)
class TransportChoice:
    """What ``--transport`` and its companions asked for; nothing is loaded until :meth:`build`."""

    kind: str
    settings_path: str | None = None
    bootstrap_servers: str | None = None
    topic_prefix: str | None = None

    def settings(
        self,
        *,
        engine: EngineOverrides | None = None,
        executor: ExecutorOverrides | None = None,
        gateway: GatewayOverrides | None = None,
        pgwire: PgwireOverrides | None = None,
    ) -> Settings:
        """The deployment settings with the command-line overrides: ``--bootstrap-servers`` and
        ``--topic-prefix``, and the other sections' flags (``executor={"port": 9100}``; ``None`` values are
        flags not given and left out). Raises ``ConfigError``."""
        from pipeline.app.settings import KafkaOverrides, load_settings

        return load_settings(
            self.settings_path,
            kafka=KafkaOverrides(bootstrap_servers=self.bootstrap_servers, topic_prefix=self.topic_prefix),
            engine=engine,
            executor=executor,
            gateway=gateway,
            pgwire=pgwire,
        )

    def build(self, settings: Settings | None = None) -> Transport:
        """A new, unstarted transport of this kind (Kafka from ``settings``, default :meth:`settings`)."""
        if self.kind == "kafka":
            from pipeline.transport.kafka import KafkaTransport

            return KafkaTransport((settings or self.settings()).kafka)
        if self.kind == "memory":
            from pipeline.transport.memory import MemoryTransport

            return MemoryTransport()
        raise click.UsageError(f"--transport {self.kind} cannot carry this command")


def transport_options(
    choices: tuple[str, ...] = ("memory", "kafka"), default: str = "memory", help: str = ""
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Add ``--transport``, ``--settings``, ``--bootstrap-servers`` and ``--topic-prefix`` to a command,
    passed to it as one ``transport`` argument (a :class:`TransportChoice`)."""

    def decorate(func: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(func)
        def wrapper(
            *args: Any,
            transport_kind: str,
            settings_path: str | None,
            bootstrap_servers: str | None,
            topic_prefix: str | None,
            **kwargs: Any,
        ) -> R:
            choice = TransportChoice(transport_kind, settings_path, bootstrap_servers, topic_prefix)
            return func(*args, transport=choice, **kwargs)

        for option in reversed(
            [
                click.option(
                    "--transport",
                    "transport_kind",
                    type=click.Choice(choices),
                    default=default,
                    show_default=True,
                    help=help or "where the topics live",
                ),
                click.option(
                    "--settings",
                    "settings_path",
                    type=click.Path(dir_okay=False),
                    envvar=SETTINGS_FILE_ENV,
                    help=f"deployment settings YAML (kafka:, executor: ...); env {SETTINGS_FILE_ENV}",
                ),
                click.option(
                    "--bootstrap-servers", help="Kafka brokers host:port[,...] (env PIPELINE_KAFKA__BOOTSTRAP_SERVERS)"
                ),
                click.option(
                    "--topic-prefix", help="prefix of every topic and consumer group (env PIPELINE_KAFKA__TOPIC_PREFIX)"
                ),
            ]
        ):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def quiet_client_logs() -> None:
    """For one-shot commands: the Kafka client's own connection errors stay out of the one-line error."""
    for name in ("aiokafka", "pipeline.transport.kafka"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


async def publish_direct(choice: TransportChoice, topic: str, record: BaseModel, check: bool = True) -> None:
    """Publish one validated record straight onto the transport (``pipeline signal|rule --transport kafka``).
    With ``check``, ``site.topology`` is read first and a site, node or charger it does not name is refused
    (a :class:`~pipeline.contracts.errors.RecordError` naming the known ones)."""
    from pipeline.app.gateway import read_known_sites
    from pipeline.transport.base import publish

    quiet_client_logs()
    transport = choice.build()
    try:
        if check:
            (await read_known_sites(transport)).check_record(record)
        await publish(transport, topic, record)
    finally:
        await transport.close()


async def delete_direct(choice: TransportChoice, topic: str, key: str) -> None:
    """Withdraw ``key`` from an upsert topic (a tombstone) straight on the transport."""
    from pipeline.transport.base import publish_tombstone

    quiet_client_logs()
    transport = choice.build()
    try:
        await publish_tombstone(transport, topic, key)
    finally:
        await transport.close()


def echo_published(what: str, choice: TransportChoice) -> None:
    """``published <what>`` (e.g. ``dr-1 to utility.dr.signals``), saying where on Kafka."""
    where = "" if choice.kind != "kafka" else f" on kafka ({choice.settings().kafka.bootstrap_servers})"
    click.echo(f"published {what}{where}")


gateway_option = click.option(
    "--gateway", default="ws://127.0.0.1:9001", show_default=True, help="pipeline run's gateway"
)
"""``--gateway``: where ``pipeline run``'s signal gateway listens."""

via_options = transport_options(
    ("gateway", "kafka"), "gateway", help="through pipeline run's gateway, or straight to Kafka"
)
"""``--transport gateway|kafka`` and its companions, for commands that publish one record."""


def withdraw(transport: TransportChoice, gateway: str, topic: str, key: str) -> None:
    """A tombstone of ``key`` on the upsert ``topic``: straight to Kafka, or through the gateway."""
    from pipeline.app.gateway import delete_record

    if transport.kind == "kafka":
        asyncio.run(delete_direct(transport, topic, key))
    else:
        asyncio.run(delete_record(gateway, topic, key))
