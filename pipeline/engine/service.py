"""Run the embedded engine against a transport: consume inputs, evaluate in micro-batches, emit sinks.

Each loop takes whatever input records are waiting (up to ``batch_max``), loads them, evaluates the
sinks and publishes the changes, then commits the consumed offsets: a crash replays input, never loses
it. ``NOW()`` temporal filters (a DR event's start and end, a rule's or tariff slot's validity, a meter
turning stale) fire at their instant: the engine knows the next one
(:meth:`~pipeline.engine.embedded.EmbeddedEngine.next_boundary`), the wait for input ends there, on
the system clock and on a :class:`~pipeline.contracts.clock.SimClock` at any speed, and that evaluation
re-runs the sites concerned. Besides, with no input the engine evaluates every ``tick_s`` clock seconds
(every view that reads ``NOW()``, for every site), a safety net for a ``NOW()`` use with no boundary.

Start-up (DuckDB is in memory, so every start is a rebuild, on Kafka as on the memory transport):

1. The sink topics (compacted on Kafka) are read to their end to learn which keys a previous run left
   there, so the first evaluation re-publishes every current row (unchanged values: the executor drops
   them as duplicates) and tombstones keys whose sessions ended while the engine was away.
2. The input topics are read from the beginning to their end offsets, in a fresh consumer group, before
   the first evaluation: setpoints are never computed from half the inputs (topology and sessions
   without the site meter would over-allocate).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.contracts.clock import Clock, SimClock, SystemClock
from pipeline.engine.config import EngineConfig
from pipeline.engine.embedded import EmbeddedEngine, SinkChange
from pipeline.engine.history import TransactionHistory
from pipeline.transport.base import Consumer, Record, Transport, dead_letter, decode_or_dead_letter

log = logging.getLogger(__name__)

SEND_WINDOW = 1000  # sink records in flight at once (see EngineService.step)


@dataclass
class EngineStats:
    records_in: int = 0
    dead_lettered: int = 0
    evaluations: int = 0
    changes_out: int = 0
    last_eval_ms: float = 0.0


def round_summary(changes: list[SinkChange]) -> str:
    """One evaluation's sink records in one line for the operator: per sink topic how many keys changed
    and were withdrawn, with the setpoints' binding reasons, e.g. ``ocpp.setpoint.commands: 3 changed
    (dr 2, cap 1), 1 withdrawn; pipeline.alerts: 1 changed``."""
    parts = []
    for topic in sorted({c.topic for c in changes}):
        mine = [c for c in changes if c.topic == topic]
        upserts = [c for c in mine if c.value is not None]
        text = f"{topic}: {len(upserts)} changed"
        reasons: Counter[str] = Counter()
        for c in upserts:
            try:
                value = json.loads(c.value or b"{}")
            except ValueError:
                continue
            reason = value.get("binding") or value.get("kind")
            if reason:
                reasons[str(reason)] += 1
        if reasons:
            text += " (" + ", ".join(f"{r} {n}" for r, n in reasons.most_common()) + ")"
        withdrawn = len(mine) - len(upserts)
        if withdrawn:
            text += f", {withdrawn} withdrawn"
        parts.append(text)
    return "; ".join(parts)


class DrEventLog:
    """One INFO line when a demand-response event comes into force at a site and one when it is over, from
    the ``dr_events`` view (one row per event in force, see sql/views/dr_events.sql) after each evaluation.
    Fields: ``site_id``, ``dr_event_id``, ``curtailment_pct`` or ``limit_kw``, ``ends_at``."""

    VIEW = "dr_events"

    def __init__(self, engine: EmbeddedEngine) -> None:
        self._engine = engine
        self._enabled = any(v.name == self.VIEW for v in engine.views)
        self._in_force: dict[tuple[str, str], tuple] = {}

    def moved(self) -> bool:
        """True when the last evaluation changed the view's rows (only then can :meth:`update` log)."""
        return self._enabled and self.VIEW in self._engine.last_changed

    def update(self) -> None:
        """Compare the events in force now with those of the last call and log the difference."""
        if not self._enabled:
            return
        cols, rows = self._engine.rows(self.VIEW)
        at = [cols.index(c) for c in ("site_id", "dr_event_id", "curtailment_pct", "limit_kw", "event_end")]
        now = {(row[at[0]], row[at[1]]): (row[at[2]], row[at[3]], row[at[4]]) for row in rows}
        for (site, event), (pct, limit, end) in sorted(now.items() - self._in_force.items()):
            what = f"curtailment {pct:g} %" if pct is not None else f"limit {limit:g} kW"
            ends = end.isoformat(timespec="seconds") if end is not None else "?"
            log.info(
                "DR event %s in force at site %s: %s until %s",
                event,
                site,
                what,
                ends,
                extra={
                    "site_id": site,
                    "dr_event_id": event,
                    "curtailment_pct": pct,
                    "limit_kw": limit,
                    "ends_at": ends,
                },
            )
        for site, event in sorted(self._in_force.keys() - now.keys()):
            log.info("DR event %s at site %s is over", event, site, extra={"site_id": site, "dr_event_id": event})
        self._in_force = now


