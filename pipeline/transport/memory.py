"""In-process transport: the embedded default, with the same topics, keys, JSON and tombstones as Kafka.

Each topic is one partition held as a list; consumer groups keep committed offsets, so a consumer that
is closed and reopened in the same group resumes where it committed, as on Kafka. Nothing is compacted
(a replay-sized day fits easily in memory); ``lag()`` and ``idle_for()`` let a replay wait for the loop
to settle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

from pipeline.transport.base import Consumer, Record, TopicPartition, Transport


class MemoryTransport(Transport):
    name = "memory"

    def __init__(self) -> None:
        self._logs: dict[str, list[Record]] = {}
        self._committed: dict[tuple[str, str], int] = {}
        self._changed = asyncio.Event()
        self._last_send = time.monotonic()
        self._consumers: list[_MemoryConsumer] = []

    def log(self, topic: str) -> list[Record]:
        """Every record of ``topic`` so far (a copy)."""
        return list(self._logs.get(topic, ()))

    def latest(self, topic: str) -> dict[str, bytes]:
        """The compacted view of an upsert topic: latest value per key, tombstoned keys removed. A record
        without a key has no place in it (Kafka refuses keyless records on a compacted topic)."""
        out: dict[str, bytes] = {}
        for rec in self._logs.get(topic, ()):
            if rec.key is None:
                continue
            if rec.value is None:
                out.pop(rec.key, None)
            else:
                out[rec.key] = rec.value
        return out

    async def send(
        self, topic: str, key: str | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        log = self._logs.setdefault(topic, [])
        log.append(Record(topic, key, value, len(log), int(time.time() * 1000), 0, tuple(headers)))
        self._last_send = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()

    async def consumer(self, topics: Iterable[str], group: str, from_beginning: bool = True) -> Consumer:
        consumer = _MemoryConsumer(self, list(topics), group, from_beginning)
        self._consumers.append(consumer)
        return consumer

    def end(self, topic: str) -> int:
        return len(self._logs.get(topic, ()))

    def lag(self) -> int:
        """Records published but not yet committed, summed over open consumers."""
        return sum(c.lag() for c in self._consumers if not c.closed)

    def idle_for(self) -> float:
        """Seconds since the last record was sent."""
        return time.monotonic() - self._last_send


class _MemoryConsumer(Consumer):
    def __init__(self, transport: MemoryTransport, topics: list[str], group: str, from_beginning: bool):
        self._t = transport
        self._topics = topics
        self._group = group
        self.closed = False
        self._pos: dict[str, int] = {}
        for topic in topics:
            committed = transport._committed.get((group, topic))
            self._pos[topic] = committed if committed is not None else (0 if from_beginning else transport.end(topic))
            transport._committed.setdefault((group, topic), self._pos[topic])

    def _available(self) -> bool:
        return any(self._pos[t] < self._t.end(t) for t in self._topics)

    async def getmany(self, timeout_s: float = 1.0, max_records: int = 1000) -> list[Record]:
        if self.closed:
            raise RuntimeError("consumer is closed")
        if not self._available():
            try:
                await asyncio.wait_for(self._t._changed.wait(), timeout_s)
            except TimeoutError:
                return []
        out: list[Record] = []
        for topic in self._topics:
            log = self._t._logs.get(topic, [])
            take = log[self._pos[topic] : self._pos[topic] + max_records - len(out)]
            out.extend(take)
            self._pos[topic] += len(take)
            if len(out) >= max_records:
                break
        return out

    async def commit(self) -> None:
        for topic, pos in self._pos.items():
            self._t._committed[(self._group, topic)] = pos

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return {(t, 0): self._t.end(t) for t in self._topics}

    def positions(self) -> dict[TopicPartition, int]:
        return {(t, 0): p for t, p in self._pos.items()}

    def lag(self) -> int:
        return sum(self._t.end(t) - self._t._committed.get((self._group, t), 0) for t in self._topics)

    async def close(self) -> None:
        self.closed = True
