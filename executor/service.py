"""The executor service: the OCPP central system wired to the pipeline's topics.

It is the only place that knows all the parts: the websocket server and its version modules, the sessions
it publishes, the desired setpoints it consumes, and one dispatcher per connected charger. It talks to the
engine only through topics (``pipeline.topics``, ``pipeline.transport``), never by import.

Start-up is rebuild-then-serve: ``site.topology``, the executor's own ``ocpp.active.sessions`` and the
compacted ``ocpp.setpoint.commands`` are read to their end (DESIGN.md, "Executor": level-triggered desired
state) before the first charger is accepted, so a restarted executor sends what the engine last wanted
rather than nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry

from pipeline.clock import Clock, SystemClock
from pipeline.topics import ActiveSession, RecordError, SetpointAck, decode
from pipeline.transport import Consumer, Record, Transport, decode_or_dead_letter, publish

from executor import v16
from executor.dispatch import ACKS_TOPIC, COMMANDS_TOPIC, ChargerDispatcher, SetpointTable
from executor.metrics import ExecutorStats
from executor.server import OcppServer
from executor.sessions import SESSIONS_TOPIC, Sessions, Topology
from executor.station import MeterSample, RateUnit, Station, StationFactory, StationOptions

__all__ = ["Executor", "PROTOCOLS"]

log = logging.getLogger(__name__)

TOPOLOGY_TOPIC = "site.topology"

PROTOCOLS: dict[str, StationFactory] = {v16.SUBPROTOCOL: v16.CentralSystemV16}
"""Served OCPP versions by websocket subprotocol, most preferred first (2.0.1 goes in front when added)."""


class _Events:
    """:class:`executor.station.StationEvents` for the version modules, delegating to the executor."""

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def on_boot(self, charge_point_id: str, vendor: str, model: str) -> None:
        log.info("%s: booted (%s %s)", charge_point_id, vendor, model)

    async def on_start_transaction(
        self, charge_point_id: str, connector_id: int, meter_start_kwh: float, timestamp: datetime
    ) -> int:
        return await self._x._sessions.start(charge_point_id, connector_id, meter_start_kwh, timestamp)

    def on_transaction_confirmed(self, charge_point_id: str, transaction_id: int) -> None:
        if self._x._sessions.confirm(charge_point_id, transaction_id) is not None:
            self._x._wake(charge_point_id)

    async def on_meter_values(
        self, charge_point_id: str, connector_id: int, transaction_id: int | None, samples: list[MeterSample]
    ) -> None:
        await self._x._sessions.meter(charge_point_id, connector_id, transaction_id, samples)

    async def on_stop_transaction(self, charge_point_id: str, transaction_id: int, timestamp: datetime) -> None:
        connector_id = await self._x._sessions.stop(charge_point_id, transaction_id)
        if connector_id is not None:
            self._x._setpoints.clear_connector(charge_point_id, connector_id)


class Executor:
    """OCPP 1.6J central system that drives chargers towards the engine's setpoints.

    Args:
        transport: where topics live (memory or Kafka).
        clock: the pipeline clock (``now()`` for message times and acks, ``sleep()`` for retry backoff);
            defaults to :class:`pipeline.clock.SystemClock`.
        host, port: where chargers connect (``ws://host:port/ocpp/{id}``); ``port=0`` picks a free port,
            readable as :attr:`port` after :meth:`start`.
        group: the consumer group for ``site.topology`` and ``ocpp.setpoint.commands``.
        call_timeout_s: seconds to wait for a charger's answer before reporting ``Timeout``.
        heartbeat_interval_s: ``interval`` returned in BootNotification.conf (OCPP 1.6 section 4.2).
        charging_rate_unit: ``"A"`` (per-phase amperes, ``setpoint_a``) or ``"W"`` (``setpoint_kw * 1000``).
        retry_backoff_s: seconds before retrying a Rejected / CallError / Timeout; the last value repeats.
        deadband_a: changes smaller than this (A; for W scaled by phases x voltage) are not sent.

    Raises ``ValueError`` for an unknown ``charging_rate_unit``; :meth:`start` raises ``OSError`` if the
    port cannot be bound and ``TimeoutError`` if the topics cannot be read to their end.
    """

    def __init__(
        self,
        transport: Transport,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 9000,
        *,
        group: str = "executor",
        call_timeout_s: float = 10.0,
        heartbeat_interval_s: int = 300,
        charging_rate_unit: RateUnit = "A",
        retry_backoff_s: Sequence[float] = (1, 2, 5, 10, 30),
        deadband_a: float = 0.1,
    ) -> None:
        if charging_rate_unit not in ("A", "W"):
            raise ValueError(f"charging_rate_unit must be 'A' or 'W', not {charging_rate_unit!r}")
        self.transport = transport
        self.clock: Clock = clock or SystemClock()
        self.group = group
        self.charging_rate_unit: RateUnit = charging_rate_unit
        self.deadband_a = deadband_a
        self.retry_backoff_s = tuple(retry_backoff_s)
        self.registry = CollectorRegistry()
        self.stats = ExecutorStats(self.registry)
        self._topology = Topology()
        self._sessions = Sessions(transport, self._topology)
        self._setpoints = SetpointTable(self.stats)
        options = StationOptions(call_timeout_s=call_timeout_s, heartbeat_interval_s=heartbeat_interval_s,
                                 clock=self.clock)
        self._server = OcppServer(
            host, port, PROTOCOLS, _Events(self), options,
            on_connect=self._on_connect, on_disconnect=self._on_disconnect,
        )
        self._dispatchers: dict[str, ChargerDispatcher] = {}
        self._epochs: dict[str, int] = {}
        self._consumer: Consumer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopped = False

    # -- public ----------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        """The listening port (the bound one once started)."""
        return self._server.port

    async def start(self) -> None:
        """Rebuild state from the topics, then serve chargers and keep consuming; a second call is a no-op."""
        if self._started:
            return
        self._started = True
        await self._rebuild()
        await self._server.start()
        self._consumer = await self.transport.consumer(
            [TOPOLOGY_TOPIC, COMMANDS_TOPIC], self.group, from_beginning=True)
        self._spawn(self._consume(), "executor-consume")

    async def stop(self) -> None:
        """Close every charger connection (1001), stop dispatchers and consumers; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._server.stop()
        for dispatcher in self._dispatchers.values():
            dispatcher.cancel()
        self._dispatchers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.close()
            self._consumer = None

    def held_setpoints(self) -> dict[tuple[str, int], float]:
        """``{(charge_point_id, connector_id): limit}``: the last limit each connector's charger accepted
        for its current transaction, in the unit it was sent (A per phase, or W)."""
        return {key: slot.held.limit for key, slot in self._setpoints.items() if slot.held is not None}

    def desired_setpoints(self) -> dict[tuple[str, int], float]:
        """``{(charge_point_id, connector_id): setpoint_a}`` of the latest command, for connectors whose
        open transaction is the one the command names."""
        out: dict[tuple[str, int], float] = {}
        for (cp, connector), slot in self._setpoints.items():
            command = slot.command
            if command is None:
                continue
            if self._sessions.active_transaction(cp, connector, confirmed_only=False) == command.transaction_id:
                out[(cp, connector)] = command.setpoint_a
        return out

    @property
    def stations(self) -> dict[str, Station]:
        """The live connection per charge point id."""
        return self._server.stations

    # -- start-up --------------------------------------------------------------------------------------

    async def _rebuild(self) -> None:
        """Read topology, open sessions and setpoints to their end from the beginning.

        Uses the never-committed group ``{group}.rebuild`` so the read always starts at offset 0. Bad
        records are skipped here; the live consumer dead-letters them once.
        """
        consumer = await self.transport.consumer(
            [TOPOLOGY_TOPIC, SESSIONS_TOPIC, COMMANDS_TOPIC], f"{self.group}.rebuild", from_beginning=True)
        try:
            records = await consumer.read_to_end()
        finally:
            await consumer.close()
        by_topic: dict[str, list[Record]] = {}
        for record in records:
            by_topic.setdefault(record.topic, []).append(record)
        for record in by_topic.get(TOPOLOGY_TOPIC, []):
            if (value := self._decode_quietly(record)) is not False:
                self._topology.apply(record.key, value)
        open_sessions: dict[str, ActiveSession] = {}
        for record in by_topic.get(SESSIONS_TOPIC, []):
            if (value := self._decode_quietly(record)) is not False and record.key is not None:
                if value is None:
                    open_sessions.pop(record.key, None)
                else:
                    open_sessions[record.key] = value
        for session in open_sessions.values():
            self._sessions.recover(session)
        for record in by_topic.get(COMMANDS_TOPIC, []):
            if (value := self._decode_quietly(record)) is not False:
                self._setpoints.apply(record.key, value, count=False)
        log.info("rebuilt: %d records, %d open sessions, %d desired setpoints",
                 len(records), len(open_sessions), len(self.desired_setpoints()))

    @staticmethod
    def _decode_quietly(record: Record):
        try:
            return decode(record.topic, record.key, record.value)
        except RecordError as exc:
            log.debug("rebuild skips %s@%s: %s", record.topic, record.offset, exc)
            return False

    # -- live consumption ------------------------------------------------------------------------------

    async def _consume(self) -> None:
        """Apply topology and setpoint batches; commit each batch after it is handled."""
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_s=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consuming setpoints failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if not batch:
                continue
            touched: set[str] = set()
            for record in batch:
                try:
                    ok, value = await decode_or_dead_letter(self.transport, record)
                    if not ok:
                        continue
                    if record.topic == TOPOLOGY_TOPIC:
                        self._topology.apply(record.key, value)
                        if record.key is not None:
                            touched.add(record.key)  # managed may have changed
                    elif (cp := self._setpoints.apply(record.key, value)) is not None:
                        touched.add(cp)
                except Exception:
                    log.exception("could not handle %s@%s", record.topic, record.offset)
            for cp in touched:
                self._wake(cp)
            await self._consumer.commit()

    # -- chargers --------------------------------------------------------------------------------------

    def _wake(self, charge_point_id: str) -> None:
        dispatcher = self._dispatchers.get(charge_point_id)
        if dispatcher is not None:
            dispatcher.wake()

    def _is_managed(self, charge_point_id: str) -> bool:
        info = self._topology.charger(charge_point_id)
        return info is None or info.managed

    async def _publish_ack(self, ack: SetpointAck) -> None:
        await publish(self.transport, ACKS_TOPIC, ack)

    def _on_connect(self, charge_point_id: str, station: Station) -> None:
        old = self._dispatchers.pop(charge_point_id, None)
        if old is not None:
            old.cancel()
        epoch = self._epochs.get(charge_point_id, 0) + 1
        self._epochs[charge_point_id] = epoch
        dispatcher = ChargerDispatcher(
            charge_point_id, station, epoch, self._setpoints,
            active_transaction=self._sessions.active_transaction, is_managed=self._is_managed,
            publish_ack=self._publish_ack, clock=self.clock, stats=self.stats,
            charging_rate_unit=self.charging_rate_unit, deadband_a=self.deadband_a,
            retry_backoff_s=self.retry_backoff_s,
        )
        self._dispatchers[charge_point_id] = dispatcher
        self._track(dispatcher.start())
        self.stats.set_connected(len(self._server.stations))

    def _on_disconnect(self, charge_point_id: str, station: Station) -> None:
        dispatcher = self._dispatchers.get(charge_point_id)
        if dispatcher is not None and dispatcher.station is station:
            del self._dispatchers[charge_point_id]
            dispatcher.cancel()
        self.stats.set_connected(len(self._server.stations))

    def _spawn(self, coro, name: str) -> None:
        self._track(asyncio.create_task(coro, name=name))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
