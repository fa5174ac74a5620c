"""``pipeline run``: the service itself, embedded engine plus executor on one transport (memory by
default, or Kafka with ``--transport kafka``).

Start-up order: the site topology is published first, then the engine and the executor start (the
executor reads topology and any setpoints before it serves chargers), then the signal gateway opens.
SIGINT/SIGTERM stop it cleanly: the gateway and the OCPP server close, the engine finishes its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

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

    @property
    def port(self) -> int:
        return self.executor.port

    @property
    def gateway_port(self) -> int | None:
        return None if self.gateway is None else next(iter(self.gateway.sockets)).getsockname()[1]

    async def stop(self) -> None:
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
) -> Service:
    """Start engine, executor and gateway (``gateway_port=None`` for none; port 0 picks a free port).

    The executor gets ``cfg``'s charger passwords and TLS files (:meth:`PipelineConfig.executor_security`),
    so a config that declares passwords is enforced; ``executor_options`` go to it as well (lags, TTL...).
    """
    from executor import Executor  # the orchestrator wires both packages; they share only topics

    clock = clock or SystemClock()
    transport = transport or MemoryTransport()
    await transport.start()
    for node in cfg.topology():
        await publish(transport, "site.topology", node)
    engine = EngineService(EmbeddedEngine(), transport, clock, tick_s=tick_s)
    engine_task = asyncio.create_task(engine.run(), name="engine")
    executor = Executor(transport, clock, host=host, port=port, **cfg.executor_security(), **(executor_options or {}))
    await executor.start()
    gateway = None if gateway_port is None else await serve_gateway(transport, gateway_host, gateway_port)
    service = Service(transport, engine, executor, gateway, engine_task)
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
