"""The SQLite adapter of the embedded engine (:mod:`pipeline.engine.backend`): stdlib ``sqlite3``, in memory.

Why: DuckDB binds and plans every statement afresh (~5 ms each, ~150 ms for the view chain), whatever
the rows; SQLite runs a cached statement over a site's few rows in tens of microseconds. So a one-site
evaluation costs what the site's rows cost.

The views are transpiled by sqlglot (``risingwave`` in, ``sqlite`` out) with these general rewrites,
none of which names a view:

* timestamps are integers, microseconds since the Unix epoch (exact, so ``+ 1 microsecond`` boundaries
  and equality hold); ``NOW()`` is the statement parameter ``:now``; an ``INTERVAL`` literal is its
  length in microseconds (fixed-length units only: a month has none); a cast to a timestamp type is
  dropped (of a string literal: the literal's instant); ``EXTRACT(EPOCH FROM x)`` is ``x / 1e6``;
* ``GREATEST``/``LEAST`` ignore NULLs as in PostgreSQL (sqlglot's ``sqlite`` dialect writes
  ``MAX(COALESCE(a, b), COALESCE(b, a))``: SQLite's multi-argument ``MAX`` is NULL if any argument is);
* ``(VALUES ...) AS t (a, b)`` (SQLite cannot name a ``VALUES`` list's columns) becomes a ``UNION ALL``
  of ``SELECT``\\ s naming them;
* the site filter of a partial evaluation (:func:`pipeline.engine.partition.restrict`) reads a table of
  the dirty sites;
* each top-level CTE is a table (``<view>__<cte>``) filled before the view's own query, with an index on
  every column a join looks up in it: SQLite would otherwise re-run a CTE at each reference and join to
  it by nested loops. Every relation gets an index on each column joins look up and on ``site_id``;
* a CTE read once, by a query with window functions, gets ``LIMIT -1 OFFSET 0`` when it has none of its
  own, so SQLite runs it once per row instead of flattening its expressions into every window argument
  (:func:`pipeline.engine.sqlite_sql._fence`).

Which sites' rows moved is decided exactly: the rows of the evaluated sites before and after are
compared with ``EXCEPT`` both ways (and counted per site).

Types are DuckDB's: a DuckDB database with the same DDL (:func:`pipeline.engine.duckdb_backend.duckdb_ddl`)
gives each column's type (timestamps and booleans are converted back on the way out) and is also the
read mirror: :meth:`SQLiteBackend.sync_readers` copies into it the rows of the sites that changed since
the last sync, so Postgres-wire readers run DuckDB's SQL on the same data. Nothing is copied until a
reader attaches (:meth:`SQLiteBackend.read_connection`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
from sqlglot import exp

from pipeline.engine.backend import Backend, Scope, retention_delete
from pipeline.engine.duckdb_backend import duckdb_ddl
from pipeline.engine.partition import ALL, SITE_COLUMN, union
from pipeline.engine.sqlite_sql import (
    DIRTY_TABLE,
    EPOCH,
    NOW_PARAM,
    OLD_SUFFIX,
    _compiled,
    _in,
    _out,
    _Piece,
    _restrict,
    _sqlite_type,
    from_us,
    interval_us,
    to_sqlite,
    to_us,
)
from pipeline.sqlmodel.objects import SqlError, SqlObject

__all__ = ["NOW_PARAM", "SQLiteBackend", "from_us", "interval_us", "to_sqlite", "to_us"]


class SQLiteBackend(Backend):
    """In-memory SQLite (stdlib ``sqlite3``), with a DuckDB database of the same DDL for types and readers.

    ``catalog``: a DuckDB connection whose tables and views someone else creates (the hybrid adapter's);
    without one the adapter keeps its own.
    """

    name = "sqlite"

    def __init__(self, catalog: duckdb.DuckDBPyConnection | None = None) -> None:
        self.con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, cached_statements=4096)
        self.con.execute("PRAGMA temp_store = MEMORY")
        self.con.execute(f"CREATE TEMP TABLE {DIRTY_TABLE} ({SITE_COLUMN} TEXT PRIMARY KEY)")
        self._own_catalog = catalog is None
        if catalog is None:
            catalog = duckdb.connect(":memory:")
            catalog.execute("SET TimeZone = 'UTC'")
        self.catalog = catalog
        self._dirty_held: frozenset[str] | None = frozenset()  # what DIRTY_TABLE holds (None: unknown)
        self._now = 0
        self._types: dict[str, dict[str, str]] = {}  # relation -> column -> DuckDB type
        self._insert: dict[str, tuple[str, list[Callable[[Any], Any] | None]]] = {}
        self._full: dict[str, list[_Piece]] = {}
        self._partial: dict[str, list[_Piece]] = {}
        self._diff_sql: dict[str, tuple[str, str]] = {}  # per view: (every site, dirty sites)
        self._ran: set[str] = set()
        self._sink_out: dict[str, list[Callable[[Any], Any] | None]] = {}
        self._sink_sql: dict[str, tuple[str, str]] = {}  # per sink: its query (every site, dirty sites)
        self._pending: dict[str, Scope] | None = None  # read mirror: relation -> sites to copy (None: off)
        self._mirror_insert: dict[str, str] = {}

    # -- schema ------------------------------------------------------------------------------------
    def _describe(self, name: str) -> dict[str, str]:
        types = dict(self.catalog.execute(f"SELECT column_name, column_type FROM (DESCRIBE {name})").fetchall())
        self._types[name] = types
        return types

    def _create_table(self, name: str, types: dict[str, str]) -> None:
        columns = ", ".join(f'"{c}" {_sqlite_type(t)}' for c, t in types.items())
        self.con.execute(f'CREATE TABLE "{name}" ({columns})')

    def _catalog_ddl(self, obj: SqlObject) -> None:
        if self._own_catalog:
            for statement in duckdb_ddl(obj):
                self.catalog.execute(statement)

    def create_input(self, obj: SqlObject) -> None:
        self._catalog_ddl(obj)
        types = self._describe(obj.name)
        self._create_table(obj.name, types)
        stored = obj.stored_columns
        quoted = ", ".join(f'"{c}"' for c in stored)
        marks = ", ".join("?" for _ in stored)
        self._insert[obj.name] = (
            f'INSERT INTO "{obj.name}" ({quoted}) VALUES ({marks})',
            [_in(types[c]) for c in stored],
        )
        if obj.key_column is not None:
            self.con.execute(f'CREATE INDEX "{obj.name}__key" ON "{obj.name}" ("{obj.key_column}")')

    def create_view(self, obj: SqlObject) -> list[str]:
        self._catalog_ddl(obj)
        types = self._describe(obj.name)
        pieces = _compiled(obj)
        try:
            for piece in pieces[:-1]:
                self.con.execute(
                    f'CREATE TABLE "{piece.table}" AS SELECT * FROM ({piece.select}) LIMIT 0', {NOW_PARAM: 0}
                )
            self._create_table(obj.name, types)
            self.con.execute(f'CREATE TABLE "{obj.name}{OLD_SUFFIX}" AS SELECT * FROM "{obj.name}" LIMIT 0')
            self.con.execute(f"SELECT * FROM ({pieces[-1].select}) LIMIT 0", {NOW_PARAM: 0})
        except sqlite3.Error as exc:
            raise SqlError(f"{obj.path}: SQLite cannot run this view: {exc}") from exc
        self._full[obj.name] = pieces
        return list(types)

    def prepare(self, views: Sequence[SqlObject], site_keyed: set[str]) -> None:
        keys: set[tuple[str, str]] = set()
        for view in views:
            if view.name in site_keyed:
                self._partial[view.name] = _compiled(view, site_keyed)
                in_scope = f" WHERE {SITE_COLUMN} IN (SELECT {SITE_COLUMN} FROM {DIRTY_TABLE})"
                self._diff_sql[view.name] = (self._diff(view.name, ""), self._diff(view.name, in_scope))
            for piece in self._full[view.name] + self._partial.get(view.name, []):
                keys |= piece.keys
        keys |= {(name, SITE_COLUMN) for name in site_keyed}
        tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, column in sorted(keys):
            if table not in tables:
                continue
            columns = {r[1] for r in self.con.execute(f'PRAGMA table_info("{table}")')}
            if column in columns:
                self.con.execute(f'CREATE INDEX IF NOT EXISTS "{table}__{column}" ON "{table}" ("{column}")')

    @staticmethod
    def _diff(name: str, where: str) -> str:
        """The sites whose rows differ between ``name`` (restricted by ``where``) and ``name__old``: as
        sets both ways, and by count."""
        new, old = f'SELECT * FROM "{name}"{where}', f'SELECT * FROM "{name}{OLD_SUFFIX}"'
        site = SITE_COLUMN
        counts_new = f'SELECT {site}, count(*) FROM "{name}"{where} GROUP BY {site}'
        counts_old = f'SELECT {site}, count(*) FROM "{name}{OLD_SUFFIX}" GROUP BY {site}'
        return (
            f"SELECT {site} FROM ({new} EXCEPT {old}) UNION SELECT {site} FROM ({old} EXCEPT {new}) "
            f"UNION SELECT {site} FROM ({counts_new} EXCEPT {counts_old}) "
            f"UNION SELECT {site} FROM ({counts_old} EXCEPT {counts_new})"
        )

    # -- writes ------------------------------------------------------------------------------------
    def write(self, obj: SqlObject, delete_keys: Sequence[bytes], rows: Sequence[tuple[Any, ...]]) -> None:
        if delete_keys:
            self.con.executemany(f'DELETE FROM "{obj.name}" WHERE "{obj.key_column}" = ?', [(k,) for k in delete_keys])
        if rows:
            sql, convert = self._insert[obj.name]
            if any(convert):
                rows = [
                    tuple(v if f is None or v is None else f(v) for f, v in zip(convert, row, strict=True))
                    for row in rows
                ]
            self.con.executemany(sql, rows)

    def delete_before(self, obj: SqlObject, column: str, before: datetime, keep_latest_by: tuple[str, ...] = ()) -> int:
        sql = retention_delete(f'"{obj.name}"', column, keep_latest_by, "IS")
        return self.con.execute(sql, [to_us(before)]).rowcount

    def clear(self, obj: SqlObject) -> None:
        self.con.execute(f'DELETE FROM "{obj.name}"')

    def begin(self) -> None:
        self.con.execute("BEGIN")

    def commit(self) -> None:
        self.con.execute("COMMIT")

    def rollback(self) -> None:
        self.con.execute("ROLLBACK")
        self._ran.clear()
        self._dirty_held = None
        if self._pending is not None:
            self._pending = dict.fromkeys(self._types, ALL)

    def set_now(self, now: datetime) -> None:
        self._now = to_us(now)

    def _hold(self, scope: frozenset[str]) -> None:
        """Make :data:`DIRTY_TABLE` hold ``scope``."""
        if scope != self._dirty_held:
            self.con.execute(f"DELETE FROM {DIRTY_TABLE}")
            self.con.executemany(f"INSERT INTO {DIRTY_TABLE} VALUES (?)", [(s,) for s in scope])
            self._dirty_held = frozenset(scope)  # a copy: the caller's set may change after

    # -- evaluation --------------------------------------------------------------------------------
    def has_run(self, view: str) -> bool:
        return view in self._ran

    def refresh_view(self, view: SqlObject, scope: Scope) -> Scope:
        name = view.name
        ex = self.con.execute
        params = {NOW_PARAM: self._now}
        partial = scope is not ALL and name in self._partial
        where = ""
        if partial:
            assert scope is not ALL
            self._hold(scope)
            where = f" WHERE {SITE_COLUMN} IN (SELECT {SITE_COLUMN} FROM {DIRTY_TABLE})"
        pieces = self._partial[name] if partial else self._full[name]
        first = name not in self._ran
        ex(f'DELETE FROM "{name}{OLD_SUFFIX}"')
        if not first:
            ex(f'INSERT INTO "{name}{OLD_SUFFIX}" SELECT * FROM "{name}"{where}')
        ex(f'DELETE FROM "{name}"{where}')
        for piece in pieces[:-1]:
            ex(f'DELETE FROM "{piece.table}"')
            ex(f'INSERT INTO "{piece.table}" {piece.select}', params)
        ex(f'INSERT INTO "{name}" {pieces[-1].select}', params)
        self._ran.add(name)
        if name not in self._diff_sql:  # no site column: all or nothing
            changed = first or self._differs(name)
            moved: Scope = ALL if changed else frozenset()
        else:
            sql = self._diff_sql[name][1 if partial else 0]
            sites = {r[0] for r in ex(sql)}
            moved = ALL if None in sites else frozenset(sites)
        if self._pending is not None and (moved is ALL or moved):
            self._pending[name] = union(self._pending.get(name, frozenset()), moved)
        return moved

    def _differs(self, name: str) -> bool:
        new, old = f'SELECT * FROM "{name}"', f'SELECT * FROM "{name}{OLD_SUFFIX}"'
        count = self.con.execute(f"SELECT (SELECT count(*) FROM ({new})) <> (SELECT count(*) FROM ({old}))")
        if count.fetchone()[0]:
            return True
        return self.con.execute(f"SELECT EXISTS ({new} EXCEPT {old})").fetchone()[0] == 1

    def probe(self, query: exp.Query) -> bool:
        try:
            self.con.execute(f"EXPLAIN SELECT * FROM ({self.render(query)}) LIMIT 0", {NOW_PARAM: 0})
        except (sqlite3.Error, SqlError):
            return False
        return True

    def render(self, query: exp.Query, site_relations: set[str] | None = None) -> str:
        if site_relations:
            query = _restrict(query, site_relations)  # type: ignore[assignment]
        return to_sqlite(query)

    def boundary_rows(self, sql: str, scope: Scope) -> list[tuple[str | None, datetime]]:
        if scope is not ALL:
            self._hold(scope)
        return [
            (site, EPOCH + timedelta(microseconds=at)) for site, at in self.con.execute(sql, {NOW_PARAM: self._now})
        ]

    def sink_rows(self, sink: SqlObject, scope: Scope) -> tuple[list[str], list[tuple[Any, ...]]]:
        compiled = self._sink_sql.get(sink.name)
        if compiled is None:  # transpiled once: sqlglot takes ~1 ms, as long as the query runs on a site
            select = to_sqlite(sink.ast.expression)
            in_scope = f"SELECT * FROM ({select}) WHERE {SITE_COLUMN} IN (SELECT {SITE_COLUMN} FROM {DIRTY_TABLE})"
            compiled = self._sink_sql[sink.name] = (select, in_scope)
        if scope is ALL:
            cur = self.con.execute(compiled[0], {NOW_PARAM: self._now})
        else:
            self._hold(scope)
            cur = self.con.execute(compiled[1], {NOW_PARAM: self._now})
        cols = [d[0] for d in cur.description]
        convert = self._sink_out.get(sink.name)
        if convert is None:
            described = self.catalog.execute(f"DESCRIBE {sink.ast.expression.sql('duckdb')}").fetchall()
            convert = self._sink_out[sink.name] = [_out(r[1]) for r in described]
        rows = cur.fetchall()
        if any(convert):
            rows = [tuple(v if f is None else f(v) for f, v in zip(convert, row, strict=True)) for row in rows]
        return cols, rows

    # -- readers -----------------------------------------------------------------------------------
    def note_input(self, name: str, scope: Scope) -> None:
        if self._pending is not None:
            self._pending[name] = union(self._pending.get(name, frozenset()), scope)

    def read_connection(self) -> duckdb.DuckDBPyConnection:
        if self._pending is None:
            self._pending = dict.fromkeys(self._types, ALL)
        return self.catalog

    def sync_readers(self) -> None:
        """Copy into the DuckDB mirror the rows of every relation and site that changed since the last
        sync (every row the first time), in one DuckDB transaction."""
        if self._pending is None:
            self.read_connection()
        assert self._pending is not None
        pending, self._pending = self._pending, {}
        if not pending:
            return
        self.catalog.execute("BEGIN")
        try:
            for name, scope in pending.items():
                self._copy(name, scope)
        except BaseException:
            self.catalog.execute("ROLLBACK")
            self._pending = dict.fromkeys(self._types, ALL)
            raise
        self.catalog.execute("COMMIT")

    def rows(self, name: str, scope: Scope) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The rows of relation ``name`` for ``scope`` (``None``: all), as Python values (DuckDB's types)."""
        types = self._types[name]
        quoted = ", ".join(f'"{c}"' for c in types)
        if scope is ALL or SITE_COLUMN not in types:
            cur = self.con.execute(f'SELECT {quoted} FROM "{name}"')
        else:
            self._hold(scope)
            cur = self.con.execute(
                f'SELECT {quoted} FROM "{name}" WHERE {SITE_COLUMN} IN (SELECT {SITE_COLUMN} FROM {DIRTY_TABLE})'
            )
        rows = cur.fetchall()
        convert = [_out(t) for t in types.values()]
        if any(convert):
            rows = [tuple(v if f is None else f(v) for f, v in zip(convert, row, strict=True)) for row in rows]
        return list(types), rows

    def replace_rows(self, name: str, scope: Scope, rows: Sequence[tuple[Any, ...]]) -> None:
        """Replace the rows of relation ``name`` for ``scope`` (``None``: all) by ``rows`` (Python values over
        its columns, e.g. from another database)."""
        types = self._types[name]
        if scope is ALL or SITE_COLUMN not in types:
            self.con.execute(f'DELETE FROM "{name}"')
        else:
            self._hold(scope)
            self.con.execute(f'DELETE FROM "{name}" WHERE {SITE_COLUMN} IN (SELECT {SITE_COLUMN} FROM {DIRTY_TABLE})')
        if rows:
            convert = [_in(t) for t in types.values()]
            if any(convert):
                rows = [
                    tuple(v if f is None or v is None else f(v) for f, v in zip(convert, row, strict=True))
                    for row in rows
                ]
            marks = ", ".join("?" for _ in types)
            self.con.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)

    def _copy(self, name: str, scope: Scope) -> None:
        types = self._types[name]
        columns = list(types)
        quoted = ", ".join(f'"{c}"' for c in columns)
        if scope is ALL or SITE_COLUMN not in types:
            self.catalog.execute(f'DELETE FROM "{name}"')
            cur = self.con.execute(f'SELECT {quoted} FROM "{name}"')
        else:
            self.catalog.execute(f'DELETE FROM "{name}" WHERE {SITE_COLUMN} IN (SELECT unnest(?))', [sorted(scope)])
            self._hold(scope)
            cur = self.con.execute(
                f'SELECT {quoted} FROM "{name}" WHERE {SITE_COLUMN} IN (SELECT {SITE_COLUMN} FROM {DIRTY_TABLE})'
            )
        rows = cur.fetchall()
        if not rows:
            return
        convert = [_out(t) for t in types.values()]
        lists = [
            [v if f is None else f(v) for v in column]
            for f, column in zip(convert, zip(*rows, strict=True), strict=True)
        ]
        sql = self._mirror_insert.get(name)
        if sql is None:
            unnest = ", ".join(f"unnest(${i}::{t}[])" for i, t in enumerate(types.values(), 1))
            sql = self._mirror_insert[name] = f'INSERT INTO "{name}" ({quoted}) SELECT {unnest}'
        self.catalog.execute(sql, lists)

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.catalog.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()

    def close(self) -> None:
        self.con.close()
        if self._own_catalog:
            self.catalog.close()
