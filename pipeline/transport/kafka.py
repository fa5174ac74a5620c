"""Kafka transport (aiokafka): the production carrier of the topics, with the memory transport's contract.

Everything the engine and the executor rely on holds here as on :class:`~pipeline.transport.MemoryTransport`:

* **Keys** are the entity ids of :data:`pipeline.contracts.topics.TOPICS`; Kafka's default partitioner (murmur2 of
  the key, as in the Java client and RisingWave) keeps each entity on one partition, so its records stay
  in order.
* **Tombstones** are records with a null value. Upsert topics are created with ``cleanup.policy=compact``
  so the broker keeps the latest record per key (and drops tombstoned keys after ``delete.retention.ms``);
  append topics and every ``<topic>.dlq`` keep the default ``delete`` policy.
* **Producer**: idempotent (``enable_idempotence``, ``acks=all``); :meth:`KafkaTransport.send` returns once
  the record is acknowledged, and retries for ``retry_s`` while the brokers are unreachable.
* **Consumers** join a consumer group with auto-commit off. :meth:`KafkaConsumer.commit` commits the
  positions of the records returned so far, so callers commit only after a batch is handled and a crash
  replays rather than loses records. :meth:`KafkaTransport.consumer` returns after the group has assigned
  partitions, so ``end_offsets``, ``positions`` and ``read_to_end`` cover the subscribed topics at once.
* **Topic prefix**: every topic and consumer group on the broker is ``topic_prefix + name``; records carry
  the logical name, so several deployments share a cluster without the code knowing.

Broker restarts are survived: aiokafka reconnects consumers and rejoins their groups (records after the
last commit are delivered again), commits wait for the group coordinator, and sends are retried.

Timeouts use ``asyncio.timeout``, not ``asyncio.wait_for``: on Python 3.11 ``wait_for`` swallows a
cancellation that arrives as the awaited call completes, which left a cancelled consumer task running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay, wait_exponential

from pipeline.contracts.errors import PipelineError
from pipeline.contracts.topics import TOPICS, dlq_topic
from pipeline.transport.base import Consumer, Record, Transport
from pipeline.transport.base import TopicPartition as LogicalPartition
from pipeline.transport.config import KafkaSettings
from pipeline.transport.kafka_logs import outage_log

__all__ = ["KafkaConsumer", "KafkaTransport", "KafkaTransportError", "topic_configs"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_TOPIC_EXISTS = TopicAlreadyExistsError.errno


class KafkaTransportError(PipelineError):
    """The brokers could not be reached in time or refused a request (one-line message, no secrets)."""


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)) or (
        isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
    )


def topic_configs(topic: str, settings: KafkaSettings) -> dict[str, str]:
    """Broker configs for logical ``topic`` when this deployment creates it: upsert topics are compacted,
    append and dead-letter topics keep ``delete``."""
    spec = TOPICS.get(topic)
    configs = {"cleanup.policy": "compact" if spec is not None and spec.kind == "upsert" else "delete"}
    if settings.min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(settings.min_insync_replicas)
    return configs


class KafkaTransport(Transport):
    """Topics on a Kafka cluster, configured by :class:`pipeline.transport.config.KafkaSettings`.

    ``start()`` creates missing topics (every topic of :data:`pipeline.contracts.topics.TOPICS` and its ``.dlq``,
    with ``partitions`` and ``replication_factor`` from the settings) and starts the producer; ``send`` and
    ``consumer`` start the transport if needed. Raises :class:`KafkaTransportError` when the brokers stay
    unreachable for ``retry_s`` seconds or refuse topic creation.
    """

    name = "kafka"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.prefix = self.settings.topic_prefix
        self._producer: AIOKafkaProducer | None = None
        self._consumers: set[KafkaConsumer] = set()
        self._start_lock: asyncio.Lock | None = None
        self._outage = outage_log()  # aiokafka's connection errors: one line per outage, not thousands

    # -- names -----------------------------------------------------------------------------------------

    def physical(self, topic: str) -> str:
        """The broker's name for logical ``topic`` (the prefix prepended)."""
        return f"{self.prefix}{topic}"

    def logical(self, name: str) -> str:
        """The logical topic name of broker topic ``name``."""
        return name[len(self.prefix) :] if self.prefix and name.startswith(self.prefix) else name

    def group_id(self, group: str) -> str:
        """The broker's consumer group id for logical ``group``."""
        return f"{self.prefix}{group}"

    @staticmethod
    def all_topics() -> list[str]:
        """Every logical topic this transport creates: the contracts' topics and their dead-letter topics."""
        return [name for topic in TOPICS for name in (topic, dlq_topic(topic))]

    # -- lifecycle -------------------------------------------------------------------------------------

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` retried with backoff on retriable Kafka errors for ``retry_s`` seconds."""

        def warn(state: RetryCallState) -> None:  # the first one of an outage is logged, the rest summarised
            error = state.outcome.exception() if state.outcome is not None else None  # set before any sleep
            self._outage.failure(
                f"kafka at {self.settings.bootstrap_servers}: {what} failed "
                f"({type(error).__name__}); retrying for up to "
                f"{self.settings.retry_s:g}s"
            )

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retriable),
                stop=stop_after_delay(self.settings.retry_s),
                wait=wait_exponential(multiplier=0.1, max=2.0),
                reraise=True,
                before_sleep=warn,
            ):
                with attempt:
                    result = await call()
                    self._outage.reachable()
                    return result
        except KafkaError as exc:
            detail = "no broker answers" if isinstance(exc, KafkaConnectionError) else str(exc) or type(exc).__name__
            raise KafkaTransportError(
                f"kafka at {self.settings.bootstrap_servers}: {what} failed: {detail}".splitlines()[0]
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def start(self) -> None:
        """Create missing topics (if ``create_topics``) and start the idempotent producer; idempotent."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._producer is not None:
                return
            if self.settings.create_topics:
                await self.ensure_topics()

            async def start_producer() -> AIOKafkaProducer:
                producer = AIOKafkaProducer(
                    **self.settings.client_options(), acks="all", enable_idempotence=True, linger_ms=0
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                return producer

            self._producer = await self._retry("starting the producer", start_producer)
            log.info("kafka transport on %s (topic prefix %r)", self.settings.bootstrap_servers, self.prefix)

    async def close(self) -> None:
        """Close open consumers (committed offsets stay) and flush and stop the producer."""
        for consumer in list(self._consumers):
            await consumer.close()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(KafkaError, TimeoutError):
                async with asyncio.timeout(self.settings.request_timeout_s):
                    await producer.stop()

    async def ensure_topics(self) -> list[str]:
        """Create every missing topic of :meth:`all_topics`; returns the logical names created.

        Existing topics are left alone; an existing upsert topic that is not compacted is logged as an
        error (its tombstones and restart rebuild would still work, but it grows without bound).
        """

        async def create() -> list[str]:
            admin = AIOKafkaAdminClient(**self.settings.client_options())
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                wanted = {self.physical(t): t for t in self.all_topics()}
                missing = [name for name in wanted if name not in existing]
                if missing:
                    response = await admin.create_topics(
                        [
                            NewTopic(
                                name,
                                self.settings.partitions,
                                self.settings.replication_factor,
                                topic_configs=topic_configs(wanted[name], self.settings),
                            )
                            for name in missing
                        ]
                    )
                    for name, code, message, *_ in response.topic_errors:
                        if code not in (0, _TOPIC_EXISTS):
                            raise KafkaTransportError(f"kafka: cannot create topic {name}: {message} (error {code})")
                await self._check_compaction(
                    admin,
                    [
                        n
                        for n, t in wanted.items()
                        if n in existing and TOPICS.get(t) is not None and TOPICS[t].kind == "upsert"
                    ],
                )
                return [wanted[name] for name in missing]
            finally:
                await admin.close()

        created = await self._retry("creating topics", create)
        if created:
            log.info("created %d topics (prefix %r): %s", len(created), self.prefix, ", ".join(created))
        return created

    async def _check_compaction(self, admin: AIOKafkaAdminClient, names: list[str]) -> None:
        if not names:
            return
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
        for response in responses:
            for resource in response.resources:
                name, entries = resource[3], resource[4]
                policy = next((e[1] for e in entries if e[0] == "cleanup.policy"), "")
                if "compact" not in (policy or ""):
                    log.error("topic %s is an upsert topic but has cleanup.policy=%s, not compact", name, policy)

    # -- records ---------------------------------------------------------------------------------------

    async def send(
        self, topic: str, key: str | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Append one record and wait for ``acks=all``; ``value=None`` is a tombstone.

        Raises :class:`KafkaTransportError` if it cannot be delivered within ``retry_s`` seconds.
        """
        await self.start()
        assert self._producer is not None
        producer = self._producer
        name = self.physical(topic)
        raw_key = None if key is None else key.encode()
        raw_headers = [(h, bytes(v)) for h, v in headers]
        await self._retry(
            f"sending to {name}", lambda: producer.send_and_wait(name, value, key=raw_key, headers=raw_headers or None)
        )

    async def consumer(self, topics: Iterable[str], group: str, from_beginning: bool = True) -> KafkaConsumer:
        """A started consumer in consumer group ``group`` (prefixed), with its partitions assigned.

        It resumes from the group's committed offsets; a group with none starts at the beginning (or the
        end, with ``from_beginning=False``). Raises :class:`KafkaTransportError` if the group does not
        assign partitions within ``join_timeout_s``.
        """
        await self.start()
        consumer = KafkaConsumer(self, list(topics), group, from_beginning)
        await consumer.start()
        self._consumers.add(consumer)
        return consumer


class _Assignments(ConsumerRebalanceListener):
    """Notes each completed rebalance, so a new consumer can wait for its first assignment."""

    def __init__(self) -> None:
        self.assigned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.assigned.set()


class KafkaConsumer(Consumer):
    """One aiokafka consumer in a consumer group, speaking logical topic names (see :class:`Consumer`).

    Positions and end offsets are keyed ``(logical_topic, partition)``.
    """

    def __init__(self, transport: KafkaTransport, topics: list[str], group: str, from_beginning: bool) -> None:
        self._t = transport
        self.topics = topics
        self.group = group
        self._from_beginning = from_beginning
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[LogicalPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self.closed = False

    async def start(self) -> None:
        settings = self._t.settings
        listener = _Assignments()

        async def start_consumer() -> AIOKafkaConsumer:
            consumer = AIOKafkaConsumer(
                **settings.client_options(),
                group_id=self._t.group_id(self.group),
                enable_auto_commit=False,
                auto_offset_reset="earliest" if self._from_beginning else "latest",
                session_timeout_ms=int(settings.session_timeout_s * 1000),
                heartbeat_interval_ms=max(100, int(settings.session_timeout_s * 1000 / 3)),
            )
            consumer.subscribe([self._t.physical(t) for t in self.topics], listener=listener)
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            return consumer

        self._consumer = await self._t._retry(f"joining consumer group {self.group}", start_consumer)
        try:
            async with asyncio.timeout(settings.join_timeout_s):
                await listener.assigned.wait()
        except TimeoutError:
            await self.close()
            raise KafkaTransportError(
                f"kafka: consumer group {self._t.group_id(self.group)} assigned no partitions within "
                f"{settings.join_timeout_s:g}s"
            ) from None
        await self._refresh_positions(settings.request_timeout_s)

    def _record(self, raw) -> Record:
        return Record(
            topic=self._t.logical(raw.topic),
            key=None if raw.key is None else raw.key.decode("utf-8", errors="replace"),
            value=raw.value,
            offset=raw.offset,
            timestamp_ms=raw.timestamp,
            partition=raw.partition,
            headers=tuple((h, bytes(v or b"")) for h, v in (raw.headers or ())),
        )

    async def _refresh_positions(self, timeout_s: float) -> None:
        """Ask aiokafka for the next offset of each assigned partition (waits while one is being reset)."""
        assert self._consumer is not None
        positions: dict[LogicalPartition, int] = {}
        for tp in self._consumer.assignment():
            key = (self._t.logical(tp.topic), tp.partition)
            try:
                async with asyncio.timeout(max(timeout_s, 0.5)):
                    positions[key] = await self._consumer.position(tp)
            except (IllegalStateError, TimeoutError, KafkaError):
                if key in self._positions:  # revoked meanwhile, or the broker is away: keep what we knew
                    positions[key] = self._positions[key]
        self._positions = positions

    async def getmany(self, timeout_s: float = 1.0, max_records: int = 1000) -> list[Record]:
        if self.closed or self._consumer is None:
            raise RuntimeError("consumer is closed")
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out = [self._record(raw) for records in batches.values() for raw in records]
        if out:
            self._t._outage.reachable()
        await self._refresh_positions(timeout_s)
        return out

    async def commit(self) -> None:
        """Commit the positions of every record returned so far (a no-op when nothing moved).

        If the group rebalanced since those records were fetched the commit is refused; the records are
        then delivered again to whichever member owns the partition (at-least-once). While the group
        coordinator is unreachable this waits for it. After :meth:`close` it does nothing.
        """
        if self.closed or self._consumer is None:
            return
        assignment = self._consumer.assignment()
        offsets: dict[TopicPartition, int] = {}
        for tp in assignment:
            position = self._positions.get((self._t.logical(tp.topic), tp.partition))
            if position is not None and self._committed.get(tp) != position:
                offsets[tp] = position
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning(
                "group %s: commit refused (%s); records since the last commit will be redelivered",
                self.group,
                str(exc).splitlines()[0],
            )
            self._committed.clear()
            return
        self._committed.update(offsets)
        self._t._outage.reachable()

    async def end_offsets(self) -> dict[LogicalPartition, int]:
        consumer = self._consumer
        if consumer is None:
            return {}
        tps = list(consumer.assignment())
        if not tps:
            return {}
        ends = await self._t._retry("reading end offsets", lambda: consumer.end_offsets(tps))
        return {(self._t.logical(tp.topic), tp.partition): offset for tp, offset in ends.items()}

    def positions(self) -> dict[LogicalPartition, int]:
        return dict(self._positions)

    async def close(self) -> None:
        """Leave the group (committed offsets stay); idempotent."""
        if self.closed:
            return
        self.closed = True
        self._t._consumers.discard(self)
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, TimeoutError):
                async with asyncio.timeout(self._t.settings.request_timeout_s):
                    await self._consumer.stop()
