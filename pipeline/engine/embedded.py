"""The embedded engine: the same ``sql/`` run in-process on an embedded database, for one machine, demos
and tests.

RisingWave maintains materialized views incrementally; this engine does not pretend to. It is honest
micro-batch recompute, on a database chosen by :mod:`pipeline.engine.backend` (SQLite, DuckDB, or the
hybrid of the two; ``EngineConfig.backend``):

* tables and sources become tables fed from the transport (upsert tables by the Kafka message key, held
  as RisingWave holds it: the ``INCLUDE KEY AS`` column, the key's bytes, is the primary key, and a
  tombstone deletes its row; append topics as inserts);
* materialized views are transpiled by sqlglot (``risingwave`` in, the backend's dialect out), with
  ``NOW()`` bound to the engine clock so temporal filters fire at the clock's time. Each becomes a table
  that every evaluation refreshes in dependency order, so a view is computed once per evaluation however
  many views read it, and readers see one consistent snapshot;
* evaluation is partitioned by site (:mod:`pipeline.engine.partition`): a batch that touches one site
  re-runs each view for that site only, and a view whose rows for a site did not change stops the change
  there. A *tick* (``timed=True``) re-runs the views that read ``NOW()`` for every site, and passes on
  only the sites whose rows moved;
* the instants at which a ``NOW()`` comparison can next change a view's rows are known from the inputs
  (:mod:`pipeline.engine.boundaries`): per view and site the engine keeps the next one
  (:meth:`EmbeddedEngine.next_boundary`), and any evaluation at or after it re-runs that view for that
  site, so a DR event or a stale meter takes effect when the service evaluates at that instant, not at
  the next tick;
* each evaluation diffs the sinks for the sites that changed and emits only rows that changed since the
  last evaluation: upserts, and tombstones for keys that left.

The README gives measured figures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import duckdb
from sqlglot import exp

from pipeline.contracts.topics import TOPICS, RecordError, encode
from pipeline.engine.adapters import make_backend
from pipeline.engine.backend import Backend
from pipeline.engine.boundaries import AT_COLUMN, BoundarySchedule, derive, is_now
from pipeline.engine.duckdb_backend import QUERY_SUFFIX, duckdb_ddl, to_duckdb
from pipeline.engine.partition import ALL, SITE_COLUMN, SiteIndex, union
from pipeline.sqlmodel.objects import DEFAULT_SQL_DIR, SqlError, SqlObject, load_objects, upsert_key_problem

log = logging.getLogger(__name__)

#: The backend an engine built without one uses (and ``EngineConfig.backend`` unset): chosen by the
#: measurements in the README (Performance, Engine).
DEFAULT_BACKEND = "hybrid"


@dataclass(frozen=True)
class SinkChange:
    """One record a sink emits: ``value is None`` is a tombstone for ``key``."""

    topic: str
    key: str
    value: bytes | None


@dataclass(frozen=True)
class _BoundarySql:
    """One view's boundary query (``site_id``, ``boundary_at``: the next instant per site after the bound
    ``NOW()``) over every site and restricted to the dirty sites (``None`` when it reads no site-keyed
    relation), as the backend runs them, and the relations it reads."""

    full: str
    partial: str | None
    reads: frozenset[str]

    @classmethod
    def of(cls, branches: list[exp.Select], site_keyed: set[str], backend: Backend) -> _BoundarySql:
        reads: set[str] = set()
        for q in branches:
            ctes = {cte.alias for cte in q.find_all(exp.CTE)}
            reads.update(t.name for t in q.find_all(exp.Table) if t.name not in ctes)
        parts = [exp.select("*").from_(q.subquery(f"b{i}")) for i, q in enumerate(branches)]
        body: exp.Query = parts[0]
        for part in parts[1:]:
            body = exp.union(body, part, distinct=False)
        at = exp.column(AT_COLUMN)
        query = (
            exp.select(SITE_COLUMN, exp.func("min", at).as_(AT_COLUMN))
            .from_(body.subquery("boundaries"))
            .where(exp.GT(this=at, expression=exp.CurrentTimestamp()))
            .group_by(SITE_COLUMN)
        )
        partial = backend.render(query, site_keyed) if reads & site_keyed else None
        return cls(backend.render(query), partial, frozenset(reads))


def _reads_now(obj: SqlObject) -> bool:
    return any(is_now(node) for node in obj.ast.expression.find_all(exp.Func))


def _message_key(topic: str, key: str | None, record: Any) -> str | None:
    """The record's Kafka message key: ``key``, or for a record built in code without one (a snapshot, a
    test) its contract's key field (:data:`pipeline.contracts.topics.TOPICS`), which a decoded record's key always
    equals."""
    if key is not None or record is None:
        return key
    return str(getattr(record, TOPICS[topic].key))


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


class EmbeddedEngine:
    """``sql/`` on an embedded database (``backend``: ``"sqlite"`` or ``"duckdb"``, see
    :mod:`pipeline.engine.backend`; default :data:`DEFAULT_BACKEND`; a ``database`` file means DuckDB).

    ``apply`` loads decoded topic records; ``evaluate(now)`` binds ``NOW()`` to ``now`` and returns the
    sinks' changes since the previous evaluation. One thread at a time: :attr:`lock` is held around every
    use of the backend (``apply``, ``evaluate``, ``forget``, ``reset``, ``close``, the reads and
    :meth:`sync_readers`), so a reader on another thread may sync meanwhile.
    Raises :class:`SqlError` when ``sql/`` has an object the backend cannot run, ``ValueError`` for an
    unknown backend.
    """

    def __init__(
        self, sql_dir: str | Path = DEFAULT_SQL_DIR, database: str = ":memory:", backend: str | Backend | None = None
    ) -> None:
        self.objects = load_objects(sql_dir)
        if isinstance(backend, Backend):
            self.backend = backend
        elif database != ":memory:":  # a database file is DuckDB's (pipeline migrate's embedded target)
            self.backend = make_backend("duckdb", database)
        else:
            self.backend = make_backend(backend or DEFAULT_BACKEND)
        self.lock = threading.RLock()
        self.inputs: dict[str, SqlObject] = {}
        self.views: list[SqlObject] = []
        self.sinks: list[SqlObject] = []
        self._emitted: dict[str, dict[str, tuple[Any, ...] | None]] = {}  # per sink: key -> row (None: unknown)
        self._emitted_sites: dict[str, dict[str | None, set[str]]] = {}  # per sink: site -> keys emitted
        self._dirty: dict[str, frozenset[str] | None] = {}  # object -> sites whose rows changed (ALL = every site)
        self._timed: set[str] = set()  # views that read NOW() themselves
        self._diffed: set[str] = set()  # sinks diffed at least once
        self._sink_dirty: dict[str, frozenset[str] | None] = {}  # views changed since the sinks were diffed
        self.sites = SiteIndex()
        self.evaluations = 0
        self.last_eval_ms = 0.0
        self.last_changed: frozenset[str] = frozenset()  # the views whose rows the last evaluation changed
        self._columns: dict[str, list[str]] = {}
        self._declared: dict[str, list[str]] = {}  # per input table: its declared columns (obj.columns parses)
        self._topic: dict[str, str] = {}  # per input and sink: its topic
        for obj in self.objects:
            topic = obj.topic
            if obj.kind == "sink":
                if not topic or not obj.primary_key or topic not in TOPICS:
                    raise SqlError(f"{obj.path}: a sink needs primary_key and a topic with a contract")
                self.sinks.append(obj)
                self._topic[obj.name] = topic
                self._emitted[obj.name] = {}
                continue
            if obj.kind in ("materialized_view", "view"):
                self._columns[obj.name] = self.backend.create_view(obj)
                self.views.append(obj)
                if _reads_now(obj):
                    self._timed.add(obj.name)
            if obj.kind in ("table", "source"):
                if not topic:
                    raise SqlError(f"{obj.path}: a {obj.kind} needs a topic in its WITH clause")
                if topic not in TOPICS:
                    raise SqlError(f"{obj.path}: topic {topic!r} has no contract in pipeline.contracts.topics")
                problem = upsert_key_problem(obj)
                if problem:
                    raise SqlError(f"{obj.path}: {problem}")
                self.backend.create_input(obj)
                self.inputs[topic] = obj
                self._topic[obj.name] = topic
                self._columns[obj.name] = obj.stored_columns
                self._declared[obj.name] = obj.columns
        site_keyed = {name for name, cols in self._columns.items() if SITE_COLUMN in cols}
        self.backend.prepare(self.views, site_keyed)
        self.unbounded: list[str] = []  # NOW() uses with no boundary (the tick covers them), as "view: SQL"
        self._boundaries = BoundarySchedule()
        self._boundary_sql = self._compile_boundaries(site_keyed)
        self._evaluated_at: datetime | None = None  # the NOW() of the last refresh

    @property
    def backend_name(self) -> str:
        """``"sqlite"`` or ``"duckdb"``."""
        return self.backend.name

    def _compile_boundaries(self, site_keyed: set[str]) -> dict[str, _BoundarySql]:
        """Per timed view, the query of its next boundary per site (:mod:`pipeline.engine.boundaries`). Each
        comparison reads its relation's ``site_id`` when the database can bind it there, else stands for
        every site; one it cannot run at all is logged and left to the tick."""
        compiled: dict[str, _BoundarySql] = {}
        for view in self.views:
            if view.name not in self._timed:
                continue
            branches: dict[str, exp.Select] = {}
            found = derive(view.name, view.ast.expression)
            self.unbounded.extend(f"{view.name}: {use}" for use in found.unbounded)
            for boundary in found.boundaries:
                for site in boundary.site_candidates():
                    queries = boundary.queries(site)
                    if not all(self.backend.probe(q) for q in queries):
                        continue
                    branches.update((q.sql("risingwave"), q) for q in queries)
                    break
                else:
                    self.unbounded.append(f"{view.name}: {boundary.text}")
            if branches:
                compiled[view.name] = _BoundarySql.of(list(branches.values()), site_keyed, self.backend)
        for use in self.unbounded:
            log.warning("NOW() use with no temporal boundary, re-evaluated on the tick only: %s", use)
        return compiled

    def next_boundary(self) -> datetime | None:
        """The earliest instant after the last evaluation at which a ``NOW()`` comparison can change some
        view's rows for some site (a DR event's start or end, a rule's or tariff slot's ``valid_from`` or
        ``valid_to``, a meter turning stale), or ``None`` when the inputs name none. An evaluation at or
        after it re-runs that view for the sites concerned."""
        return self._boundaries.next_at()

    def pending_boundaries(self) -> dict[tuple[str, str | None], datetime]:
        """Every pending boundary: ``(view, site)`` (site ``None``: every site) -> the instant."""
        return self._boundaries.pending()

    def boundary_due(self, now: datetime) -> bool:
        """True when :meth:`next_boundary` is at or before ``now``."""
        due = self._boundaries.next_at()
        return due is not None and due <= now

    @property
    def input_topics(self) -> list[str]:
        return list(self.inputs)

    @property
    def output_topics(self) -> list[str]:
        return [self._topic[s.name] for s in self.sinks]

    def apply(self, records: Iterable[tuple[str, str | None, Any]]) -> int:
        """Load ``(topic, key, record)`` triples (record ``None`` = tombstone) in order; returns the count.

        On upsert tables the last record per key in the batch wins; topics with no input object are
        ignored. Each record marks the sites it touches (:class:`~pipeline.engine.partition.SiteIndex`)
        dirty for the next evaluation.
        """
        batches: dict[str, list[tuple[str | None, Any]]] = {}
        count = 0
        for topic, key, record in records:
            obj = self.inputs.get(topic)
            if obj is None:
                continue
            key = _message_key(topic, key, record)
            batches.setdefault(topic, []).append((key, record))
            count += 1
            upsert_key = TOPICS[topic].key if obj.format == "upsert" else None
            touched = self.sites.sites(obj.name, self._declared[obj.name], upsert_key, key, record)
            self._dirty[obj.name] = union(self._dirty.get(obj.name, frozenset()), touched)
        with self.lock:
            self.backend.begin()  # readers see a batch whole or not at all
            try:
                for topic, batch in batches.items():
                    obj = self.inputs[topic]
                    key_col = obj.key_column
                    deletes: list[bytes] = []
                    if obj.format == "upsert":  # keyed by the message key, as RisingWave's INCLUDE KEY column
                        latest: dict[str, Any] = {}
                        for key, record in batch:
                            if key is not None:
                                latest[key] = record
                        deletes = [k.encode() for k in latest]
                        rows: list[tuple[str | None, Any]] = [(k, r) for k, r in latest.items() if r is not None]
                    else:
                        rows = [(k, r) for k, r in batch if r is not None]
                    declared = self._declared[obj.name]
                    with_key = key_col is not None and key_col not in declared
                    values = [
                        (
                            *(_plain(getattr(r, c, None)) for c in declared),
                            *((None if k is None else k.encode(),) if with_key else ()),
                        )
                        for k, r in rows
                    ]
                    self.backend.write(obj, deletes, values)
            except BaseException:
                self.backend.rollback()
                raise
            self.backend.commit()
            for topic in batches:
                name = self.inputs[topic].name
                self.backend.note_input(name, self._dirty.get(name, ALL))
        return count

    def apply_each(
        self, records: Iterable[tuple[str, str | None, Any]]
    ) -> list[tuple[str, str | None, Any, Exception]]:
        """:meth:`apply` the batch in one transaction; if the database refuses it, apply the records one by
        one so a record it cannot store (e.g. a value outside a column's type) loses nothing else.

        Returns the refused records as ``(topic, key, record, error)``; never raises for a refused record.
        """
        batch = list(records)
        try:
            self.apply(batch)
            return []
        except Exception as exc:
            if len(batch) == 1:
                return [(*batch[0], exc)]
        refused: list[tuple[str, str | None, Any, Exception]] = []
        for item in batch:
            try:
                self.apply([item])
            except Exception as exc:
                refused.append((*item, exc))
        return refused

    def reset(self) -> None:
        """Empty every input table and forget what the sinks emitted (for what-ifs and tests)."""
        with self.lock:
            for obj in self.inputs.values():
                self.backend.clear(obj)
                self._dirty[obj.name] = ALL
                self.backend.note_input(obj.name, ALL)
        for name in self._emitted:
            self._emitted[name] = {}
            self._emitted_sites[name] = {}
        self._diffed.clear()
        self.sites.clear()
        self._boundaries.clear()

    def forget(self, topic: str, column: str, before: datetime, keep_latest_by: tuple[str, ...] = ()) -> int:
        """Delete the rows of ``topic``'s input table whose ``column`` is before ``before`` (a retention, see
        :mod:`pipeline.engine.history`), sparing the newest of each group of ``keep_latest_by`` columns; the
        next evaluation re-runs what reads them. Returns the rows deleted.

        Runs on the engine's worker thread while Postgres-wire readers may be bringing their connection up to
        date on theirs: under :attr:`lock`, as every use of the backend (DuckDB refuses a connection used
        from two threads at once)."""
        obj = self.inputs[topic]
        name = obj.name
        with self.lock:
            deleted = self.backend.delete_before(obj, column, before, keep_latest_by)
            if deleted:
                self._dirty[name] = ALL
                self.backend.note_input(name, ALL)  # the readers' mirror copies the table again
        return int(deleted)

    def assume_emitted(self, topic: str, keys: Iterable[str]) -> None:
        """Record that ``keys`` are live on a sink's ``topic`` already (from an earlier run), so the next
        evaluation re-publishes the ones still in the view and tombstones the ones that are gone."""
        sink = next(s for s in self.sinks if self._topic[s.name] == topic)
        emitted = self._emitted[sink.name]
        for key in keys:
            emitted.setdefault(key, None)  # no row equals None, so the key is diffed on the next evaluation
        self._diffed.discard(sink.name)

    def refresh(self, now: datetime, timed: bool = True) -> set[str]:
        """Bring the materialized views up to ``now``, in dependency order, in one transaction; returns
        the names of the views whose rows changed.

        Change propagates by site and by content. A view is re-run for the sites where something it
        reads changed (every site for a view without a ``site_id`` column, or for a change that cannot
        be pinned to sites), and with ``timed`` also, for every site, when it reads ``NOW()``. It passes
        on only the sites whose rows differ afterwards (row count and sum of row hashes per site), so a
        meter reading that moves no setpoint stops at the first view that does not carry it. With
        ``timed=False`` a view that reads ``NOW()`` is re-run for the dirty sites and for the sites where
        one of its temporal boundaries has passed since the last evaluation; for every other site its
        rows are the same at ``now`` as when last computed. Afterwards the boundaries of those sites are
        recomputed (:meth:`next_boundary`).
        """
        with self.lock:
            return self._refresh(now, timed)

    def _refresh(self, now: datetime, timed: bool) -> set[str]:
        self.backend.set_now(now)
        dirty = dict(self._dirty)
        due = self._boundaries.due(now)
        changed: set[str] = set()
        self.backend.begin()
        try:
            for view in self.views:
                scope: frozenset[str] | None = frozenset()
                for dep in view.depends_on:
                    if dep in dirty:
                        scope = union(scope, dirty[dep])
                if view.name in due:  # a NOW() comparison flipped for these sites since the last evaluation
                    scope = union(scope, due[view.name])
                if not self.backend.has_run(view.name) or (timed and view.name in self._timed):
                    scope = ALL
                if scope is not ALL and not scope:
                    continue
                sites = self.backend.refresh_view(view, scope)
                if sites is ALL or sites:
                    dirty[view.name] = sites
                    changed.add(view.name)
        except BaseException:
            self.backend.rollback()  # the tables are back as they were: the next refresh recomputes every view
            self._diffed.clear()
            raise
        self.backend.commit()
        self._dirty = {}
        for name in changed:  # kept for the sinks until they are diffed
            self._sink_dirty[name] = union(self._sink_dirty.get(name, frozenset()), dirty[name])
        self._update_boundaries(now, dirty, due)
        return changed

    def _update_boundaries(
        self, now: datetime, dirty: dict[str, frozenset[str] | None], due: dict[str, frozenset[str] | None]
    ) -> None:
        """Recompute the next boundaries for the sites whose boundary passed or whose inputs to the
        boundary queries changed (every site when the clock went back or an every-site one passed)."""
        went_back = self._evaluated_at is not None and now < self._evaluated_at
        self._evaluated_at = now
        for view, compiled in self._boundary_sql.items():
            scope = ALL if went_back else due.get(view, frozenset())  # held ones are after the last NOW() only
            for name in compiled.reads:
                if name in dirty:
                    scope = union(scope, dirty[name])
            if scope is ALL or (scope and compiled.partial is None):
                self._boundaries.update(view, self.backend.boundary_rows(compiled.full, ALL), ALL)
            elif scope and compiled.partial is not None:
                self._boundaries.update(view, self.backend.boundary_rows(compiled.partial, scope), scope)

    def query(self, sql: str, now: datetime | None = None) -> tuple[list[str], list[tuple]]:
        """Run a read query in DuckDB's SQL (what Postgres-wire readers run); with ``now`` the views are
        refreshed at that time first. Returns column names and rows."""
        with self.lock:
            if now is not None:
                self._refresh(now, True)
            self.backend.sync_readers()
            return self.backend.query(sql)

    def rows(self, name: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Every row of table or view ``name`` as of the last evaluation (column names and rows), read where
        the backend holds them up to date: cheaper than :meth:`query`, which first brings the readers'
        connection up to date."""
        with self.lock:
            return self.backend.rows(name, ALL)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection readers use (:meth:`Backend.read_connection`): the engine's own on
        DuckDB, a mirror brought up to date by :meth:`sync_readers` on SQLite."""
        return self.backend.read_connection()

    def sync_readers(self) -> None:
        """Bring :attr:`con` up to the last evaluation (a no-op on DuckDB); safe from any thread."""
        with self.lock:
            self.backend.sync_readers()

    def evaluate(self, now: datetime, timed: bool = True) -> list[SinkChange]:
        """Re-evaluate the sinks at ``now`` (see :meth:`refresh` for ``timed``); return upserts for new or
        changed rows and tombstones for keys that are gone, for the sites that changed. Rows that break
        their topic's contract are logged and not emitted."""
        with self.lock:
            return self._evaluate(now, timed)

    def _evaluate(self, now: datetime, timed: bool) -> list[SinkChange]:
        started = time.perf_counter()
        self.last_changed = frozenset(self._refresh(now, timed))
        changes: list[SinkChange] = []
        for sink in self.sinks:
            scope: frozenset[str] | None = frozenset()
            for dep in sink.depends_on:
                if dep in self._sink_dirty:
                    scope = union(scope, self._sink_dirty[dep])
            if sink.name not in self._diffed:
                scope = ALL
            if scope is ALL or scope:
                changes.extend(self._diff_sink(sink, scope))
        self._sink_dirty.clear()
        self.evaluations += 1
        self.last_eval_ms = (time.perf_counter() - started) * 1000
        return changes

    def _diff_sink(self, sink: SqlObject, scope: frozenset[str] | None) -> list[SinkChange]:
        self._diffed.add(sink.name)
        cols, rows = self.backend.sink_rows(sink, scope)
        key_idx = [cols.index(k) for k in sink.primary_key]
        site_idx = cols.index(SITE_COLUMN) if SITE_COLUMN in cols else None
        current = {"|".join(str(row[i]) for i in key_idx): row for row in rows}
        emitted = self._emitted[sink.name]
        by_site = self._emitted_sites.setdefault(sink.name, {})
        if scope is ALL:
            previous_keys = set(emitted)
            by_site.clear()
        else:
            previous_keys = set().union(*(by_site.pop(site, set()) for site in scope))
        topic = self._topic[sink.name]
        model = TOPICS[topic].model
        changes: list[SinkChange] = []
        for key, row in current.items():
            by_site.setdefault(None if site_idx is None else row[site_idx], set()).add(key)
            if emitted.get(key) == row:
                continue
            emitted[key] = row
            value = dict(zip(cols, row, strict=True))
            try:
                payload = encode(model.model_validate(value))
            except ValueError as exc:
                log.error("sink %s: row %s breaks the %s contract: %s", sink.name, key, topic, exc)
                continue
            changes.append(SinkChange(topic, key, payload))
        for key in previous_keys - current.keys():
            emitted.pop(key, None)
            changes.append(SinkChange(topic, key, None))
        return changes

    def close(self) -> None:
        """Close the backend's connections, once an evaluation still running on another thread is done."""
        with self.lock:
            self.backend.close()


__all__ = ["DEFAULT_BACKEND", "QUERY_SUFFIX", "EmbeddedEngine", "RecordError", "SinkChange", "duckdb_ddl", "to_duckdb"]
