"""The executor service: the OCPP central system wired to the pipeline's topics.

It is the only place that knows all the parts: the websocket server and its version modules, the sessions
it publishes, the desired setpoints it consumes, the ledger of what is in force, and one dispatcher per
connected charger. It talks to the engine only through topics (``pipeline.contracts.topics``, ``pipeline.transport``),
never by import.

Start-up is rebuild-then-serve: ``site.topology``, the executor's own ``ocpp.active.sessions`` and
``ocpp.setpoint.acks`` and the compacted ``ocpp.setpoint.commands`` are read to their end (docs/architecture.md,
"Executor": level-triggered desired state) before the first charger is accepted, so a restarted executor
sends what the engine last wanted, and knows which limits its chargers may still hold.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from executor.config import ExecutorConfig
from executor.desired import SetpointTable
from executor.dispatch import ChargerDispatcher, DispatchContext
from executor.ledger import Ledger
from executor.metrics import ExecutorStats
from executor.ocpp import v16, v201
from executor.ocpp.auth import Authenticator
from executor.ocpp.server import HttpEndpoints, OcppServer, server_tls_context
from executor.ocpp.station import EvChargingNeeds, MeterSample, Station, StationFactory, StationOptions
from executor.outbox import Outbox
from executor.sessions import Sessions
from executor.telemetry import METER_QUIET_S, METER_SWEEP_S, MeterGate
from executor.topology import Topology
from pipeline.contracts.clock import Clock, SystemClock
from pipeline.contracts.topics import (
    ACTIVE_SESSIONS,
    SETPOINT_ACKS,
    SETPOINT_COMMANDS,
    SITE_TOPOLOGY,
    ActiveSession,
    SetpointAck,
    decode,
    encode,
)
from pipeline.transport import Consumer, Record, Transport, decode_or_dead_letter

__all__ = ["Executor", "ExecutorConfig", "PROTOCOLS"]

log = logging.getLogger(__name__)


PROTOCOLS: dict[str, StationFactory] = {
    v201.SUBPROTOCOL: v201.CentralSystemV201,
    v16.SUBPROTOCOL: v16.CentralSystemV16,
}
"""Served OCPP versions by websocket subprotocol, most preferred first."""


class _Events:
    """:class:`executor.ocpp.station.StationEvents` for the version modules, delegating to the executor."""

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    def on_boot(self, charge_point_id: str, vendor: str, model: str) -> None:
        log.info("%s: booted (%s %s)", charge_point_id, vendor, model)
        dispatcher = self._x._dispatchers.get(charge_point_id)
        if dispatcher is not None:
            dispatcher.rebooted()

    async def on_start_transaction(
        self,
        charge_point_id: str,
        connector_id: int,
        meter_start_kwh: float | None,
        timestamp: datetime,
        transaction_id: str | None = None,
    ) -> str:
        tx = await self._x._sessions.start(
            charge_point_id, connector_id, meter_start_kwh, timestamp, transaction_id, received_at=self._x.clock.now()
        )
        self._x._ledger.transaction_started(charge_point_id, connector_id, tx)
        self._x._changed(charge_point_id)
        return tx

    def on_transaction_confirmed(self, charge_point_id: str, transaction_id: str) -> None:
        if self._x._sessions.confirm(charge_point_id, transaction_id) is not None:
            self._x._wake(charge_point_id)

    async def on_meter_values(
        self, charge_point_id: str, connector_id: int, transaction_id: str | None, samples: list[MeterSample]
    ) -> None:
        received_at = self._x.clock.now()  # the readings are timed by the executor's clock, not the charger's
        await self._x._sessions.meter(charge_point_id, connector_id, transaction_id, samples, received_at)

    async def on_stop_transaction(
        self,
        charge_point_id: str,
        transaction_id: str,
        timestamp: datetime,
        meter_stop_kwh: float | None = None,
        reason: str | None = None,
    ) -> None:
        connector_id = await self._x._sessions.stop(
            charge_point_id,
            transaction_id,
            timestamp,
            meter_stop_kwh=meter_stop_kwh,
            reason=reason,
            received_at=self._x.clock.now(),
        )
        if connector_id is not None:
            self._x._setpoints.clear_connector(charge_point_id, connector_id)
            self._x._ledger.transaction_ended(charge_point_id, connector_id)
            self._x._changed(charge_point_id)

    async def on_ev_charging_needs(self, charge_point_id: str, connector_id: int, needs: EvChargingNeeds) -> None:
        await self._x._sessions.needs(charge_point_id, connector_id, needs)

    def is_open_transaction(self, charge_point_id: str, transaction_id: str) -> bool:
        return self._x._sessions.find(charge_point_id, transaction_id) is not None


class Executor:
    """OCPP 1.6J and 2.0.1 central system that drives chargers towards the engine's setpoints.

    Args:
        transport: where topics live (memory or Kafka).
        config: listeners, dispatch policy, security and limits (:class:`executor.config.ExecutorConfig`,
            the one home of their defaults).
        clock: the pipeline clock (message times, acks, EV response lag, debounce, TTL); defaults to
            :class:`pipeline.contracts.clock.SystemClock`.

    Read :attr:`port` and :attr:`http_port` after :meth:`start` when the config asks for port 0.
    ``credentials=None`` is open mode (any identity may connect without credentials; for development,
    tests and replays), logged as a warning.

    Raises ``ssl.SSLError`` or ``OSError`` for unreadable TLS files or a malformed password hash
    (``ValueError``); :meth:`start` raises ``OSError`` if a port cannot be bound and ``TimeoutError`` if
    the topics cannot be read to their end.
    """

    def __init__(self, transport: Transport, config: ExecutorConfig | None = None, clock: Clock | None = None) -> None:
        config = config or ExecutorConfig()
        self.config = config
        self.transport = transport
        self.clock: Clock = clock or SystemClock()
        self.group = config.group
        self.registry = CollectorRegistry()
        self.stats = ExecutorStats(self.registry)
        self._topology = Topology()
        self._setpoints = SetpointTable(self.stats)
        self.meter_gate = MeterGate(
            config.meter_heartbeat_s,
            setpoint_at=self._setpoints.setpoint_at,
            monotonic=lambda: self.clock.now().timestamp(),  # the heartbeat and quiet time are clock time
        )
        self.outbox = Outbox(transport, limit=config.outbox_limit, stats=self.stats, gate=self.meter_gate)
        self._outbox_drain_s = config.outbox_drain_s
        self._sessions = Sessions(
            self.outbox, self._topology, config=config, limit_kw=lambda cp, c: self._ledger.ev_limit_kw(cp, c)
        )
        self._ledger = Ledger(
            self._topology,
            self._setpoints.node_limit_kw,
            self._setpoints.site_limit_kw,
            config.ev_response_lag_s,
            ev_phases=self._sessions.ev_phases,
        )
        self._ctx = DispatchContext(
            table=self._setpoints,
            ledger=self._ledger,
            topology=self._topology,
            active_transaction=self._sessions.active_transaction,
            publish_ack=self._publish_ack,
            changed=self._changed,
            clock=self.clock,
            stats=self.stats,
            config=config,
        )
        authenticator = None if config.credentials is None else Authenticator(config.credentials)
        context = None
        if config.tls_certfile is not None and config.tls_keyfile is not None:
            context = server_tls_context(
                str(config.tls_certfile),
                str(config.tls_keyfile),
                None if config.tls_client_cafile is None else str(config.tls_client_cafile),
            )
        options = StationOptions(
            call_timeout_s=config.call_timeout_s, heartbeat_interval_s=config.heartbeat_interval_s, clock=self.clock
        )
        self._server = OcppServer(
            config.host,
            config.port,
            PROTOCOLS,
            _Events(self),
            options,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            authenticator=authenticator,
            ssl_context=context,
            on_refused=self.stats.refused,
        )
        self._http = (
            HttpEndpoints(config.http_host, config.http_port, self._metrics, self.status) if config.metrics else None
        )
        self._dispatchers: dict[str, ChargerDispatcher] = {}
        self._epochs: dict[str, int] = {}
        self._connected_at: dict[str, datetime] = {}
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

    @property
    def url(self) -> str:
        """The base URL chargers append their identity to: ``ws[s]://host:port/ocpp``."""
        return f"{self._server.scheme}://{self.host}:{self.port}/ocpp"

    @property
    def http_port(self) -> int | None:
        """The status and metrics port (the bound one once started); ``None`` when there is no listener."""
        return None if self._http is None else self._http.port

    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of ``GET /status`` and ``GET /metrics``; ``None`` when they are not served."""
        return None if self._http is None else self._http.url

    async def start(self) -> None:
        """Rebuild state from the topics, then serve chargers and keep consuming; a second call is a no-op."""
        if self._started:
            return
        self._started = True
        await self._rebuild()
        await self._server.start()
        if self._http is not None:
            await self._http.start()
        self._consumer = await self.transport.consumer(
            [SITE_TOPOLOGY, SETPOINT_COMMANDS], self.group, from_beginning=True
        )
        self._spawn(self._consume(), "executor-consume")
        self._spawn(self._flush_meter(), "executor-meter-flush")

    async def stop(self) -> None:
        """Close every charger connection (1001), stop dispatchers and consumers; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._server.stop()
        if self._http is not None:
            await self._http.stop()
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
        self._publish_withheld(0.0)
        await self.outbox.close(self._outbox_drain_s)

    def held_setpoints(self) -> dict[tuple[str, int], float]:
        """``{(charge_point_id, connector_id): limit}``: the TxProfile limit each connected charger accepted
        on its current connection for its current transaction, in the unit it was sent (A per phase, or W)."""
        out: dict[tuple[str, int], float] = {}
        for cp, dispatcher in self._dispatchers.items():
            for connector, sent in dispatcher.installed_tx().items():
                if self._sessions.active_transaction(cp, connector, False) == sent.transaction_id:
                    out[(cp, connector)] = sent.limit
        return out

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

    def held_back(self) -> dict[tuple[str, int], str]:
        """Connectors whose increase is waiting, with why (``debounce``, ``lag: ...``, ``headroom: ...``)."""
        return {(cp, conn): why for cp, d in self._dispatchers.items() for conn, why in d.held_back.items()}

    def pending_until(self) -> datetime | None:
        """The earliest clock time at which a held-back increase may go (its debounce or EV lag ends)."""
        times = [d.release_at for d in self._dispatchers.values() if d.release_at is not None]
        return min(times) if times else None

    @property
    def idle(self) -> bool:
        """No call in flight, no dispatcher with anything due now and nothing waiting in the outbox (drivers
        wait for this to settle)."""
        now = self.clock.now()
        return self.stats.in_flight == 0 and self.outbox.empty and all(d.idle(now) for d in self._dispatchers.values())

    def busy_with(self) -> str:
        """What keeps :attr:`idle` false, in a few words for a log line: calls in flight, records in the
        outbox, and each dispatcher not idle (planning or calling, or what it sleeps towards, due now)."""
        now = self.clock.now()
        parts = [f"{self.stats.in_flight} calls in flight"] if self.stats.in_flight else []
        if not self.outbox.empty:
            parts.append("outbox not empty")
        parts += [f"{cp}: {d.busy_with(now)}" for cp, d in self._dispatchers.items() if not d.idle(now)]
        return "; ".join(parts) or "nothing"

    def bound_kw(self, level: str, group: str) -> float:
        """The ledger's sum over a node (``level='node'``) or site of what its connectors may draw, kW."""
        return self._ledger.group_sum_kw(level, group, self.clock.now())

    @property
    def stations(self) -> dict[str, Station]:
        """The live connection per charge point id."""
        return self._server.stations

    def status(self) -> dict:
        """What ``GET /status`` serves: ``{"at", "chargers": [...]}``, one entry per connected charger,
        sorted by id: ``charge_point_id``, ``protocol`` (websocket subprotocol), ``connected_since`` and
        ``last_message_at`` (clock time, ISO-8601 UTC, ``None`` before the first frame), ``rate_unit`` (``A``
        or ``W``, the unit its profiles use), and ``connectors``: each open transaction's ``connector_id``,
        ``transaction_id``, ``session_id``, the TxProfile ``limit`` it accepted (in ``rate_unit``, ``None``
        before one) and why an increase is ``held_back`` (``None`` when none is)."""
        held, held_back = self.held_setpoints(), self.held_back()
        open_tx: dict[str, list] = {}
        for tx in self._sessions.open_transactions():
            open_tx.setdefault(tx.charge_point_id, []).append(tx)
        chargers = []
        for cp, station in sorted(self.stations.items()):
            dispatcher = self._dispatchers.get(cp)
            last = getattr(station, "last_message_at", None)
            chargers.append(
                {
                    "charge_point_id": cp,
                    "protocol": station.subprotocol,
                    "connected_since": _iso(self._connected_at.get(cp)),
                    "last_message_at": _iso(last),
                    "rate_unit": dispatcher.unit if dispatcher is not None else None,
                    "connectors": [
                        {
                            "connector_id": tx.connector_id,
                            "transaction_id": tx.transaction_id,
                            "session_id": tx.session_id,
                            "limit": held.get((cp, tx.connector_id)),
                            "held_back": held_back.get((cp, tx.connector_id)),
                        }
                        for tx in sorted(open_tx.get(cp, []), key=lambda t: t.connector_id)
                    ],
                }
            )
        return {"at": _iso(self.clock.now()), "chargers": chargers}

    def _metrics(self) -> tuple[str, bytes]:
        self.stats.set_held_back(sum(len(d.held_back) for d in self._dispatchers.values()))
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    # -- start-up --------------------------------------------------------------------------------------

    async def _rebuild(self) -> None:
        """Read topology, open sessions, acks and setpoints to their end from the beginning.

        Uses the never-committed group ``{group}.rebuild`` so the read always starts at offset 0. Bad
        records are skipped here; the live consumer dead-letters them once.
        """
        topics = [SITE_TOPOLOGY, ACTIVE_SESSIONS, SETPOINT_ACKS, SETPOINT_COMMANDS]
        consumer = await self.transport.consumer(topics, f"{self.group}.rebuild", from_beginning=True)
        try:
            records = await consumer.read_to_end()
        finally:
            await consumer.close()
        by_topic: dict[str, list[Record]] = {}
        for record in records:
            by_topic.setdefault(record.topic, []).append(record)
        for record in by_topic.get(SITE_TOPOLOGY, []):
            if (value := self._decode_quietly(record)) is not False:
                self._topology.apply(record.key, value)
        open_sessions: dict[str, ActiveSession] = {}
        for record in by_topic.get(ACTIVE_SESSIONS, []):
            if (value := self._decode_quietly(record)) is not False and record.key is not None:
                if value is None:
                    open_sessions.pop(record.key, None)
                else:
                    open_sessions[record.key] = value
        for session in open_sessions.values():
            self._sessions.recover(session)
            self._ledger.transaction_started(session.charge_point_id, session.connector_id, session.transaction_id)
        for record in by_topic.get(SETPOINT_ACKS, []):
            if not (ack := self._decode_quietly(record)):
                continue
            if ack.status == "Accepted" and ack.action == "SetChargingProfile" and ack.charging_rate_unit:
                self._ctx.known_units[ack.charge_point_id] = ack.charging_rate_unit  # the newest one wins
            if ack.session_id in open_sessions:
                self._recover_ack(ack, open_sessions[ack.session_id])
        for record in by_topic.get(SETPOINT_COMMANDS, []):
            if (value := self._decode_quietly(record)) is not False:
                self._setpoints.apply(record.key, value, count=False)
        log.info(
            "rebuilt: %d records, %d open sessions, %d desired setpoints",
            len(records),
            len(open_sessions),
            len(self.desired_setpoints()),
        )

    def _recover_ack(self, ack: SetpointAck, session: ActiveSession) -> None:
        """What a previous run's TxProfile calls left in force (an Accepted limit, or a maybe on Timeout)."""
        if ack.purpose not in (None, "Tx") or ack.action != "SetChargingProfile" or ack.limit is None:
            return
        kw = (
            ack.limit / 1000.0
            if ack.charging_rate_unit == "W"
            else (ack.limit * (session.ev_phases or session.phases) * session.voltage_v / 1000.0)
        )
        if ack.status in ("Accepted", "Timeout"):
            self._ledger.recover_in_force(
                session.charge_point_id,
                session.connector_id,
                session.transaction_id,
                kw,
                certain=ack.status == "Accepted",
                answered_at=ack.answered_at or ack.sent_at,
                limit_a=None if ack.charging_rate_unit == "W" else ack.limit,
            )

    @staticmethod
    def _decode_quietly(record: Record):
        try:
            return decode(record.topic, record.key, record.value)
        except Exception as exc:
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
            now = self.clock.now()
            for record in batch:
                try:
                    ok, value = await decode_or_dead_letter(self.transport, record)
                    if not ok:
                        continue
                    if record.topic == SITE_TOPOLOGY:
                        self._topology.apply(record.key, value)
                        touched.update(self._dispatchers)  # limits and safe shares may have changed
                    elif (cp := self._setpoints.apply(record.key, value, now)) is not None:
                        touched.add(cp)
                    if record.topic == SETPOINT_COMMANDS and value is not None and record.key is not None:
                        self._sessions.note_binding(record.key, value.binding, now)  # for the session's history
                except Exception:
                    log.exception("could not handle %s@%s", record.topic, record.offset)
            for cp in touched:
                self._changed(cp)
            await self._consumer.commit()

    async def _flush_meter(self) -> None:
        """Publish withheld meter readings that no newer one followed (:mod:`executor.telemetry`)."""
        while True:
            await self.clock.sleep(METER_SWEEP_S)  # clock time: a replay's compressed day sweeps as often
            self._publish_withheld(METER_QUIET_S)

    def _publish_withheld(self, quiet_s: float) -> None:
        for session in self.meter_gate.due(quiet_s):
            self.outbox.put(ACTIVE_SESSIONS, session.session_id, encode(session))  # past the gate

    # -- chargers --------------------------------------------------------------------------------------

    def _wake(self, charge_point_id: str) -> None:
        dispatcher = self._dispatchers.get(charge_point_id)
        if dispatcher is not None:
            dispatcher.wake()

    def _changed(self, charge_point_id: str) -> None:
        """Something that bears on the charger's site moved: the charger re-plans, and so does every other
        dispatcher on that site with an increase held back.

        What one charger's change can alter in another's plan is only the ledger's verdict on a held-back
        increase (:func:`executor.planning.plan_charger` asks the ledger nothing else), so a dispatcher
        with nothing held back has nothing to re-plan; one that is busy re-plans after its call anyway.
        (Waking the whole site instead made every answer re-plan every charger of the site.)
        """
        self._wake(charge_point_id)
        info = self._topology.charger(charge_point_id)
        if info is not None:  # the site's chargers from topology's index, not a scan of every dispatcher
            for cp in self._topology.site_chargers(info.site_id):
                dispatcher = self._dispatchers.get(cp)
                if dispatcher is not None and dispatcher.held_back:
                    dispatcher.wake()

    async def _publish_ack(self, ack: SetpointAck) -> None:
        self.outbox.publish(SETPOINT_ACKS, ack)  # never waits for the transport

    def _on_connect(self, charge_point_id: str, station: Station) -> None:
        old = self._dispatchers.pop(charge_point_id, None)
        if old is not None:
            old.cancel()
        epoch = self._epochs.get(charge_point_id, 0) + 1
        self._epochs[charge_point_id] = epoch
        dispatcher = ChargerDispatcher(charge_point_id, station, epoch, self._ctx)
        self._dispatchers[charge_point_id] = dispatcher
        self._connected_at[charge_point_id] = self.clock.now()
        self._track(dispatcher.start())
        self.stats.set_connected(self._server.connected)

    def _on_disconnect(self, charge_point_id: str, station: Station) -> None:
        dispatcher = self._dispatchers.get(charge_point_id)
        if dispatcher is not None and dispatcher.station is station:
            del self._dispatchers[charge_point_id]
            dispatcher.cancel()
        if not self._server.is_connected(charge_point_id):
            self._connected_at.pop(charge_point_id, None)
        self.stats.set_connected(self._server.connected)

    def _spawn(self, coro, name: str) -> None:
        self._track(asyncio.create_task(coro, name=name))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()
