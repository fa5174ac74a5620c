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
  it by nested loops. Every relation gets an index on each column joins look up and on ``site_id``.

Which sites' rows moved is decided exactly: the rows of the evaluated sites before and after are
compared with ``EXCEPT`` both ways (and counted per site).

Types are DuckDB's: a DuckDB database with the same DDL (:func:`pipeline.engine.duckdb_backend.duckdb_ddl`)
gives each column's type (timestamps and booleans are converted back on the way out) and is also the
read mirror: :meth:`SQLiteBackend.sync_readers` copies into it the rows of the sites that changed since
the last sync, so Postgres-wire readers run DuckDB's SQL on the same data. Nothing is copied until a
reader attaches (:meth:`SQLiteBackend.read_connection`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any, cast

import duckdb
from sqlglot import exp

from pipeline.engine.backend import Backend, Scope
from pipeline.engine.boundaries import is_now
from pipeline.engine.duckdb_backend import duckdb_ddl
from pipeline.engine.partition import ALL, SITE_COLUMN, union
from pipeline.sqlmodel.objects import SqlError, SqlObject

NOW_PARAM = "now"
DIRTY_TABLE = "pipeline_dirty_sites"
OLD_SUFFIX = "__old"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

_UNIT_US = {
    "microsecond": 1,
    "us": 1,
    "millisecond": 1_000,
    "ms": 1_000,
    "second": 1_000_000,
    "sec": 1_000_000,
    "s": 1_000_000,
    "minute": 60_000_000,
    "min": 60_000_000,
    "hour": 3_600_000_000,
    "h": 3_600_000_000,
    "day": 86_400_000_000,
    "d": 86_400_000_000,
    "week": 604_800_000_000,
}
_TEMPORAL = (
    exp.DataType.Type.TIMESTAMP,
    exp.DataType.Type.TIMESTAMPTZ,
    exp.DataType.Type.TIMESTAMPLTZ,
    exp.DataType.Type.DATETIME,
)
#: DuckDB integer types and their ranges: SQLite would store any 64-bit integer, DuckDB refuses more.
_INT_RANGE = {
    "TINYINT": 2**7,
    "SMALLINT": 2**15,
    "INTEGER": 2**31,
    "BIGINT": 2**63,
}


def to_us(value: datetime) -> int:
    """``value`` (aware; naive is taken as UTC) in microseconds since the Unix epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // MICROSECOND


def from_us(value: int | None) -> datetime | None:
    """Microseconds since the Unix epoch as an aware UTC ``datetime`` (``None`` stays ``None``)."""
    return None if value is None else EPOCH + timedelta(microseconds=value)


def interval_us(node: exp.Interval) -> int:
    """An ``INTERVAL`` literal's length in microseconds, e.g. ``INTERVAL '600 seconds'`` -> 600,000,000.

    Raises :class:`SqlError` for a unit of no fixed length (month, year) or text that is not a length.
    """
    unit = node.args.get("unit")
    text = f"{node.this.name} {unit.name if unit is not None else ''}".lower()
    parts = re.findall(r"(-?\d+(?:\.\d+)?)\s*([a-z]+)", text)
    if not parts or re.sub(r"(-?\d+(?:\.\d+)?)\s*([a-z]+)", "", text).strip():
        raise SqlError(f"INTERVAL {node.sql('risingwave')}: not a length the SQLite engine reads")
    total = 0.0
    for number, word in parts:
        base = _UNIT_US.get(word) or _UNIT_US.get(word.rstrip("s"))
        if base is None:
            raise SqlError(f"INTERVAL {node.sql('risingwave')}: {word!r} has no fixed length in microseconds")
        total += float(number) * base
    return round(total)


def _values_as_union(node: exp.Values) -> exp.Expr:
    alias = node.args["alias"]
    names = [c.name for c in alias.columns]
    selects: list[exp.Query] = [
        exp.select(*(value.copy().as_(name) for value, name in zip(row.expressions, names, strict=True)))
        for row in node.expressions
    ]
    body = reduce(lambda a, b: exp.union(a, b, distinct=False), selects)
    return exp.Subquery(this=body, alias=exp.TableAlias(this=alias.this.copy()))


def _rewrite(node: exp.Expr) -> exp.Expr:
    """One node of a RisingWave query as SQLite needs it (see the module docstring)."""
    if is_now(node):
        return exp.Placeholder(this=NOW_PARAM)
    if isinstance(node, exp.Interval):
        return exp.Literal.number(interval_us(node))
    if isinstance(node, exp.Cast) and node.to.is_type(*_TEMPORAL):
        inner = node.this
        if isinstance(inner, exp.Literal) and inner.is_string:
            return exp.Literal.number(to_us(datetime.fromisoformat(inner.name)))
        return inner if isinstance(inner, exp.Null) else exp.paren(inner.transform(_rewrite))
    if isinstance(node, exp.Extract) and node.this.name.upper() == "EPOCH":
        return exp.Div(this=exp.paren(node.expression.transform(_rewrite)), expression=exp.Literal.number("1e6"))
    if isinstance(node, exp.Values):
        alias = node.args.get("alias")
        if alias is not None and alias.columns:
            return _values_as_union(node).transform(_rewrite)  # (a replaced node's children are not visited)
    return node


def to_sqlite(query: exp.Expr) -> str:
    """``query`` (RisingWave dialect, not changed) as SQLite SQL, with the rewrites of the module docstring."""
    return query.transform(_rewrite).sql("sqlite")


def _sqlite_sites() -> exp.Select:
    return exp.select(SITE_COLUMN).from_(DIRTY_TABLE)


def _sqlite_type(duckdb_type: str) -> str:
    t = duckdb_type.upper()
    if t.startswith("TIMESTAMP") or t in ("BOOLEAN", "DATE") or t in _INT_RANGE or t.endswith("INT"):
        return "INTEGER"
    if t in ("VARCHAR", "TEXT") or t.startswith("VARCHAR"):
        return "TEXT"
    if t == "BLOB":
        return "BLOB"
    if t in ("DOUBLE", "FLOAT", "REAL") or t.startswith("DECIMAL"):
        return "REAL"
    return ""


def _out(duckdb_type: str) -> Callable[[Any], Any] | None:
    """How a stored value of ``duckdb_type`` reads back as Python (``None``: as it is)."""
    t = duckdb_type.upper()
    if t.startswith("TIMESTAMP"):
        return from_us
    if t == "BOOLEAN":
        return lambda v: None if v is None else bool(v)
    return None


def _in(duckdb_type: str) -> Callable[[Any], Any] | None:
    """How a Python value is stored in a column of ``duckdb_type`` (``None``: as it is). Raises
    ``ValueError`` for an integer DuckDB's type cannot hold (DuckDB would refuse it too)."""
    t = duckdb_type.upper()
    if t.startswith("TIMESTAMP"):
        return lambda v: to_us(v) if isinstance(v, datetime) else v
    bound = _INT_RANGE.get(t)
    if bound is not None:

        def check(v: Any) -> Any:
            if isinstance(v, int) and not -bound <= v < bound:
                raise ValueError(f"{v} is out of range for {t}")
            return v

        return check
    return None


def _join_keys(query: exp.Expr) -> set[tuple[str, str]]:
    """``(relation, column)`` for each column an equality in a join's ``ON`` looks up in the joined
    relation: the columns worth an index."""
    keys: set[tuple[str, str]] = set()
    for join in query.find_all(exp.Join):
        target, on = join.this, join.args.get("on")
        if not isinstance(target, exp.Table) or on is None:
            continue
        alias = target.alias_or_name
        for eq in on.find_all(exp.EQ):
            sides = (eq.this, eq.expression)
            if not all(isinstance(side, exp.Column) for side in sides):
                continue  # a filter on a constant: an index there only misleads the planner
            for side in sides:
                if isinstance(side, exp.Column) and side.table == alias:
                    keys.add((target.name, side.name))
    return keys


class _Piece:
    """One statement of a view's refresh: fill ``table`` from ``select`` (SQLite SQL); ``keys``: the
    ``(relation, column)`` pairs its joins look up (:func:`_join_keys`)."""

    __slots__ = ("keys", "select", "table")

    def __init__(self, table: str, ast: exp.Query) -> None:
        self.table = table
        self.keys = _join_keys(ast)
        self.select = ast.transform(_rewrite, copy=False).sql("sqlite")


#: Compiled pieces per (view, its SQL, the site-keyed relations or None for the full query): every engine
#: over the same sql/ shares them (sqlglot's copies and generation cost ~0.1 s a view).
_PIECES: dict[tuple[str, str, frozenset[str] | None], list[_Piece]] = {}


def _compiled(obj: SqlObject, site_keyed: set[str] | None = None) -> list[_Piece]:
    key = (obj.name, obj.sql, None if site_keyed is None else frozenset(site_keyed))
    pieces = _PIECES.get(key)
    if pieces is None:
        body = obj.ast.expression if site_keyed is None else _restrict(obj.ast.expression, site_keyed)
        assert isinstance(body, exp.Query)
        pieces = _PIECES[key] = _pieces(obj.name, body)
    return pieces


def _pieces(name: str, body: exp.Query) -> list[_Piece]:
    """``body`` (a view's query) as one piece per top-level CTE worth a table (read more than once, or
    joined to), each read by the later pieces as the table ``<name>__<cte>``, and the view's own query
    last. The other CTEs stay inline, in the ``WITH`` of the pieces that read them."""
    body = body.copy()
    with_ = body.args.get("with_")
    ctes = list(with_.expressions) if isinstance(with_, exp.With) else []
    aliases = {cte.alias for cte in ctes}
    reads: dict[str, int] = {}
    joined: set[str] = set()
    for table in body.find_all(exp.Table):
        if table.name in aliases and not table.args.get("db"):
            reads[table.name] = reads.get(table.name, 0) + 1
            if isinstance(table.parent, exp.Join) and table.parent.this is table:
                joined.add(table.name)
    tables = {a: f"{name}__{a}" for a in aliases if reads.get(a, 0) > 1 or a in joined}

    def rename(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Table) and not node.args.get("db") and node.name in tables:
            table = exp.to_table(tables[node.name])
            table.set("alias", node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(node.name)))
            return table
        return node

    inline = {cte.alias: cte.transform(rename, copy=False) for cte in ctes if cte.alias not in tables}

    def with_inline(query: exp.Query) -> exp.Query:
        needed: set[str] = set()
        stack = [query]
        while stack:
            for table in stack.pop().find_all(exp.Table):
                if table.name in inline and table.name not in needed:
                    needed.add(table.name)
                    stack.append(inline[table.name].this)
        kept = [inline[cte.alias].copy() for cte in ctes if cte.alias in needed]
        query.set("with_", exp.With(expressions=kept) if kept else None)
        return query

    pieces = [
        _Piece(tables[cte.alias], with_inline(cast(exp.Query, cte.this.transform(rename, copy=False))))
        for cte in ctes
        if cte.alias in tables
    ]
    body.set("with_", None)
    pieces.append(_Piece(name, with_inline(cast(exp.Query, body.transform(rename, copy=False)))))
    return pieces