_heap_frozen = False


def freeze_heap() -> None:
    """Collect garbage once, then move every object left to the collector's permanent generation
    (:func:`gc.freeze`): what the catch-up loaded (the engine's record of what each sink emitted, the site
    index, the executor's state) lives as long as the process, and a full collection walked it every
    time, a pause of ~115 ms at 50,000 sessions (README, Performance) inside whatever evaluation or
    dispatch it hit. Objects created later are collected as before; frozen ones that die later are not
    freed, which bounds the cost at one start-up heap.

    Once per process: a process that starts engine after engine (a test run, a benchmark's replays) would
    otherwise make each one's heap, garbage-to-be included, permanent, and grow by it."""
    global _heap_frozen
    if _heap_frozen:
        return
    _heap_frozen = True
    gc.collect()
    gc.freeze()


def thaw_heap() -> None:
    """Undo :func:`freeze_heap` (:func:`gc.unfreeze`), so the next call freezes again: for a process that
    measures one engine after another."""
    global _heap_frozen
    _heap_frozen = False
    gc.unfreeze()


class EngineService:
    """The embedded engine as a long-running service on ``transport``.

    ``group`` defaults to a fresh consumer group (``engine-<random>``), because an in-memory DuckDB
    holds no state across restarts and must rebuild from the start of its input topics; a fixed group
    would resume at its committed offsets with an empty database. On Kafka each start leaves that
    group's committed offsets behind until the broker expires them (``offsets.retention.minutes``,
    7 days by default). ``config`` (:class:`EngineConfig`) sets the tick, the poll, the batch size and
    ``catch_up_timeout_s``, the bound on the start-up read of the inputs (:class:`TimeoutError` after it).
    """

    def __init__(
        self,
        engine: EmbeddedEngine,
        transport: Transport,
        clock: Clock | None = None,
        config: EngineConfig | None = None,
        *,
        group: str | None = None,
    ) -> None:
        config = config or EngineConfig()
        self.engine = engine
        self.transport = transport
        self.clock = clock or SystemClock()
        self.group = group or f"engine-{uuid.uuid4().hex[:8]}"
        self.tick_s = config.tick_s
        self.poll_s = config.poll_s
        self.batch_max = config.batch_max
        self.catch_up_timeout_s = config.catch_up_timeout_s
        self.stats = EngineStats()
        self.history = TransactionHistory(
            engine, config.history_path, config.history_retention_days, config.input_retention_h
        )
        self._dr_log = DrEventLog(engine)
        self._stop = asyncio.Event()
        self._consumer: Consumer | None = None
        self._busy = False
        self._next_tick: datetime = self.clock.now()

    def stop(self) -> None:
        self._stop.set()

    async def step(self, timeout_s: float | None = None, force: bool = False) -> int:
        """One micro-batch: consume, load, evaluate if there was input (or a temporal boundary passed,
        or the tick is due, or ``force``), publish changes, commit. Returns the number of records
        consumed.

        The wait for input (``timeout_s``, default ``poll_s``, in real seconds) ends early at the
        engine's next temporal boundary. Input re-runs the views for the sites it touched, a boundary
        for the sites it concerns; a tick (every ``tick_s`` of clock, and ``force``) re-runs the views
        that read ``NOW()`` for every site.

        The first step opens the consumer and catches up (see the module docstring) before evaluating.
        """
        consumer = self._consumer
        first = False
        decoded: list[tuple[str, str | None, Any]] = []
        raw: list[Record] = []
        if consumer is None:
            consumer, count = await self._start()
            force = first = True
        else:
            wait_s = self.poll_s if timeout_s is None else timeout_s
            boundary = self.engine.next_boundary()
            if boundary is not None:
                wait_s = min(wait_s, self._real_seconds_until(boundary))
            records = await consumer.getmany(timeout_s=wait_s, max_records=self.batch_max)
            decoded, raw = await self._decode(records)
            count = len(records)
        now = self.clock.now()
        if self.history.prune_due(now):
            await asyncio.to_thread(self.history.prune, now)
        tick = force or now >= self._next_tick
        if count or tick or self.engine.boundary_due(now):
            self._busy = True
            try:  # one trip to a worker thread for loading and evaluating; the executor keeps serving meanwhile
                refused, changes, error = await asyncio.to_thread(self._apply_and_evaluate, decoded, now, tick)
            finally:
                self._busy = False
            await self._loaded(decoded, raw, refused)
            if error is not None:
                raise error
            # Sent together (up to SEND_WINDOW at once), not one by one: on Kafka each send waits for acks=all,
            # so one at a time cost a broker round trip per setpoint. Each key occurs once per evaluation,
            # the producer keeps a partition's records in the order they were handed to it, and every send
            # is done before the commit.
            for i in range(0, len(changes), SEND_WINDOW):
                await asyncio.gather(
                    *(self.transport.send(c.topic, c.key, c.value) for c in changes[i : i + SEND_WINDOW])
                )
            if changes and log.isEnabledFor(logging.INFO):  # the summary parses every record: only when shown
                log.info("evaluation at %s: %s", now.isoformat(timespec="seconds"), round_summary(changes))
            if log.isEnabledFor(logging.INFO) and self._dr_log.moved():
                self._dr_log.update()
            self.stats.evaluations += 1
            self.stats.changes_out += len(changes)
            self.stats.last_eval_ms = self.engine.last_eval_ms
            if tick:
                self._next_tick = now + timedelta(seconds=self.tick_s)
        if first:
            freeze_heap()
        await consumer.commit()
        return count

    def _real_seconds_until(self, when: datetime) -> float:
        """Real seconds until the clock reads ``when``: clock seconds over a :class:`SimClock`'s speed,
        ``inf`` while it is held (it moves only when released or advanced, which the next poll sees)."""
        clock_s = (when - self.clock.now()).total_seconds()
        if clock_s <= 0:
            return 0.0
        if isinstance(self.clock, SimClock):
            return math.inf if self.clock.held else clock_s / self.clock.speed
        return clock_s

    @property
    def busy(self) -> bool:
        """True while an evaluation runs (on a worker thread)."""
        return self._busy

    @property
    def boundary_owed(self) -> bool:
        """True when a temporal boundary (:meth:`EmbeddedEngine.next_boundary`) is at or before the clock's
        now and no evaluation has covered it yet: the engine evaluates when its poll for input ends. A poll
        begun while a :class:`SimClock` stood held lasts ``poll_s``, however far the clock is stepped
        meanwhile, so whoever steps a held clock must wait for this to clear before counting the loop quiet
        (:func:`pipeline.replay.settle.settle`)."""
        return self.engine.boundary_due(self.clock.now())

    def _apply_and_evaluate(
        self, decoded: list[tuple[str, str | None, Any]], now: datetime, tick: bool
    ) -> tuple[list[tuple[str, str | None, Any, Exception]], list[SinkChange], Exception | None]:
        """On the worker thread: load ``decoded`` and evaluate at ``now``; returns the refused records, the
        sinks' changes and the evaluation's error (raised by the caller once the load is accounted for)."""
        refused = self.engine.apply_each(decoded) if decoded else []
        try:
            return refused, self.engine.evaluate(now, tick), None
        except Exception as exc:
            return refused, [], exc

    async def _decode(self, records: list[Record]) -> tuple[list[tuple[str, str | None, Any]], list[Record]]:
        """Decode one batch: ``(topic, key, model)`` per good record and the records they came from; a record
        that fails to decode is dead-lettered with its reason."""
        decoded = []
        raw = []
        for rec in records:
            ok, model = await decode_or_dead_letter(self.transport, rec)
            if ok:
                decoded.append((rec.topic, rec.key, model))
                raw.append(rec)
            else:
                self.stats.dead_lettered += 1
        return decoded, raw

    async def _load(self, records: list[Record]) -> None:
        """Decode and load one batch. A record that fails to decode, or that the database refuses, is
        dead-lettered with its reason; every other record of the batch is loaded."""
        decoded, raw = await self._decode(records)
        if decoded:
            await self._loaded(decoded, raw, await asyncio.to_thread(self.engine.apply_each, decoded))

    async def _loaded(
        self,
        decoded: list[tuple[str, str | None, Any]],
        raw: list[Record],
        refused: list[tuple[str, str | None, Any, Exception]],
    ) -> None:
        """After ``decoded`` was loaded: dead-letter the ``refused`` records, count and keep the rest."""
        if not decoded:
            return
        if refused:
            by_id = {id(item[2]): rec for item, rec in zip(decoded, raw, strict=True)}
            for _topic, _key, model, exc in refused:
                rec = by_id[id(model)]
                log.error("engine refused %s@%s key=%r: %s", rec.topic, rec.offset, rec.key, exc)
                await dead_letter(self.transport, rec, f"refused by the engine: {type(exc).__name__}: {exc}")
            self.stats.dead_lettered += len(refused)
        self.stats.records_in += len(decoded) - len(refused)
        refused_ids = {id(item[2]) for item in refused}
        self.history.keep(item for item in decoded if id(item[2]) not in refused_ids)

    async def _start(self) -> tuple[Consumer, int]:
        """Learn the sink topics' keys, open the input consumer and load the inputs to their end offsets;
        returns the consumer and the number of records read."""
        await self._assume_published()
        await asyncio.to_thread(self.history.restore, self.clock.now())
        consumer = self._consumer = await self.transport.consumer(self.engine.input_topics, self.group)
        self._next_tick = self.clock.now()
        ends = await consumer.end_offsets()
        deadline = asyncio.get_running_loop().time() + self.catch_up_timeout_s
        count = 0
        while any(consumer.positions().get(tp, 0) < end for tp, end in ends.items()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"engine could not read its inputs to {ends} in {self.catch_up_timeout_s}s")
            records = await consumer.getmany(timeout_s=0.2, max_records=self.batch_max)
            await self._load(records)
            count += len(records)
        log.info("engine caught up: %d input records", count)
        return consumer, count

    async def _assume_published(self) -> None:
        """Seed the engine's record of what each sink has emitted with the keys its topic holds now."""
        topics = self.engine.output_topics
        if not topics:
            return
        consumer = await self.transport.consumer(topics, f"{self.group}.sinks")
        try:
            records = await consumer.read_to_end(timeout_s=self.catch_up_timeout_s)
        finally:
            await consumer.close()
        live: dict[str, set[str]] = {topic: set() for topic in topics}
        for rec in records:
            if rec.key is None:
                continue
            if rec.value is None:
                live[rec.topic].discard(rec.key)
            else:
                live[rec.topic].add(rec.key)
        for topic, keys in live.items():
            self.engine.assume_emitted(topic, keys)

    async def run(self) -> None:
        """Loop until :meth:`stop`. Errors in one batch are logged and the loop goes on."""
        try:
            while not self._stop.is_set():
                try:
                    await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("engine batch failed; continuing")
                    await asyncio.sleep(self.poll_s)
        finally:
            self.history.close()
            if self._consumer is not None:
                await self._consumer.close()
                self._consumer = None
