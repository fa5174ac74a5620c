"""Run the embedded engine against a transport: consume inputs, evaluate in micro-batches, emit sinks.

Each loop takes whatever input records are waiting (up to ``batch_max``), loads them, evaluates the
sinks and publishes the changes, then commits the consumed offsets: a crash replays input, never loses
it. With no input the engine still evaluates every ``tick_s`` clock seconds, so ``NOW()`` temporal
filters (DR start and end, tariff windows) fire on time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from pipeline.clock import Clock, SystemClock
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.transport.base import Transport, decode_or_dead_letter

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    records_in: int = 0
    dead_lettered: int = 0
    evaluations: int = 0
    changes_out: int = 0
    last_eval_ms: float = 0.0


class EngineService:
    """The embedded engine as a long-running service on ``transport``.

    ``group`` defaults to a fresh consumer group, because an in-memory DuckDB holds no state across
    restarts and must rebuild from the start of its input topics.
    """

    def __init__(
        self,
        engine: EmbeddedEngine,
        transport: Transport,
        clock: Clock | None = None,
        *,
        group: str | None = None,
        tick_s: float = 1.0,
        poll_s: float = 0.05,
        batch_max: int = 5000,
    ) -> None:
        self.engine = engine
        self.transport = transport
        self.clock = clock or SystemClock()
        self.group = group or f"engine-{uuid.uuid4().hex[:8]}"
        self.tick_s = tick_s
        self.poll_s = poll_s
        self.batch_max = batch_max
        self.stats = EngineStats()
        self._stop = asyncio.Event()
        self._consumer = None

    def stop(self) -> None:
        self._stop.set()

    async def step(self, timeout_s: float | None = None, force: bool = False) -> int:
        """One micro-batch: consume, load, evaluate if there was input (or the tick is due, or
        ``force``), publish changes, commit. Returns the number of records consumed."""
        if self._consumer is None:
            self._consumer = await self.transport.consumer(self.engine.input_topics, self.group)
            self._next_tick = self.clock.now()
        records = await self._consumer.getmany(
            timeout_s=self.poll_s if timeout_s is None else timeout_s, max_records=self.batch_max
        )
        decoded = []
        for rec in records:
            ok, model = await decode_or_dead_letter(self.transport, rec)
            if ok:
                decoded.append((rec.topic, rec.key, model))
            else:
                self.stats.dead_lettered += 1
        self.engine.apply(decoded)
        self.stats.records_in += len(decoded)
        now = self.clock.now()
        if records or force or now >= self._next_tick:
            changes = self.engine.evaluate(now)
            for change in changes:
                await self.transport.send(change.topic, change.key, change.value)
            self.stats.evaluations += 1
            self.stats.changes_out += len(changes)
            self.stats.last_eval_ms = self.engine.last_eval_ms
            self._next_tick = now.timestamp() + self.tick_s
            self._next_tick = type(now).fromtimestamp(self._next_tick, now.tzinfo)
        await self._consumer.commit()
        return len(records)

    async def run(self) -> None:
        """Loop until :meth:`stop`. Errors in one batch are logged and the loop goes on."""
        try:
            while not self._stop.is_set():
                try:
                    await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a bad batch must not stop the engine
                    log.exception("engine batch failed; continuing")
                    await asyncio.sleep(self.poll_s)
        finally:
            if self._consumer is not None:
                await self._consumer.close()
                self._consumer = None
