"""The embedded engine: the same ``sql/`` run by DuckDB in-process, for one machine, demos and tests.

RisingWave maintains materialized views incrementally; this engine does not pretend to. It is honest
micro-batch recompute:

* tables and sources become DuckDB tables fed from the transport (upsert tables by the Kafka message
  key, held as RisingWave holds it: the ``INCLUDE KEY AS`` column, the key's bytes, is the primary key,
  and a tombstone deletes its row; append topics as inserts);
* materialized views are transpiled by sqlglot (``risingwave`` in, ``duckdb`` out), with ``NOW()``
  bound to the engine clock so temporal filters fire at the clock's time. Each becomes a query view
  (``<name>__query``) and a table ``<name>`` that every evaluation refreshes in dependency order, so a
  view is planned once per evaluation however many views read it, and readers see one consistent
  snapshot; CTEs read more than once are materialized for the same reason;
* evaluation is partitioned by site (:mod:`pipeline.engine.partition`): a batch that touches one site
  re-runs each view for that site only, and a view whose rows for a site did not change (compared by
  row count and the sum of row hashes per site) stops the change there. A *tick* (``timed=True``)
  re-runs the views that read ``NOW()`` for every site, and passes on only the sites whose rows moved;
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
from pipeline.engine.boundaries import AT_COLUMN, BoundarySchedule, derive, is_now
from pipeline.engine.partition import ALL, SITE_COLUMN, SITES_PARAM, SiteIndex, restrict, union
from pipeline.sqlmodel.objects import DEFAULT_SQL_DIR, SqlError, SqlObject, load_objects, upsert_key_problem

log = logging.getLogger(__name__)

#: What a view's rows for one site are compared by: (row count, sum of row hashes), as DuckDB returns it.
Digest = tuple[Any, ...] | None

NOW_VARIABLE = "pipeline_now"


@dataclass(frozen=True)
class SinkChange:
    """One record a sink emits: ``value is None`` is a tombstone for ``key``."""

    topic: str
    key: str
    value: bytes | None


def _bind_now(node: exp.Expr) -> exp.Expr:
    if is_now(node):
        return exp.cast(
            exp.Anonymous(this="getvariable", expressions=[exp.Literal.string(NOW_VARIABLE)]),
            exp.DataType.build("TIMESTAMPTZ"),
        )
    return node


def _bind_now_in(query: exp.Select) -> exp.Select:
    """``query`` (changed in place) with every ``NOW()`` bound to the engine clock."""
    for node in list(query.find_all(exp.CurrentTimestamp, exp.Anonymous)):
        if is_now(node):
            node.replace(_bind_now(node))
    return query


QUERY_SUFFIX = "__query"


def duckdb_query(obj: SqlObject, site_relations: set[str] | None = None) -> str:
    """The DuckDB form of a view's query: ``NOW()`` bound to the engine clock, and every CTE that is
    read more than once materialized (DuckDB would otherwise inline it at each reference). With
    ``site_relations``, reads of those relations are restricted to the sites in ``$dirty_sites``."""
    body = obj.ast.expression.copy().transform(_bind_now)
    if site_relations:
        body = restrict(body, site_relations)
    reads: dict[str, int] = {}
    for table in body.find_all(exp.Table):
        reads[table.name] = reads.get(table.name, 0) + 1
    for cte in body.find_all(exp.CTE):
        cte.set("materialized", reads.get(cte.alias, 0) > 1)
    return body.sql("duckdb")


def to_duckdb(obj: SqlObject) -> str:
    """The DuckDB DDL for one object: a table for tables and sources, the ``<name>__query`` view for
    views (the engine keeps the table ``<name>`` refreshed from it). Sinks have none.

    Raises :class:`SqlError` when the object has no DuckDB form.
    """
    if obj.kind in ("table", "source"):
        schema = obj.ast.this.copy()
        unsupported = [name for name in obj.included if name != "KEY"]
        if unsupported:
            raise SqlError(f"{obj.path}: the embedded engine fills only INCLUDE KEY, not INCLUDE {unsupported[0]}")
        key = obj.key_column
        if key is not None and key not in obj.columns:  # RisingWave adds it after the declared columns
            last = max(i for i, e in enumerate(schema.expressions) if isinstance(e, exp.ColumnDef))
            schema.expressions.insert(
                last + 1, exp.ColumnDef(this=exp.to_identifier(key), kind=exp.DataType.build("BLOB", dialect="duckdb"))
            )
        return exp.Create(this=schema, kind="TABLE", exists=True).sql("duckdb")
    if obj.kind in ("materialized_view", "view"):
        return f"CREATE OR REPLACE VIEW {obj.name}{QUERY_SUFFIX} AS {duckdb_query(obj)}"
    raise SqlError(f"{obj.path}: a {obj.kind} has no DuckDB DDL")


def duckdb_ddl(obj: SqlObject) -> list[str]:
    """Every DuckDB statement that creates ``obj`` as the engine runs it: a table for tables and
    sources; for views the ``<name>__query`` view and the ``<name>`` table refreshed from it; none for
    sinks. Raises :class:`SqlError` when the object has no DuckDB form."""
    if obj.kind == "sink":
        return []
    ddl = [to_duckdb(obj)]
    if obj.kind in ("materialized_view", "view"):
        ddl.append(f"CREATE OR REPLACE TABLE {obj.name} AS SELECT * FROM {obj.name}{QUERY_SUFFIX} LIMIT 0")
    return ddl


@dataclass(frozen=True)
class _BoundarySql:
    """One view's boundary query (``site_id``, ``boundary_at``: the next instant per site after the bound
    ``NOW()``) over every site and restricted to ``$dirty_sites`` (``None`` when it reads no site-keyed
    relation), and the relations it reads."""

    full: str
    partial: str | None
    reads: frozenset[str]

    @classmethod
    def of(cls, branches: list[exp.Select], site_keyed: set[str]) -> _BoundarySql:
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
            .where(exp.GT(this=at, expression=_bind_now(exp.CurrentTimestamp())))
            .group_by(SITE_COLUMN)
        )
        partial = restrict(query, site_keyed).sql("duckdb") if reads & site_keyed else None
        return cls(query.sql("duckdb"), partial, frozenset(reads))


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
    """DuckDB over ``sql/``.

    ``apply`` loads decoded topic records; ``evaluate(now)`` binds ``NOW()`` to ``now`` and returns the
    sinks' changes since the previous evaluation. Not thread-safe; one asyncio task drives it.
    """

    def __init__(self, sql_dir: str | Path = DEFAULT_SQL_DIR, database: str = ":memory:") -> None:
        self.objects = load_objects(sql_dir)
        self.con = duckdb.connect(database)
        self.con.execute("SET TimeZone = 'UTC'")
        self.inputs: dict[str, SqlObject] = {}
        self.views: list[SqlObject] = []
        self.sinks: list[SqlObject] = []
        self._emitted: dict[str, dict[str, tuple[Any, ...] | None]] = {}  # per sink: key -> row (None: unknown)
        self._emitted_sites: dict[str, dict[str | None, set[str]]] = {}  # per sink: site -> keys emitted
        self._dirty: dict[str, frozenset[str] | None] = {}  # object -> sites whose rows changed (ALL = every site)
        self._timed: set[str] = set()  # views that read NOW() themselves
        # per view: site (None: a view without sites, or rows without one) -> (row count, sum of row hashes)
        self._digest: dict[str, dict[str | None, Digest]] = {}
        self._diffed: set[str] = set()  # sinks diffed at least once
        self._sink_dirty: dict[str, frozenset[str] | None] = {}  # views changed since the sinks were diffed
        self._partial_sql: dict[str, str] = {}  # per site-keyed view: its query restricted to $dirty_sites
        self.sites = SiteIndex()
        self.evaluations = 0
        self.last_eval_ms = 0.0
        self._columns: dict[str, list[str]] = {}
        self._insert_sql: dict[str, str] = {}  # per input table: an INSERT of column lists
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
            for statement in duckdb_ddl(obj):
                self.con.execute(statement)
            if obj.kind in ("materialized_view", "view"):
                self.views.append(obj)
                if _reads_now(obj):
                    self._timed.add(obj.name)
                self._columns[obj.name] = [r[0] for r in self.con.execute(f"DESCRIBE {obj.name}").fetchall()]
            if obj.kind in ("table", "source"):
                if not topic:
                    raise SqlError(f"{obj.path}: a {obj.kind} needs a topic in its WITH clause")
                if topic not in TOPICS:
                    raise SqlError(f"{obj.path}: topic {topic!r} has no contract in pipeline.contracts.topics")
                problem = upsert_key_problem(obj)
                if problem:
                    raise SqlError(f"{obj.path}: {problem}")
                self.inputs[topic] = obj
                self._topic[obj.name] = topic
                stored = obj.stored_columns
                self._columns[obj.name] = stored
                types = dict(self.con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {obj.name})").fetchall())
                quoted = ", ".join(f'"{c}"' for c in stored)
                lists = ", ".join(f"unnest(${i}::{types[c]}[])" for i, c in enumerate(stored, 1))
                self._insert_sql[obj.name] = f"INSERT INTO {obj.name} ({quoted}) SELECT {lists}"
        site_keyed = {name for name, cols in self._columns.items() if SITE_COLUMN in cols}
        for view in self.views:
            if view.name in site_keyed:
                self._partial_sql[view.name] = duckdb_query(view, site_keyed)
        self.unbounded: list[str] = []  # NOW() uses with no boundary (the tick covers them), as "view: SQL"
        self._boundaries = BoundarySchedule()
        self._boundary_sql = self._compile_boundaries(site_keyed)
        self._evaluated_at: datetime | None = None  # the NOW() of the last refresh

    def _compile_boundaries(self, site_keyed: set[str]) -> dict[str, _BoundarySql]:
        """Per timed view, the query of its next boundary per site (:mod:`pipeline.engine.boundaries`). Each
        comparison reads its relation's ``site_id`` when DuckDB can bind it there, else stands for every
        site; one DuckDB cannot run at all is logged and left to the tick."""
        compiled: dict[str, _BoundarySql] = {}
        for view in self.views:
            if view.name not in self._timed:
                continue
            branches: dict[str, exp.Select] = {}
            found = derive(view.name, view.ast.expression)
            self.unbounded.extend(f"{view.name}: {use}" for use in found.unbounded)
            for boundary in found.boundaries:
                for site in boundary.site_candidates():
                    queries = [_bind_now_in(q) for q in boundary.queries(site)]
                    try:
                        for q in queries:
                            self.con.execute(f"SELECT * FROM ({q.sql('duckdb')}) AS probe LIMIT 0")
                    except duckdb.Error:
                        continue
                    branches.update((q.sql("duckdb"), q) for q in queries)
                    break
                else:
                    self.unbounded.append(f"{view.name}: {boundary.text}")
            if branches:
                compiled[view.name] = _BoundarySql.of(list(branches.values()), site_keyed)
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
            touched = self.sites.sites(obj.name, obj.columns, upsert_key, key, record)
            self._dirty[obj.name] = union(self._dirty.get(obj.name, frozenset()), touched)
        self.con.execute("BEGIN")  # readers (Postgres wire) see a batch whole or not at all
        try:
            for topic, batch in batches.items():
                obj = self.inputs[topic]
                key_col = obj.key_column
                if obj.format == "upsert":  # keyed by the message key, as RisingWave's INCLUDE KEY column
                    latest: dict[str, Any] = {}
                    for key, record in batch:
                        if key is not None:
                            latest[key] = record
                    self.con.execute(
                        f"DELETE FROM {obj.name} WHERE {key_col} IN (SELECT unnest(?::BLOB[]))",
                        [[k.encode() for k in latest]],
                    )
                    rows: list[tuple[str | None, Any]] = [(k, r) for k, r in latest.items() if r is not None]
                else:
                    rows = [(k, r) for k, r in batch if r is not None]
                if rows:  # one statement per table, columns as lists: executemany costs ~2 ms a row
                    lists = [[_plain(getattr(r, c, None)) for _, r in rows] for c in obj.columns]
                    if key_col is not None and key_col not in obj.columns:
                        lists.append([None if k is None else k.encode() for k, _ in rows])
                    self.con.execute(self._insert_sql[obj.name], lists)
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")
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
        for obj in self.inputs.values():
            self.con.execute(f"DELETE FROM {obj.name}")
            self._dirty[obj.name] = ALL
        for name in self._emitted:
            self._emitted[name] = {}
            self._emitted_sites[name] = {}
        self._diffed.clear()
        self.sites.clear()
        self._boundaries.clear()

    def forget(self, topic: str, column: str, before: datetime) -> int:
        """Delete the rows of ``topic``'s input table whose ``column`` is before ``before`` (a retention, see
        :mod:`pipeline.engine.history`); the next evaluation re-runs what reads them. Returns the rows deleted."""
        name = self.inputs[topic].name
        (deleted,) = self.con.execute(f'DELETE FROM {name} WHERE "{column}" < ?', [before]).fetchone() or (0,)
        if deleted:
            self._dirty[name] = ALL
        return int(deleted)

    def assume_emitted(self, topic: str, keys: Iterable[str]) -> None:
        """Record that ``keys`` are live on a sink's ``topic`` already (from an earlier run), so the next
        evaluation re-publishes the ones still in the view and tombstones the ones that are gone."""
        sink = next(s for s in self.sinks if self._topic[s.name] == topic)
        emitted = self._emitted[sink.name]
        for key in keys:
            emitted.setdefault(key, None)  # no row equals None, so the key is diffed on the next evaluation
        self._diffed.discard(sink.name)

    def set_now(self, now: datetime) -> None:
        self.con.execute(f"SET VARIABLE {NOW_VARIABLE} = ?::TIMESTAMPTZ", [now])

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
        self.set_now(now)
        dirty = dict(self._dirty)
        due = self._boundaries.due(now)
        changed: set[str] = set()
        self.con.execute("BEGIN")
        try:
            for view in self.views:
                scope: frozenset[str] | None = frozenset()
                for dep in view.depends_on:
                    if dep in dirty:
                        scope = union(scope, dirty[dep])
                if view.name in due:  # a NOW() comparison flipped for these sites since the last evaluation
                    scope = union(scope, due[view.name])
                if view.name not in self._digest or (timed and view.name in self._timed):
                    scope = ALL
                if scope is not ALL and not scope:
                    continue
                sites = self._refresh_view(view, scope)
                if sites is ALL or sites:
                    dirty[view.name] = sites
                    changed.add(view.name)
        except BaseException:
            self.con.execute("ROLLBACK")
            self._digest.clear()  # the tables are back as they were: the next refresh recomputes every view
            self._diffed.clear()
            raise
        self.con.execute("COMMIT")
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
                self._boundaries.update(view, self.con.execute(compiled.full).fetchall(), ALL)
            elif scope and compiled.partial is not None:
                rows = self.con.execute(compiled.partial, {SITES_PARAM: sorted(scope)}).fetchall()
                self._boundaries.update(view, rows, scope)

    def _refresh_view(self, view: SqlObject, scope: frozenset[str] | None) -> frozenset[str] | None:
        """Re-run ``view`` for ``scope`` (``ALL`` = every site) and return the sites whose rows changed
        (``ALL`` when a view without sites changed at all)."""
        name = view.name
        known = self._digest.get(name, {})
        if name not in self._partial_sql:  # no site column: all or nothing
            self.con.execute(f"DELETE FROM {name}")
            self.con.execute(f"INSERT INTO {name} SELECT * FROM {name}{QUERY_SUFFIX}")
            digest: dict[str | None, Digest] = {
                ALL: self.con.execute(f"SELECT count(*), sum(hash(v)) FROM {name} AS v").fetchone()
            }
            self._digest[name] = digest
            return ALL if digest != known else frozenset()
        digest_sql = f"SELECT {SITE_COLUMN}, count(*), sum(hash(v)) FROM {name} AS v"
        if scope is ALL:
            self.con.execute(f"DELETE FROM {name}")
            self.con.execute(f"INSERT INTO {name} SELECT * FROM {name}{QUERY_SUFFIX}")
            rows = self.con.execute(f"{digest_sql} GROUP BY {SITE_COLUMN}").fetchall()
            digest = {site: (count, total) for site, count, total in rows}
            self._digest[name] = digest
            moved = {site for site in digest.keys() | known.keys() if digest.get(site) != known.get(site)}
            return ALL if None in moved else frozenset(site for site in moved if site is not None)
        params = {SITES_PARAM: sorted(scope)}
        in_scope = f"{SITE_COLUMN} IN (SELECT unnest(${SITES_PARAM}))"
        self.con.execute(f"DELETE FROM {name} WHERE {in_scope}", params)
        self.con.execute(f"INSERT INTO {name} {self._partial_sql[name]}", params)
        rows = self.con.execute(f"{digest_sql} WHERE {in_scope} GROUP BY {SITE_COLUMN}", params).fetchall()
        digest = dict(known)
        for site in scope:
            digest.pop(site, None)
        digest.update({site: (count, total) for site, count, total in rows})
        self._digest[name] = digest
        return frozenset(site for site in scope if digest.get(site) != known.get(site))

    def query(self, sql: str, now: datetime | None = None) -> tuple[list[str], list[tuple]]:
        """Run a read query; with ``now`` the views are refreshed at that time first. Returns column
        names and rows."""
        if now is not None:
            self.refresh(now)
        cur = self.con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()

    def evaluate(self, now: datetime, timed: bool = True) -> list[SinkChange]:
        """Re-evaluate the sinks at ``now`` (see :meth:`refresh` for ``timed``); return upserts for new or
        changed rows and tombstones for keys that are gone, for the sites that changed. Rows that break
        their topic's contract are logged and not emitted."""
        started = time.perf_counter()
        self.refresh(now, timed)
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
        select = sink.ast.expression.sql("duckdb")
        if scope is ALL:
            cur = self.con.execute(select)
        else:
            cur = self.con.execute(
                f"SELECT * FROM ({select}) AS s WHERE {SITE_COLUMN} IN (SELECT unnest(?))", [sorted(scope)]
            )
        cols = [d[0] for d in cur.description]
        key_idx = [cols.index(k) for k in sink.primary_key]
        site_idx = cols.index(SITE_COLUMN) if SITE_COLUMN in cols else None
        current = {"|".join(str(row[i]) for i in key_idx): row for row in cur.fetchall()}
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
        self.con.close()


__all__ = ["EmbeddedEngine", "RecordError", "SinkChange", "duckdb_ddl", "to_duckdb"]
