"""The one place that wires the loop: engine, executor, signal gateway and Postgres wire on one transport.

``pipeline run`` starts all of them in one process; ``pipeline executor`` and ``pipeline engine`` start one
half each (beside RisingWave, or on an edge box); the replay, the benchmarks and the tests start what they
measure. Every caller goes through :func:`start_loop`, so start-up order and shutdown are written once:

1. the transport starts and the site file's topology is published on ``site.topology`` (an upsert topic:
   publishing it again is harmless);
2. the embedded engine and its read-only Postgres-wire port start (the engine reads its inputs to their
   end before its first evaluation);
3. the executor rebuilds from the topics (setpoints, acks, sessions) and then serves chargers;
4. the signal gateway opens.

If any step fails, everything started before it is stopped and the transport closed before the error
propagates. :meth:`Loop.stop` stops in the reverse order: gateway, executor, Postgres wire, engine (it
finishes its batch; cancelled after a timeout while a broker is away), transport. Each part gets a bounded
time to stop (:data:`PART_STOP_TIMEOUT_S`, the executor its outbox drain on top); one that takes longer
is left behind with an error naming it, so a SIGTERM always ends the process and the other parts stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from executor import Executor, ExecutorConfig
from pipeline.app.alerts import AlertSettings, AlertWatcher
from pipeline.app.gateway import Gateway, serve_gateway
from pipeline.app.settings import GatewaySettings, PgwireSettings
from pipeline.app.site import PipelineConfig
from pipeline.contracts.clock import Clock, SystemClock
from pipeline.contracts.errors import PipelineError
from pipeline.contracts.topics import SITE_TOPOLOGY
from pipeline.engine.config import EngineConfig
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.service import EngineService
from pipeline.pgwire.server import PgWireServer, start_pgwire
from pipeline.sqlmodel.objects import DEFAULT_SQL_DIR
from pipeline.transport.base import Transport, publish

__all__ = ["Loop", "StartError", "publish_topology", "run_until_signalled", "start_loop"]

log = logging.getLogger(__name__)

ENGINE_STOP_TIMEOUT_S = 10.0
PART_STOP_TIMEOUT_S = 30.0  # real seconds; a websocket server's close alone may take its close timeout (10 s)


class StartError(PipelineError):
    """A part of the loop could not start (a port taken, an address not of this machine); the message
    names the setting and the flag that choose it."""


def _bind_error(exc: OSError, ports: dict[int, str]) -> StartError:
    """``exc`` from binding a listener, as a :class:`StartError` naming the setting of the port it names."""
    text = str(exc)
    reason = exc.strerror or text
    for port, name in ports.items():
        if f", {port})" in text or f":{port}" in text:
            return StartError(f"{name}: cannot listen on port {port}: {reason}")
    return StartError(f"cannot listen: {text}")


async def publish_topology(transport: Transport, site: PipelineConfig | None) -> int:
    """Publish the site file's nodes on ``site.topology``, parents first; returns how many."""
    if site is None:
        return 0
    nodes = site.topology()
    for node in nodes:
        await publish(transport, SITE_TOPOLOGY, node)
    return len(nodes)


@dataclass
class Loop:
    """A running loop (or half of one); :meth:`stop` shuts down what :func:`start_loop` started."""

    transport: Transport
    engine: EngineService | None = None
    executor: Executor | None = None
    gateway: Gateway | None = None
    pgwire: PgWireServer | None = None
    alerts: AlertWatcher | None = None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack, repr=False)

    @property
    def port(self) -> int | None:
        """The executor's bound OCPP port, ``None`` without an executor."""
        return None if self.executor is None else self.executor.port

    @property
    def pg_port(self) -> int | None:
        """The bound Postgres-wire port, ``None`` when it is off."""
        return None if self.pgwire is None else self.pgwire.port

    @property
    def gateway_port(self) -> int | None:
        """The bound signal-gateway port, ``None`` when it is off."""
        return None if self.gateway is None else self.gateway.port

    async def stop(self) -> None:
        """Stop everything that was started, in reverse order (idempotent)."""
        await self._stack.aclose()


def _stop_within(stack: AsyncExitStack, part: str, stop: Callable[[], Awaitable[object]], extra_s: float = 0.0) -> None:
    """Stop ``part`` with the others (``stack``), giving up on it after ``PART_STOP_TIMEOUT_S + extra_s``."""
    timeout_s = PART_STOP_TIMEOUT_S + extra_s

    async def bounded() -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await stop()
        except TimeoutError:
            log.error("%s did not stop within %g s; left behind so that the rest can stop", part, timeout_s)

    stack.push_async_callback(bounded)


