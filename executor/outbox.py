"""A bounded, non-blocking outbox between the OCPP handlers and the transport.

A charger must be answered promptly whatever the brokers do: an OCPP handler that waited for Kafka would
stop answering MeterValues (and every other message on that connection) while the brokers are away, and
chargers would time out and drop the connection. So the handlers only put records here and answer at once;
a background task drains the outbox to the transport, retrying with exponential back-off while the
transport fails.

What waits is bounded, per topic:

* **upsert topics** (``ocpp.active.sessions``) keep one pending record per key: a newer record replaces
  the pending one (the newest wins), so a charger that reports every 10 s during a long outage costs one
  record, not hundreds. Per key the order is kept: a key has at most one record pending and one being
  sent, and the pending one goes only after the one being sent was delivered, so an older upsert is never
  delivered after a newer record (a tombstone is never undone by an older upsert). A tombstone is always
  kept, even past the bound, so a deletion is never lost; a new key past the bound is dropped.
* **append topics** (``ocpp.setpoint.acks``) are first in, first out; past the bound the oldest record is
  dropped. Records of one key are never in flight together, so their order is kept across retries.

What is dropped is counted (:attr:`Outbox.overflowed`, and the ``executor_outbox_overflow_total``
Prometheus counter when stats are given) and logged at most once per ``log_every_s``. While the transport
fails, one warning says so, one line says when it works again, and a summary comes every ``log_every_s``
in between. :meth:`Outbox.close` drains what it can within a timeout and logs what is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential, wait_random

from pipeline.contracts.topics import TOPICS, encode
from pipeline.transport import Transport

__all__ = ["Outbox", "OutboxStats", "PublishGate"]

log = logging.getLogger(__name__)

_Item = tuple[str | None, bytes | None]  # (key, value); value None is a tombstone


class OutboxStats(Protocol):
    """Where the outbox reports (see :class:`executor.metrics.ExecutorStats`)."""

    def outbox_depth(self, topic: str, records: int) -> None: ...

    def outbox_overflow(self, topic: str, records: int = 1) -> None: ...

    def outbox_coalesced(self, topic: str) -> None: ...


class PublishGate(Protocol):
    """Decides whether a record given to :meth:`Outbox.publish` is queued at all (see
    :class:`executor.telemetry.MeterGate`); told of tombstones too (``record`` ``None``)."""

    def admit(self, topic: str, key: str | None, record: Any) -> bool: ...


class _Upserts:
    """Pending records of an upsert topic: one per key, oldest key first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: OrderedDict[str | None, bytes | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, key: str | None, value: bytes | None) -> str | None:
        """Queue the record; returns ``"coalesced"``, ``"dropped"`` or ``None`` (added)."""
        if key in self._pending:
            self._pending[key] = value  # newest wins; the key keeps its place in the queue
            return "coalesced"
        if value is not None and len(self._pending) >= self.limit:
            return "dropped"
        self._pending[key] = value
        return None

    def take(self, n: int) -> list[_Item]:
        out: list[_Item] = []
        while self._pending and len(out) < n:
            out.append(self._pending.popitem(last=False))
        return out

    def give_back(self, failed: list[_Item]) -> None:
        """Put undelivered records back in front, unless a newer record of the key came meanwhile."""
        back = [(k, v) for k, v in failed if k not in self._pending]
        if back:
            rest = self._pending
            self._pending = OrderedDict(back)
            self._pending.update(rest)


