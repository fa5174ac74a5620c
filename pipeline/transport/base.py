"""The transport contract shared by the memory and Kafka transports.

Both carry the topics of :mod:`pipeline.contracts.topics` with the same keys, JSON values and tombstone rules, so the
engine and the executor run unchanged on either. A record that does not fit its topic's contract is
copied to the topic's dead-letter topic (``<topic>.dlq``, error in the ``error`` header) and consumption
moves on: bad input loses nothing and stops nothing.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.contracts.topics import TOPICS, decode, dlq_topic, encode

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class Record:
    """One consumed record: ``value is None`` is a tombstone."""

    topic: str
    key: str | None
    value: bytes | None
    offset: int
    timestamp_ms: int
    partition: int = 0
    headers: tuple[tuple[str, bytes], ...] = field(default=())


class Consumer(ABC):
    """A consumer in a group. Positions advance on ``getmany``; ``commit`` stores them for the group.

    Callers commit only after a batch is fully handled, so a crash replays rather than loses records.
    """

    @abstractmethod
    async def getmany(self, timeout_s: float = 1.0, max_records: int = 1000) -> list[Record]:
        """Return up to ``max_records`` new records, waiting at most ``timeout_s`` for the first."""

    @abstractmethod
    async def commit(self) -> None:
        """Commit the positions of every record returned so far."""

    @abstractmethod
    async def end_offsets(self) -> dict[TopicPartition, int]:
        """The current end (next offset to be written) of every assigned partition."""

    @abstractmethod
    def positions(self) -> dict[TopicPartition, int]:
        """The next offset this consumer will read, per assigned partition."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the group (committed offsets stay)."""

    async def read_to_end(self, timeout_s: float = 30.0) -> list[Record]:
        """Read every record up to the end offsets seen at the call (used to rebuild state at start)."""
        import asyncio

        ends = await self.end_offsets()
        out: list[Record] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(self.positions().get(tp, 0) < end for tp, end in ends.items()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read to end offsets {ends} within {timeout_s}s")
            out.extend(await self.getmany(timeout_s=0.2))
        return out


class Transport(ABC):
    """Publish and consume raw records; :func:`publish` and :func:`decode_or_dead_letter` add the contract."""

    name: str = "abstract"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect (and create topics where the transport needs it)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and disconnect."""

    @abstractmethod
    async def send(
        self, topic: str, key: str | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Append one raw record; ``value=None`` is a tombstone."""

    @abstractmethod
    async def consumer(self, topics: Iterable[str], group: str, from_beginning: bool = True) -> Consumer:
        """A consumer in ``group``: resumes from the group's committed offsets, else the beginning (or end)."""


async def publish(transport: Transport, topic: str, record) -> None:
    """Publish a topic model, keyed by the topic's key field (see :data:`pipeline.contracts.topics.TOPICS`)."""
    spec = TOPICS[topic]
    if not isinstance(record, spec.model):
        raise TypeError(f"{topic} carries {spec.model.__name__}, not {type(record).__name__}")
    await transport.send(topic, str(getattr(record, spec.key)), encode(record))


async def publish_tombstone(transport: Transport, topic: str, key: str) -> None:
    """Delete ``key`` from an upsert topic."""
    if TOPICS[topic].kind != "upsert":
        raise ValueError(f"{topic} is an append topic; tombstones are for upsert topics")
    await transport.send(topic, key, None)


async def decode_or_dead_letter(transport: Transport, record: Record):
    """Decode ``record`` against its topic's contract.

    Returns ``(True, model_or_None)`` for a good record (``None`` is a tombstone), or ``(False, None)``
    after copying a bad one to the dead-letter topic with its error; never raises for bad input.
    """
    try:
        return True, decode(record.topic, record.key, record.value)
    except Exception as exc:
        log.warning("dead-lettering %s@%s key=%r: %s", record.topic, record.offset, record.key, exc)
        await dead_letter(transport, record, str(exc))
        return False, None


async def dead_letter(transport: Transport, record: Record, error: str) -> None:
    """Copy ``record`` unchanged to ``<topic>.dlq`` with headers ``error``, ``source.topic`` and
    ``source.offset``, so an operator can read why and replay it once fixed."""
    headers = (
        ("error", error.encode("utf-8", errors="replace")),
        ("source.topic", record.topic.encode()),
        ("source.offset", str(record.offset).encode()),
    )
    await transport.send(dlq_topic(record.topic), record.key, record.value, headers)
