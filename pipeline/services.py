"""The pipeline's halves as separate services, for deployments where they do not share a process.

``pipeline run`` (:mod:`pipeline.runner`) puts the embedded engine and the executor in one process. In
production they part: RisingWave computes the setpoints and ``pipeline executor`` serves the chargers
beside it; on an edge box ``pipeline engine`` may run the embedded engine on its own. Both talk only
through the topics of a shared transport (Kafka), so each can restart without the other.

Each ``start_*`` returns a running service whose ``stop()`` shuts it down and closes the transport;
:func:`run_until_signalled` keeps one running until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.clock import Clock, SystemClock
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.service import EngineService
from pipeline.site_config import PipelineConfig
from pipeline.transport.base import Transport, publish

__all__ = ["EngineProcess", "ExecutorProcess", "publish_topology", "run_until_signalled", "start_engine",
           "start_executor"]

log = logging.getLogger(__name__)


async def publish_topology(transport: Transport, cfg: PipelineConfig | None) -> int:
    """Publish the site YAML's nodes on ``site.topology`` (an upsert topic: re-publishing is harmless)."""
    if cfg is None:
        return 0
    nodes = cfg.topology()
    for node in nodes:
        await publish(transport, "site.topology", node)
    return len(nodes)


@dataclass
class ExecutorProcess:
    """A running executor on its own; ``port`` is the bound OCPP port."""

    transport: Transport
    executor: object

    @property
    def port(self) -> int:
        return self.executor.port

    async def stop(self) -> None:
        await self.executor.stop()
        await self.transport.close()


async def start_executor(
    transport: Transport, cfg: PipelineConfig | None = None, *, host: str = "127.0.0.1", port: int = 9000,
    group: str = "executor", clock: Clock | None = None, executor_options: dict | None = None,
) -> ExecutorProcess:
    """Start the executor alone: publish ``cfg``'s topology if given, rebuild from the topics (the
    compacted setpoint topic read to its end) and serve chargers on ``ws://host:port/ocpp/{id}``. With a
    ``cfg`` its charger passwords and TLS files apply (as in ``pipeline run``); without one it runs open.
    ``executor_options`` are further :class:`executor.Executor` arguments (timeouts, dispatch policy).

    Raises ``OSError`` if the port cannot be bound or the transport cannot be reached.
    """
    from executor import Executor  # the orchestrator wires both packages; they share only topics

    await transport.start()
    await publish_topology(transport, cfg)
    security = cfg.executor_security() if cfg is not None else {}  # charger passwords and TLS from the site YAML
    executor = Executor(transport, clock or SystemClock(), host=host, port=port, group=group, **security,
                        **(executor_options or {}))
    try:
        await executor.start()
    except BaseException:
        await executor.stop()
        await transport.close()
        raise
    log.info("executor: OCPP on port %d, %s transport, consumer group %r", executor.port, transport.name, group)
    return ExecutorProcess(transport, executor)


@dataclass
class EngineProcess:
    """A running embedded engine on its own."""

    transport: Transport
    service: EngineService
    task: asyncio.Task

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let the engine finish its batch (cancel it after ``timeout_s``, e.g. while the broker is
        away and a commit waits for it), then close the transport."""
        self.service.stop()
        done, _ = await asyncio.wait({self.task}, timeout=timeout_s)
        if not done:
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.transport.close()


async def start_engine(
    transport: Transport, cfg: PipelineConfig | None = None, *, tick_s: float = 1.0, clock: Clock | None = None,
    engine_options: dict | None = None, sql_dir: str | Path | None = None,
) -> EngineProcess:
    """Start the embedded engine alone: publish ``cfg``'s topology if given, then consume the input topics
    from the beginning in a fresh consumer group (its DuckDB is in memory) and publish the sinks.
    ``engine_options`` go to :class:`EngineService` (``poll_s``, ``batch_max``...), ``sql_dir`` (default:
    the shipped ``sql/``) to the embedded engine."""
    await transport.start()
    await publish_topology(transport, cfg)
    embedded = EmbeddedEngine(sql_dir) if sql_dir is not None else EmbeddedEngine()
    service = EngineService(embedded, transport, clock or SystemClock(), **{"tick_s": tick_s, **(engine_options or {})})
    task = asyncio.create_task(service.run(), name="engine")
    log.info("embedded engine on the %s transport, consumer group %r", transport.name, service.group)
    return EngineProcess(transport, service, task)


async def run_until_signalled(start: Callable[[], Awaitable[object]]) -> None:
    """``await start()``, then wait for SIGINT or SIGTERM and ``stop()`` what it returned."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = await start()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await running.stop()