class _Appends:
    """Pending records of an append topic, first in first out; past the bound the oldest is dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: deque[_Item] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, key: str | None, value: bytes | None) -> str | None:
        dropped = None
        if len(self._pending) >= self.limit:
            self._pending.popleft()
            dropped = "dropped"
        self._pending.append((key, value))
        return dropped

    def take(self, n: int) -> list[_Item]:
        """The oldest records up to ``n``, stopping before a key already taken (one per key in flight)."""
        out: list[_Item] = []
        keys: set[str | None] = set()
        while self._pending and len(out) < n and self._pending[0][0] not in keys:
            item = self._pending.popleft()
            keys.add(item[0])
            out.append(item)
        return out

    def give_back(self, failed: list[_Item]) -> None:
        self._pending.extendleft(reversed(failed))


class Outbox:
    """Records waiting for the transport, drained by a background task (see the module docstring).

    Args:
        transport: where records go.
        limit: the bound per topic, in records (keys for an upsert topic).
        stats: optional sink for the depth, overflow and coalescing counts.
        batch: records sent concurrently per attempt (distinct keys).
        retry_initial_s, retry_max_s: exponential back-off with jitter between failed attempts, real
            seconds.
        send_timeout_s: an attempt that has not completed by then counts as failed (a transport that hangs
            stalls nothing but the outbox).
        log_every_s: the interval of the summary while publishing fails, and of overflow log lines.
        gate: asked about every record given to :meth:`publish` (and told of every tombstone); a record it
            does not admit is not queued (the executor's :class:`executor.telemetry.MeterGate`).

    :meth:`publish` and :meth:`tombstone` never wait and never fail for the transport; they raise
    ``TypeError``/``ValueError`` for a record that does not fit its topic, like
    :func:`pipeline.transport.publish`.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        limit: int = 100_000,
        stats: OutboxStats | None = None,
        batch: int = 500,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        send_timeout_s: float = 60.0,
        log_every_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        gate: PublishGate | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"outbox limit must be at least 1, not {limit}")
        self.transport = transport
        self.limit = limit
        self.batch = batch
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.send_timeout_s = send_timeout_s
        self.log_every_s = log_every_s
        self._stats = stats
        self._now = monotonic
        self._gate = gate
        self._buffers: dict[str, _Upserts | _Appends] = {}
        self._turn = 0
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.overflowed: dict[str, int] = {}
        """Records dropped per topic because the bound was reached (or left at :meth:`close`)."""
        self.coalesced: dict[str, int] = {}
        """Records replaced by a newer one of the same key before they were sent, per topic."""
        self.delivered = 0
        """Records the transport accepted."""
        self._failing_since: float | None = None
        self._failures = 0
        self._last_summary = 0.0
        self._last_overflow_log: float | None = None
        self._overflow_unlogged = 0

    # -- putting ---------------------------------------------------------------------------------------

    def publish(self, topic: str, record) -> None:
        """Queue a topic model, keyed by its topic's key field (:data:`pipeline.contracts.topics.TOPICS`)."""
        spec = TOPICS[topic]
        if not isinstance(record, spec.model):
            raise TypeError(f"{topic} carries {spec.model.__name__}, not {type(record).__name__}")
        key = str(getattr(record, spec.key))
        if self._gate is not None and not self._gate.admit(topic, key, record):
            return
        self.put(topic, key, encode(record))

    def tombstone(self, topic: str, key: str) -> None:
        """Queue the deletion of ``key`` from an upsert topic."""
        if TOPICS[topic].kind != "upsert":
            raise ValueError(f"{topic} is an append topic; tombstones are for upsert topics")
        if self._gate is not None:
            self._gate.admit(topic, key, None)
        self.put(topic, key, None)

    def put(self, topic: str, key: str | None, value: bytes | None) -> None:
        """Queue one raw record (``value=None`` is a tombstone); never waits."""
        if self._closed:
            raise RuntimeError("the outbox is closed")
        buffer = self._buffers.get(topic)
        if buffer is None:
            spec = TOPICS.get(topic)
            buffer = _Upserts(self.limit) if spec is not None and spec.kind == "upsert" else _Appends(self.limit)
            self._buffers[topic] = buffer
        outcome = buffer.put(key, value)
        if outcome == "coalesced":
            self.coalesced[topic] = self.coalesced.get(topic, 0) + 1
            if self._stats is not None:
                self._stats.outbox_coalesced(topic)
        elif outcome == "dropped":
            self._overflow(topic, 1)
        self._depth(topic)
        self._idle.clear()
        self._work.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="executor-outbox")

    # -- reading ---------------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Records waiting, over every topic (not counting those being sent)."""
        return sum(len(b) for b in self._buffers.values())

    def depth_of(self, topic: str) -> int:
        buffer = self._buffers.get(topic)
        return 0 if buffer is None else len(buffer)

    @property
    def empty(self) -> bool:
        """Every record put was delivered (none waits, none is being sent)."""
        return self._idle.is_set()

    @property
    def failing(self) -> bool:
        """The last attempt to send failed (the transport is away)."""
        return self._failing_since is not None

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued record was delivered; ``False`` if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what can be within ``timeout_s`` real seconds, then stop; returns the records left
        undelivered (logged as an error and counted as overflow). Idempotent."""
        if self._closed:
            return 0
        self._closed = True
        if self._task is not None:
            await self.flush(timeout_s)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        left = 0
        for topic, buffer in self._buffers.items():
            if n := len(buffer):
                left += n
                self._overflow(topic, n, log_it=False)
                buffer.take(n)
                self._depth(topic)
        if left:
            log.error(
                "outbox closed with %d records undelivered (the transport did not take them within %gs)",
                left,
                timeout_s,
            )
        return left

    # -- draining --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while any(len(b) for b in self._buffers.values()):
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(Exception),
                    before_sleep=self._attempt_failed,
                    wait=wait_exponential(multiplier=self.retry_initial_s, max=self.retry_max_s)
                    + wait_random(0, self.retry_initial_s),
                ):
                    with attempt:
                        await self._send_batch()
                self._delivering()
            if not any(len(b) for b in self._buffers.values()):
                self._idle.set()

    async def _send_batch(self) -> None:
        """Send up to ``batch`` records of the next topic in turn concurrently; put back what failed (or
        all of them if cancelled) and raise the first error."""
        topics = [t for t, b in self._buffers.items() if len(b)]
        if not topics:
            return
        self._turn += 1
        topic = topics[self._turn % len(topics)]
        buffer = self._buffers[topic]
        items = buffer.take(self.batch)
        self._depth(topic)
        try:
            results = await self._send_all(topic, items)
        except asyncio.CancelledError:
            buffer.give_back(items)
            self._depth(topic)
            raise
        failed = [item for item, res in zip(items, results, strict=True) if isinstance(res, BaseException)]
        self.delivered += len(items) - len(failed)
        if failed:
            buffer.give_back(failed)
            self._depth(topic)
            raise next(res for res in results if isinstance(res, BaseException))

    async def _send_all(self, topic: str, items: list[_Item]) -> list[object]:
        tasks = [asyncio.ensure_future(self.transport.send(topic, key, value)) for key, value in items]
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await asyncio.wait(tasks)
        except TimeoutError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        out: list[object] = []
        for task in tasks:
            if task.cancelled():
                out.append(TimeoutError(f"send to {topic} took more than {self.send_timeout_s:g}s"))
            else:
                out.append(task.exception() or True)
        return out

    # -- reporting -------------------------------------------------------------------------------------

    def _depth(self, topic: str) -> None:
        if self._stats is not None:
            self._stats.outbox_depth(topic, len(self._buffers[topic]))

    def _overflow(self, topic: str, n: int, log_it: bool = True) -> None:
        self.overflowed[topic] = self.overflowed.get(topic, 0) + n
        if self._stats is not None:
            self._stats.outbox_overflow(topic, n)
        if not log_it:
            return
        self._overflow_unlogged += n
        now = self._now()
        if self._last_overflow_log is None or now - self._last_overflow_log >= self.log_every_s:
            log.warning(
                "outbox full (%d records per topic): %d records dropped since the last report (%s)",
                self.limit,
                self._overflow_unlogged,
                ", ".join(f"{t}: {c} in all" for t, c in sorted(self.overflowed.items())),
            )
            self._last_overflow_log = now
            self._overflow_unlogged = 0

    def _attempt_failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
        now = self._now()
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = self._last_summary = now
            log.warning(
                "publishing failed (%s); %d records wait in the outbox, retrying with back-off", reason, self.depth
            )
        elif now - self._last_summary >= self.log_every_s:
            self._last_summary = now
            log.warning(
                "publishing has failed for %.0fs (%d attempts; last: %s); %d records wait, %d dropped",
                now - self._failing_since,
                self._failures,
                reason,
                self.depth,
                sum(self.overflowed.values()),
            )

    def _delivering(self) -> None:
        if self._failing_since is not None:
            log.warning(
                "publishing works again after %.0fs (%d failed attempts); %d records wait",
                self._now() - self._failing_since,
                self._failures,
                self.depth,
            )
            self._failing_since = None
            self._failures = 0