async def _stop_engine(service: EngineService, task: asyncio.Task[None]) -> None:
    service.stop()
    done, _ = await asyncio.wait({task}, timeout=ENGINE_STOP_TIMEOUT_S)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _with_site_security(config: ExecutorConfig, site: PipelineConfig | None) -> ExecutorConfig:
    """The executor config with the site file's charger passwords and TLS files, which it declares."""
    if site is None:
        return config
    return ExecutorConfig.model_validate({**config.model_dump(), **site.executor_security()})


async def start_loop(
    transport: Transport,
    *,
    site: PipelineConfig | None = None,
    clock: Clock | None = None,
    engine: EngineConfig | None = None,
    executor: ExecutorConfig | None = None,
    gateway: GatewaySettings | None = None,
    pgwire: PgwireSettings | None = None,
    alerts: AlertSettings | None = None,
) -> Loop:
    """Start the parts whose config is given (``None`` leaves a part out) on ``transport``.

    ``site`` (the site file) is published on ``site.topology`` and gives the executor its charger
    passwords and TLS files; ``pgwire`` needs ``engine`` (it serves the embedded engine's views);
    ``alerts`` follows ``pipeline.alerts`` (log lines, the ``pipeline_alerts_active`` gauge on the
    executor's ``/metrics``, an optional webhook: :mod:`pipeline.app.alerts`).
    Ports of 0 pick free ones (read them from the returned :class:`Loop`).

    Raises ``OSError`` when a port cannot be bound or the transport cannot be reached, ``TimeoutError``
    when the topics cannot be read to their end; whatever was started is stopped first.
    """
    clock = clock or SystemClock()
    loop = Loop(transport)
    stack = loop._stack
    try:
        await transport.start()
        _stop_within(stack, "the transport", transport.close)
        await publish_topology(transport, site)
        if engine is not None:
            sql_dir = engine.sql_dir if engine.sql_dir is not None else DEFAULT_SQL_DIR
            embedded = EmbeddedEngine(sql_dir, backend=engine.backend)
            stack.callback(embedded.close)
            loop.engine = EngineService(embedded, transport, clock, engine)
            if pgwire is not None and pgwire.enabled:
                password = pgwire.password.get_secret_value() if pgwire.password else None
                try:
                    loop.pgwire = start_pgwire(
                        embedded.con,
                        pgwire.host,
                        pgwire.port,
                        password,
                        relations={obj.name: obj.kind for obj in embedded.objects},
                        before_query=embedded.sync_readers,
                    )
                except OSError as exc:
                    raise _bind_error(exc, {pgwire.port: "pgwire.port (--pg-port)"}) from None
                _stop_within(stack, "the Postgres-wire server", loop.pgwire.stop)
            task = asyncio.create_task(loop.engine.run(), name="engine")
            engine_service = loop.engine
            _stop_within(stack, "the engine", lambda: _stop_engine(engine_service, task), ENGINE_STOP_TIMEOUT_S)
            log.info("embedded engine on the %s transport, consumer group %r", transport.name, loop.engine.group)
        if executor is not None:
            loop.executor = Executor(transport, _with_site_security(executor, site), clock)
            _stop_within(stack, "the executor", loop.executor.stop, executor.outbox_drain_s)
            try:
                await loop.executor.start()
            except OSError as exc:
                config = loop.executor.config
                raise _bind_error(
                    exc, {config.port: "executor.port (--port)", config.http_port: "executor.http_port"}
                ) from None
            log.info(
                "executor: OCPP 1.6J / 2.0.1 on %s/{charge_point_id}, %s transport, consumer group %r",
                loop.executor.url,
                transport.name,
                loop.executor.group,
            )
        if alerts is not None:
            registry = loop.executor.registry if loop.executor is not None else None
            loop.alerts = AlertWatcher(transport, alerts, registry)
            loop.alerts.start()
            _stop_within(stack, "the alert watcher", loop.alerts.stop)
        if gateway is not None:
            try:
                loop.gateway = await serve_gateway(transport, gateway.host, gateway.port)
            except OSError as exc:
                raise _bind_error(exc, {gateway.port: "gateway.port (--gateway-port)"}) from None
            _stop_within(stack, "the signal gateway", loop.gateway.close)
            log.info("signals on ws://%s:%s/topics/{topic}", gateway.host, loop.gateway_port)
    except BaseException:
        await stack.aclose()
        raise
    return loop


async def run_until_signalled(start: Callable[[], Awaitable[Loop]]) -> None:
    """``await start()``, then wait for SIGINT or SIGTERM and stop what it returned."""
    stop = asyncio.Event()
    running_loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        running_loop.add_signal_handler(sig, stop.set)
    running = await start()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await running.stop()
