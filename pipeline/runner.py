"""``pipeline run``: the service itself, embedded engine plus executor on one transport (memory by
default, or Kafka with ``--transport kafka``).

Start-up order: the site topology is published first, then the engine (and its read-only Postgres-wire
port, :mod:`pipeline.pgwire`, when asked for) and the executor start (the executor reads topology and any
setpoints before it serves chargers), then the signal gateway opens. SIGINT/SIGTERM stop it cleanly: the
Postgres-wire port, the gateway and the OCPP server close, the engine finishes its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from pipeline.clock import Clock, SystemClock
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.service import EngineService
from pipeline.gateway import serve_gateway
from pipeline.site_config import PipelineConfig
from pipeline.transport.base import Transport, publish
from pipeline.transport.memory import MemoryTransport

log = logging.getLogger(__name__)


@dataclass
class Service:
    """A running pipeline; ``stop()`` shuts it down."""

    transport: Transport
    engine: EngineService
    executor: object
    gateway: object | None
    _engine_task: asyncio.Task
    pgwire: object | None = None

    @property
    def port(self) -> int:
        return self.executor.port

    @property
    def pg_port(self) -> int | None:
        """The bound Postgres-wire port, ``None`` when it is off."""
        return None if self.pgwire is None else self.pgwire.port

    @property
    def gateway_port(self) -> int | None:
        return None if self.gateway is None else next(iter(self.gateway.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self.pgwire is not None:
            await self.pgwire.stop()
        if self.gateway is not None:
            self.gateway.close()
            await self.gateway.wait_closed()
        await self.executor.stop()
        self.engine.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self._engine_task
        await self.transport.close()


async def start_service(
    cfg: PipelineConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 9000,
    gateway_host: str = "127.0.0.1",
    gateway_port: int | None = 9001,
    tick_s: float = 1.0,
    clock: Clock | None = None,
    transport: Transport | None = None,
    executor_options: dict | None = None,
    engine_options: dict | None = None,
    sql_dir: str | Path | None = None,
    pg_host: str = "127.0.0.1",
    pg_port: int | None = None,
    pg_password: str | None = None,
) -> Service:
    """Start engine, executor and gateway (``gateway_port=None`` for none; port 0 picks a free port).

    The executor gets ``cfg``'s charger passwords and TLS files (:meth:`PipelineConfig.executor_security`),
    so a config that declares passwords is enforced; ``executor_options`` go to it as well (lags, TTL...),
    ``engine_options`` to :class:`EngineService` (``poll_s``, ``batch_max``...) and ``sql_dir`` (default:
    the shipped ``sql/``) to the embedded engine. ``pg_port`` (``None``: off; 0: a free port) serves the
    engine's tables and views read-only on Postgres wire (``pg_password``: clients must give it).
    """
    from executor import Executor  # the orchestrator wires both packages; they share only topics

    clock = clock or SystemClock()
    transport = transport or MemoryTransport()
    await transport.start()
    for node in cfg.topology():
        await publish(transport, "site.topology", node)
    embedded = EmbeddedEngine(sql_dir) if sql_dir is not None else EmbeddedEngine()
    engine = EngineService(embedded, transport, clock, **{"tick_s": tick_s, **(engine_options or {})})
    pgwire = None
    if pg_port is not None:
        from pipeline.pgwire import start_pgwire

        try:
            pgwire = start_pgwire(embedded.con, pg_host, pg_port, pg_password)
        except BaseException:
            await transport.close()
            raise
    engine_task = asyncio.create_task(engine.run(), name="engine")
    executor = Executor(transport, clock, host=host, port=port, **cfg.executor_security(), **(executor_options or {}))
    await executor.start()
    gateway = None if gateway_port is None else await serve_gateway(transport, gateway_host, gateway_port)
    service = Service(transport, engine, executor, gateway, engine_task, pgwire)
    log.info("OCPP 1.6J / 2.0.1 on %s/{charge_point_id}; signals on ws://%s:%s/topics/{topic}",
             executor.url, gateway_host, service.gateway_port)
    return service


async def run_forever(cfg: PipelineConfig, **kwargs) -> None:
    """Run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = await start_service(cfg, **kwargs)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await service.stop()
