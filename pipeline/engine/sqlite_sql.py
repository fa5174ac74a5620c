"""``sql/`` as SQLite runs it: the SQLite adapter's general rewrites of the transpiled views, its
statements per view, and the conversions of values in and out (:mod:`pipeline.engine.sqlite_backend`
says why each rewrite exists)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import reduce
from typing import Any, cast

from sqlglot import exp

from pipeline.engine.boundaries import is_now
from pipeline.engine.partition import SITE_COLUMN
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
    exp.DataType.Type.DATE,
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


def _truncate(node: exp.TimestampTrunc) -> exp.Expr:
    """``DATE_TRUNC(unit, ts)`` on microseconds since the epoch (UTC): ``ts - ts % unit`` for a unit of
    fixed length up to a day (a week would start on the epoch's Thursday, not on Monday). Raises
    :class:`SqlError` for other units or a time zone."""
    unit = node.text("unit").lower()
    if node.args.get("zone") is not None or unit not in (
        "microsecond",
        "millisecond",
        "second",
        "minute",
        "hour",
        "day",
    ):
        raise SqlError(f"{node.sql('risingwave')}: the SQLite engine truncates to fixed units up to a day, in UTC")
    ts = exp.paren(node.this.transform(_rewrite))
    length = exp.Literal.number(_UNIT_US[unit])
    return exp.paren(exp.Sub(this=ts, expression=exp.paren(exp.Mod(this=ts.copy(), expression=length))))


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
    if isinstance(node, exp.TimestampTrunc):
        return _truncate(node)
    if isinstance(node, exp.AtTimeZone):
        if node.args["zone"].name.upper() not in ("UTC", "Z", "ETC/UTC"):
            raise SqlError(f"{node.sql('risingwave')}: the SQLite engine keeps times in UTC only")
        return exp.paren(node.this.transform(_rewrite))
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
    if t == "DATE":
        return lambda v: v if v is None or not isinstance(v, int) else cast(datetime, from_us(v)).date()
    if t == "BOOLEAN":
        return lambda v: None if v is None else bool(v)
    return None


def _in(duckdb_type: str) -> Callable[[Any], Any] | None:
    """How a Python value is stored in a column of ``duckdb_type`` (``None``: as it is). Raises
    ``ValueError`` for an integer DuckDB's type cannot hold (DuckDB would refuse it too)."""
    t = duckdb_type.upper()
    if t.startswith("TIMESTAMP"):
        return lambda v: to_us(v) if isinstance(v, datetime) else v
    if t == "DATE":
        return lambda v: to_us(datetime.combine(v, datetime.min.time(), UTC)) if isinstance(v, date) else v
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
    for alias, cte in inline.items():
        readers = [t.find_ancestor(exp.Select) for t in body.find_all(exp.Table) if t.name == alias]
        if any(_has_window(r) for r in readers if r is not None):
            _fence(cte.this)

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


def _has_window(select: exp.Select) -> bool:
    """Whether ``select`` computes a window function itself (not in a subquery of its own)."""
    return any(w.find_ancestor(exp.Select) is select for w in select.find_all(exp.Window))


def _fence(query: exp.Expr) -> None:
    """Keep SQLite from flattening ``query`` (a CTE read once, by a query with window functions) into its
    reader: ``LIMIT -1 OFFSET 0`` (SQLite flattens no subquery that uses ``OFFSET``: "The SQLite Query
    Optimizer Overview", section "Query Flattening"). Flattened, every expression of a row-local CTE is
    evaluated again at each place a window argument reads it; fenced, SQLite runs it as a co-routine
    that computes each row once. Measured on a 20-session site: the fill ~7 % cheaper. A query with
    window functions of its own, a ``LIMIT``/``OFFSET``, or set operations is left as it is."""
    if not isinstance(query, exp.Select) or _has_window(query) or query.args.get("limit") or query.args.get("offset"):
        return
    query.set("limit", exp.Limit(expression=exp.Literal.number(-1)))
    query.set("offset", exp.Offset(expression=exp.Literal.number(0)))


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
