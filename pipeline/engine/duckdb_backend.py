"""The DuckDB adapter of the embedded engine (:mod:`pipeline.engine.backend`).

Each view is transpiled by sqlglot (``risingwave`` in, ``duckdb`` out) with ``NOW()`` bound to a DuckDB
variable set to the engine clock. A view becomes a query view (``<name>__query``) and a table ``<name>``
that each evaluation refreshes, so a view is planned once per evaluation however many views read it;
CTEs read more than once are materialized for the same reason. Which sites' rows moved is decided by row
count and the sum of row hashes per site. Vectorised: a full evaluation of 50,000 sessions takes ~2 s,
but each statement costs ~5 ms to bind and plan however few rows it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
from sqlglot import exp

from pipeline.engine.backend import Backend, Scope, retention_delete
from pipeline.engine.boundaries import is_now
from pipeline.engine.partition import ALL, SITE_COLUMN, SITES_PARAM, restrict
from pipeline.sqlmodel.objects import SqlError, SqlObject

NOW_VARIABLE = "pipeline_now"
QUERY_SUFFIX = "__query"

#: What a view's rows for one site are compared by: (row count, sum of row hashes), as DuckDB returns it.
Digest = tuple[Any, ...] | None


def _bind_now(node: exp.Expr) -> exp.Expr:
    if is_now(node):
        return exp.cast(
            exp.Anonymous(this="getvariable", expressions=[exp.Literal.string(NOW_VARIABLE)]),
            exp.DataType.build("TIMESTAMPTZ"),
        )
    return node


def duckdb_query(obj: SqlObject, site_relations: set[str] | None = None) -> str:
    """The DuckDB form of a view's query: ``NOW()`` bound to the engine clock, and every CTE that is
    read more than once materialized (DuckDB would otherwise inline it at each reference). With
    ``site_relations``, reads of those relations are restricted to the sites in ``$dirty_sites``."""
    key = (obj.name, obj.sql, frozenset(site_relations or ()))
    sql = _QUERIES.get(key)
    if sql is None:
        sql = _QUERIES[key] = _duckdb_sql(obj.ast.expression, site_relations)
    return sql


#: duckdb_query's answers per (view, its SQL, site relations): every engine over the same sql/ shares them.
_QUERIES: dict[tuple[str, str, frozenset[str]], str] = {}


def _duckdb_sql(query: exp.Expr, site_relations: set[str] | None = None) -> str:
    body = query.copy().transform(_bind_now)
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


class DuckDBBackend(Backend):
    """DuckDB in process (``database``: a file, or ``:memory:``). Its connection is what readers use."""

    name = "duckdb"

    def __init__(self, database: str = ":memory:") -> None:
        self.con = duckdb.connect(database)
        self.con.execute("SET TimeZone = 'UTC'")
        self._insert_sql: dict[str, str] = {}  # per input table: an INSERT of column lists
        self._partial_sql: dict[str, str] = {}  # per site-keyed view: its query restricted to $dirty_sites
        # per view: site (None: a view without sites, or rows without one) -> (row count, sum of row hashes)
        self._digest: dict[str, dict[str | None, Digest]] = {}
        self._sink_sql: dict[str, str] = {}  # per sink: its query in DuckDB's SQL

    def create_input(self, obj: SqlObject) -> None:
        for statement in duckdb_ddl(obj):
            self.con.execute(statement)
        stored = obj.stored_columns
        types = dict(self.con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {obj.name})").fetchall())
        quoted = ", ".join(f'"{c}"' for c in stored)
        lists = ", ".join(f"unnest(${i}::{types[c]}[])" for i, c in enumerate(stored, 1))
        self._insert_sql[obj.name] = f"INSERT INTO {obj.name} ({quoted}) SELECT {lists}"

    def create_view(self, obj: SqlObject) -> list[str]:
        for statement in duckdb_ddl(obj):
            self.con.execute(statement)
        return [r[0] for r in self.con.execute(f"DESCRIBE {obj.name}").fetchall()]

    def prepare(self, views: Sequence[SqlObject], site_keyed: set[str]) -> None:
        for view in views:
            if view.name in site_keyed:
                self._partial_sql[view.name] = duckdb_query(view, site_keyed)

    def write(self, obj: SqlObject, delete_keys: Sequence[bytes], rows: Sequence[tuple[Any, ...]]) -> None:
        if delete_keys:
            self.con.execute(
                f"DELETE FROM {obj.name} WHERE {obj.key_column} IN (SELECT unnest(?::BLOB[]))", [list(delete_keys)]
            )
        if rows:  # one statement per table, columns as lists: executemany costs ~2 ms a row
            self.con.execute(self._insert_sql[obj.name], [list(col) for col in zip(*rows, strict=True)])

    def delete_before(self, obj: SqlObject, column: str, before: datetime, keep_latest_by: tuple[str, ...] = ()) -> int:
        sql = retention_delete(obj.name, column, keep_latest_by, "IS NOT DISTINCT FROM")
        (deleted,) = self.con.execute(sql, [before]).fetchone() or (0,)
        return int(deleted)

    def clear(self, obj: SqlObject) -> None:
        self.con.execute(f"DELETE FROM {obj.name}")

    def begin(self) -> None:
        self.con.execute("BEGIN")

    def commit(self) -> None:
        self.con.execute("COMMIT")

    def rollback(self) -> None:
        self.con.execute("ROLLBACK")
        self._digest.clear()  # the tables are back as they were: the next refresh recomputes every view

    def set_now(self, now: datetime) -> None:
        self.con.execute(f"SET VARIABLE {NOW_VARIABLE} = ?::TIMESTAMPTZ", [now])

    def has_run(self, view: str) -> bool:
        return view in self._digest

    def refresh_view(self, view: SqlObject, scope: Scope) -> Scope:
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

    def rows(self, name: str, scope: Scope) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The rows of relation ``name`` for ``scope`` (``None``: all): column names and rows."""
        cols = [r[0] for r in self.con.execute(f'DESCRIBE "{name}"').fetchall()]
        if scope is ALL or SITE_COLUMN not in cols:
            cur = self.con.execute(f'SELECT * FROM "{name}"')
        else:
            cur = self.con.execute(f'SELECT * FROM "{name}" WHERE {SITE_COLUMN} IN (SELECT unnest(?))', [sorted(scope)])
        return cols, cur.fetchall()

    def replace_rows(self, name: str, scope: Scope, rows: Sequence[tuple[Any, ...]]) -> None:
        """Replace the rows of relation ``name`` for ``scope`` (``None``: all) by ``rows`` (Python values over
        its columns, e.g. from another database); a view's digests follow, so its next refresh passes on
        only what differs from these rows."""
        types = self.con.execute(f'SELECT column_name, column_type FROM (DESCRIBE "{name}")').fetchall()
        sited = any(c == SITE_COLUMN for c, _ in types)
        if scope is ALL or not sited:
            self.con.execute(f'DELETE FROM "{name}"')
        else:
            self.con.execute(f'DELETE FROM "{name}" WHERE {SITE_COLUMN} IN (SELECT unnest(?))', [sorted(scope)])
        if rows:
            unnest = ", ".join(f"unnest(${i}::{t}[])" for i, (_, t) in enumerate(types, 1))
            self.con.execute(f'INSERT INTO "{name}" SELECT {unnest}', [list(col) for col in zip(*rows, strict=True)])
        if name not in self._digest:
            return
        if not sited:
            self._digest[name] = {ALL: self.con.execute(f'SELECT count(*), sum(hash(v)) FROM "{name}" AS v').fetchone()}
            return
        digest_sql = f'SELECT {SITE_COLUMN}, count(*), sum(hash(v)) FROM "{name}" AS v'
        if scope is ALL:
            found = self.con.execute(f"{digest_sql} GROUP BY {SITE_COLUMN}").fetchall()
            self._digest[name] = {site: (count, total) for site, count, total in found}
            return
        found = self.con.execute(
            f"{digest_sql} WHERE {SITE_COLUMN} IN (SELECT unnest(?)) GROUP BY {SITE_COLUMN}", [sorted(scope)]
        ).fetchall()
        digest = self._digest[name]
        for site in scope:
            digest.pop(site, None)
        digest.update({site: (count, total) for site, count, total in found})

    def probe(self, query: exp.Query) -> bool:
        try:
            self.con.execute(f"SELECT * FROM ({self.render(query)}) AS probe LIMIT 0")
        except duckdb.Error:
            return False
        return True

    def render(self, query: exp.Query, site_relations: set[str] | None = None) -> str:
        return _duckdb_sql(query, site_relations)

    def boundary_rows(self, sql: str, scope: Scope) -> list[tuple[str | None, datetime]]:
        if scope is ALL:
            return self.con.execute(sql).fetchall()
        return self.con.execute(sql, {SITES_PARAM: sorted(scope)}).fetchall()

    def sink_rows(self, sink: SqlObject, scope: Scope) -> tuple[list[str], list[tuple[Any, ...]]]:
        select = self._sink_sql.get(sink.name)
        if select is None:
            select = self._sink_sql[sink.name] = sink.ast.expression.sql("duckdb")
        if scope is ALL:
            cur = self.con.execute(select)
        else:
            cur = self.con.execute(
                f"SELECT * FROM ({select}) AS s WHERE {SITE_COLUMN} IN (SELECT unnest(?))", [sorted(scope)]
            )
        return [d[0] for d in cur.description], cur.fetchall()

    def read_connection(self) -> duckdb.DuckDBPyConnection:
        return self.con

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()

    def close(self) -> None:
        self.con.close()