def _restrict(query: exp.Expr, site_relations: set[str]) -> exp.Expr:
    """``query`` with each read of a relation in ``site_relations`` limited to the dirty sites, as
    :func:`pipeline.engine.partition.restrict` does, but as a condition where SQLite can still use the
    relation's indexes: in the ``ON`` of an inner or left join, in the ``WHERE`` of the ``SELECT`` it is
    the ``FROM`` of (both keep the same rows as reading the relation filtered). Elsewhere (a right or
    full join, a join without ``ON``) the relation is replaced by the filtered subquery."""
    query = query.copy()
    ctes = {cte.alias for cte in query.find_all(exp.CTE)}
    for table in list(query.find_all(exp.Table)):
        if table.name in ctes or table.name not in site_relations or table.args.get("db"):
            continue
        cond = exp.column(SITE_COLUMN, table=table.alias_or_name).isin(query=_sqlite_sites())
        parent = table.parent
        if (
            isinstance(parent, exp.Join)
            and parent.this is table
            and parent.side in ("", "LEFT")
            and parent.args.get("on") is not None
        ):
            parent.set("on", exp.and_(parent.args["on"], cond))
        elif isinstance(parent, exp.From) and isinstance(parent.parent, exp.Select):
            parent.parent.where(cond, copy=False)
        else:
            only = exp.column(SITE_COLUMN).isin(query=_sqlite_sites())
            table.replace(exp.select("*").from_(exp.to_table(table.name)).where(only).subquery(table.alias_or_name))
    return query


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
            self._dirty_held = scope

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
        select = to_sqlite(sink.ast.expression)
        if scope is ALL:
            cur = self.con.execute(select, {NOW_PARAM: self._now})
        else:
            self._hold(scope)
            cur = self.con.execute(
                f"SELECT * FROM ({select}) WHERE {SITE_COLUMN} IN (SELECT {SITE_COLUMN} FROM {DIRTY_TABLE})",
                {NOW_PARAM: self._now},
            )
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
