"""The embedded engine: the same ``sql/`` run by DuckDB in-process, for one machine, demos and tests.

RisingWave maintains materialized views incrementally; this engine does not pretend to. It is honest
micro-batch recompute:

* tables and sources become DuckDB tables fed from the transport (upsert topics by primary key, with
  tombstones as deletes; append topics as inserts);
* materialized views are transpiled by sqlglot (``risingwave`` in, ``duckdb`` out), with ``NOW()``
  bound to the engine clock so temporal filters fire at the clock's time. Each becomes a query view
  (``<name>__query``) and a table ``<name>`` that every evaluation refreshes in dependency order, so a
  view is planned once per evaluation however many views read it, and readers see one consistent
  snapshot; CTEs read more than once are materialized for the same reason;
* each evaluation queries every sink and emits only the rows that changed since the last evaluation:
  upserts, and tombstones for keys that left.

Its cost is a full evaluation per micro-batch; the README gives measured figures.
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

from pipeline.sqlobjects import DEFAULT_SQL_DIR, SqlError, SqlObject, load_objects
from pipeline.topics import TOPICS, RecordError, encode

log = logging.getLogger(__name__)

NOW_VARIABLE = "pipeline_now"


@dataclass(frozen=True)
class SinkChange:
    """One record a sink emits: ``value is None`` is a tombstone for ``key``."""

    topic: str
    key: str
    value: bytes | None


def _is_now(node: exp.Expression) -> bool:
    return isinstance(node, exp.CurrentTimestamp) or (isinstance(node, exp.Anonymous) and node.name.upper() == "NOW")


def _bind_now(node: exp.Expression) -> exp.Expression:
    if _is_now(node):
        return exp.cast(
            exp.Anonymous(this="getvariable", expressions=[exp.Literal.string(NOW_VARIABLE)]),
            exp.DataType.build("TIMESTAMPTZ"),
        )
    return node


QUERY_SUFFIX = "__query"


def duckdb_query(obj: SqlObject) -> str:
    """The DuckDB form of a view's query: ``NOW()`` bound to the engine clock, and every CTE that is
    read more than once materialized (DuckDB would otherwise inline it at each reference)."""
    body = obj.ast.expression.copy().transform(_bind_now)
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


def _reads_now(obj: SqlObject) -> bool:
    return any(_is_now(node) for node in obj.ast.expression.find_all(exp.Func))


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
        self._emitted: dict[str, dict[str, tuple]] = {}
        self._dirty: set[str] = set()  # objects whose rows changed since their last refresh
        self._timed: set[str] = set()  # views that read NOW() themselves
        self._digest: dict[str, tuple] = {}  # per view: (row count, sum of row hashes) after its last refresh
        self._diffed: set[str] = set()  # sinks diffed at least once
        self.evaluations = 0
        self.last_eval_ms = 0.0
        for obj in self.objects:
            if obj.kind == "sink":
                if not obj.topic or not obj.primary_key or obj.topic not in TOPICS:
                    raise SqlError(f"{obj.path}: a sink needs primary_key and a topic with a contract")
                self.sinks.append(obj)
                self._emitted[obj.name] = {}
                continue
            for statement in duckdb_ddl(obj):
                self.con.execute(statement)
            if obj.kind in ("materialized_view", "view"):
                self.views.append(obj)
                if _reads_now(obj):
                    self._timed.add(obj.name)
            if obj.kind in ("table", "source"):
                if not obj.topic:
                    raise SqlError(f"{obj.path}: a {obj.kind} needs a topic in its WITH clause")
                if obj.topic not in TOPICS:
                    raise SqlError(f"{obj.path}: topic {obj.topic!r} has no contract in pipeline.topics")
                self.inputs[obj.topic] = obj

    @property
    def input_topics(self) -> list[str]:
        return list(self.inputs)

    @property
    def output_topics(self) -> list[str]:
        return [s.topic for s in self.sinks]

    def apply(self, records: Iterable[tuple[str, str | None, Any]]) -> int:
        """Load ``(topic, key, record)`` triples (record ``None`` = tombstone) in order; returns the count.

        On upsert tables the last record per key in the batch wins; topics with no input object are
        ignored.
        """
        batches: dict[str, list[tuple[str | None, Any]]] = {}
        count = 0
        for topic, key, record in records:
            if topic in self.inputs:
                batches.setdefault(topic, []).append((key, record))
                count += 1
        for topic, batch in batches.items():
            obj = self.inputs[topic]
            self._dirty.add(obj.name)
            cols = obj.columns
            placeholders = ", ".join("?" for _ in cols)
            quoted = ", ".join(f'"{c}"' for c in cols)
            insert = f"INSERT INTO {obj.name} ({quoted}) VALUES ({placeholders})"
            if obj.format == "upsert":
                (pk,) = obj.primary_key
                latest: dict[str, Any] = {}
                for key, record in batch:
                    latest[key if record is None else str(getattr(record, pk))] = record
                self.con.execute(f"DELETE FROM {obj.name} WHERE {pk} IN (SELECT unnest(?))", [list(latest)])
                rows = [r for r in latest.values() if r is not None]
            else:
                rows = [r for _, r in batch if r is not None]
            if rows:
                self.con.executemany(insert, [[_plain(getattr(r, c, None)) for c in cols] for r in rows])
        return count

    def reset(self) -> None:
        """Empty every input table and forget what the sinks emitted (for what-ifs and tests)."""
        for obj in self.inputs.values():
            self.con.execute(f"DELETE FROM {obj.name}")
            self._dirty.add(obj.name)
        for name in self._emitted:
            self._emitted[name] = {}
        self._diffed.clear()

    def assume_emitted(self, topic: str, keys: Iterable[str]) -> None:
        """Record that ``keys`` are live on a sink's ``topic`` already (from an earlier run), so the next
        evaluation re-publishes the ones still in the view and tombstones the ones that are gone."""
        sink = next(s for s in self.sinks if s.topic == topic)
        emitted = self._emitted[sink.name]
        for key in keys:
            emitted.setdefault(key, None)  # no row equals None, so the key is diffed on the next evaluation
        self._diffed.discard(sink.name)

    def set_now(self, now: datetime) -> None:
        self.con.execute(f"SET VARIABLE {NOW_VARIABLE} = ?::TIMESTAMPTZ", [now])

    def refresh(self, now: datetime) -> set[str]:
        """Bring the materialized views up to ``now``, in dependency order, in one transaction; returns
        the names of the views whose rows changed.

        Change propagates by content: a view is recomputed when it reads ``NOW()`` or when a table or
        view it reads changed, and it counts as changed only if its rows differ afterwards (compared by
        row count and the sum of row hashes). A meter reading that moves no setpoint so stops at the
        first view that does not carry the reading.
        """
        self.set_now(now)
        dirty = set(self._dirty)
        changed: set[str] = set()
        self.con.execute("BEGIN")
        try:
            for view in self.views:
                known = self._digest.get(view.name)
                if known is not None and view.name not in self._timed and not (view.depends_on & dirty):
                    continue
                self.con.execute(f"DELETE FROM {view.name}")
                self.con.execute(f"INSERT INTO {view.name} SELECT * FROM {view.name}{QUERY_SUFFIX}")
                digest = self.con.execute(f"SELECT count(*), sum(hash(v)) FROM {view.name} AS v").fetchone()
                if digest != known:
                    self._digest[view.name] = digest
                    dirty.add(view.name)
                    changed.add(view.name)
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")
        self._dirty.clear()
        return changed

    def query(self, sql: str, now: datetime | None = None) -> tuple[list[str], list[tuple]]:
        """Run a read query; with ``now`` the views are refreshed at that time first. Returns column
        names and rows."""
        if now is not None:
            self.refresh(now)
        cur = self.con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()

    def evaluate(self, now: datetime) -> list[SinkChange]:
        """Re-evaluate every sink at ``now``; return upserts for new or changed rows and tombstones for
        keys that are gone. Rows that break their topic's contract are logged and not emitted."""
        started = time.perf_counter()
        changed = self.refresh(now)
        changes: list[SinkChange] = []
        for sink in self.sinks:
            if sink.name in self._diffed and not (sink.depends_on & changed):
                continue
            self._diffed.add(sink.name)
            cols, rows = self.query(sink.ast.expression.sql("duckdb"))
            key_idx = [cols.index(k) for k in sink.primary_key]
            current = {"|".join(str(row[i]) for i in key_idx): row for row in rows}
            previous = self._emitted[sink.name]
            model = TOPICS[sink.topic].model
            for key, row in current.items():
                if previous.get(key) == row:
                    continue
                value = dict(zip(cols, row, strict=True))
                try:
                    payload = encode(model.model_validate(value))
                except ValueError as exc:
                    log.error("sink %s: row %s breaks the %s contract: %s", sink.name, key, sink.topic, exc)
                    continue
                changes.append(SinkChange(sink.topic, key, payload))
            for key in previous.keys() - current.keys():
                changes.append(SinkChange(sink.topic, key, None))
            self._emitted[sink.name] = current
        self.evaluations += 1
        self.last_eval_ms = (time.perf_counter() - started) * 1000
        return changes

    def close(self) -> None:
        self.con.close()


__all__ = ["EmbeddedEngine", "RecordError", "SinkChange", "duckdb_ddl", "to_duckdb"]
