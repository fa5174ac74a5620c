"""Read ``sql/``: one RisingWave object per file, parsed with sqlglot, ordered by dependency.

This is the shared front end of both engines (and of the migration planner): every file is parsed in
sqlglot's ``risingwave`` dialect, its kind, Kafka topic, format and primary key are read from the AST,
and references to other objects give the dependency graph.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from pipeline.contracts.errors import PipelineError
from pipeline.sqlmodel import DEFAULT_SQL_DIR

DIALECT = "risingwave"
DEFAULT_KEY_COLUMN = "_rw_key"  # the name RisingWave gives ``INCLUDE KEY`` without ``AS``


class SqlError(PipelineError):
    """A file in ``sql/`` cannot be used; the message names the file (and line where known)."""


@dataclass
class SqlObject:
    """One object of ``sql/``.

    ``kind`` is one of ``table``, ``source``, ``materialized_view``, ``view``, ``sink``; ``topic``,
    ``format`` (``upsert`` or ``plain``) and ``primary_key`` come from the connector clause.
    ``columns`` are the declared columns (read from the message value); ``key_column`` is the column
    ``INCLUDE KEY AS ...`` adds, holding the Kafka message key as ``bytea``.
    """

    name: str
    kind: str
    path: Path
    sql: str
    ast: exp.Create
    properties: dict[str, str] = field(default_factory=dict)
    depends_on: set[str] = field(default_factory=set)
    format: str | None = None

    @property
    def topic(self) -> str | None:
        return self.properties.get("topic")

    @property
    def primary_key(self) -> list[str]:
        if "primary_key" in self.properties:
            return [c.strip() for c in self.properties["primary_key"].split(",")]
        schema = self.ast.this
        if not isinstance(schema, exp.Schema):
            return []
        inline = [
            col.name
            for col in schema.expressions
            if isinstance(col, exp.ColumnDef)
            and any(isinstance(c.kind, exp.PrimaryKeyColumnConstraint) for c in col.constraints or [])
        ]
        table_level = [e.name for pk in schema.expressions if isinstance(pk, exp.PrimaryKey) for e in pk.expressions]
        return inline + table_level

    @property
    def key_column(self) -> str | None:
        """The column ``INCLUDE KEY [AS name]`` adds (RisingWave names it ``_rw_key`` without ``AS``),
        or ``None`` when the object includes no key."""
        for prop in self._properties(exp.IncludeProperty):
            if prop.name.upper() == "KEY":
                alias = prop.args.get("alias")
                return alias.name if alias is not None else DEFAULT_KEY_COLUMN
        return None

    @property
    def included(self) -> list[str]:
        """What the ``INCLUDE`` clauses name (``KEY``, ``TIMESTAMP``, ``PARTITION`` ...), upper case."""
        return [prop.name.upper() for prop in self._properties(exp.IncludeProperty)]

    @property
    def stored_columns(self) -> list[str]:
        """Every column of the relation: the declared ones, then the key column, as RisingWave orders
        them."""
        key = self.key_column
        return self.columns + ([key] if key is not None and key not in self.columns else [])

    def _properties(self, kind: type[exp.Expression]) -> list:
        props = self.ast.args.get("properties")
        return [p for p in props.expressions if isinstance(p, kind)] if props else []

    @property
    def columns(self) -> list[str]:
        schema = self.ast.this
        if isinstance(schema, exp.Schema):
            return [c.name for c in schema.expressions if isinstance(c, exp.ColumnDef)]
        return []

    @property
    def normalized_sql(self) -> str:
        """The SQL as sqlglot prints it: whitespace, comments and keyword case do not matter."""
        return self.ast.sql(DIALECT, normalize=True, comments=False)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.normalized_sql.encode()).hexdigest()[:16]


def _kind(create: exp.Create) -> str:
    kind = (create.args.get("kind") or "").upper()
    props = create.args.get("properties")
    materialized = bool(props and any(isinstance(p, exp.MaterializedProperty) for p in props.expressions))
    if kind == "VIEW":
        return "materialized_view" if materialized else "view"
    if kind in ("TABLE", "SOURCE", "SINK"):
        return kind.lower()
    raise SqlError(f"unsupported object kind CREATE {kind}")


def _properties(create: exp.Create) -> tuple[dict[str, str], str | None]:
    out: dict[str, str] = {}
    fmt = None
    props = create.args.get("properties")
    for prop in props.expressions if props else []:
        if isinstance(prop, exp.FileFormatProperty):
            fmt = prop.this.name.lower() if prop.this is not None else None
        elif type(prop) is exp.Property:
            out[prop.name.lower()] = prop.args["value"].name
    return out, fmt


def upsert_key_problem(obj: SqlObject) -> str | None:
    """Why RisingWave refuses ``obj`` as an upsert table, or ``None`` when it is one it accepts (or no
    upsert table at all).

    RisingWave (2.x) keys a ``FORMAT UPSERT ENCODE JSON`` table by the Kafka message key: the table must
    ``INCLUDE KEY AS <column>`` and make that column its only ``PRIMARY KEY``; the column is ``bytea`` and
    is added by the clause, so it must not be declared as well ("specified more than once"). Source:
    RisingWave 2.8's own answer to an upsert table without it: "INCLUDE KEY clause not set. Hint: For
    FORMAT UPSERT ENCODE JSON, INCLUDE KEY must be specified and the key column must be used as primary
    key".
    """
    if obj.kind != "table" or obj.format != "upsert":
        return None
    key = obj.key_column
    if key is None:
        return (
            "an upsert table needs INCLUDE KEY AS <column> with PRIMARY KEY (<column>): RisingWave keys "
            "FORMAT UPSERT rows by the message key"
        )
    if key in obj.columns:
        return (
            f"the key column {key!r} is also declared: INCLUDE KEY adds it (as bytea), so RisingWave "
            "refuses it as specified more than once; give the key column a name of its own"
        )
    if obj.primary_key != [key]:
        return (
            f"an upsert table's PRIMARY KEY must be its key column alone, PRIMARY KEY ({key}) "
            f"(found {', '.join(obj.primary_key) or 'none'}): RisingWave keys FORMAT UPSERT rows by the "
            "message key"
        )
    return None


def _references(create: exp.Create, name: str) -> set[str]:
    body = create.expression
    if body is None:
        return set()
    ctes = {cte.alias_or_name for cte in body.find_all(exp.CTE)}
    return {t.name for t in body.find_all(exp.Table)} - ctes - {name}


def parse_file(path: Path) -> SqlObject:
    """Parse one file holding exactly one ``CREATE`` statement; raises :class:`SqlError`."""
    text = path.read_text()
    try:
        statements = [s for s in sqlglot.parse(text, read=DIALECT) if s is not None]
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        raise SqlError(f"{path}:{err.get('line', '?')}: {err.get('description', exc)}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Create):
        raise SqlError(f"{path}: expected exactly one CREATE statement, found {len(statements)} statement(s)")
    create = statements[0]
    name = create.this.this.name if isinstance(create.this, exp.Schema) else create.this.name
    props, fmt = _properties(create)
    return SqlObject(
        name=name,
        kind=_kind(create),
        path=path,
        sql=text,
        ast=create,
        properties=props,
        depends_on=_references(create, name),
        format=fmt,
    )


def load_objects(sql_dir: str | Path = DEFAULT_SQL_DIR) -> list[SqlObject]:
    """Every object under ``sql_dir`` (``*.sql``, recursively), dependencies first.

    Raises :class:`SqlError` for a parse error, a duplicate name, a reference to an unknown object or
    a dependency cycle.
    """
    sql_dir = Path(sql_dir)
    if not sql_dir.is_dir():
        raise SqlError(f"{sql_dir}: not a directory")
    objects: dict[str, SqlObject] = {}
    for path in sorted(sql_dir.rglob("*.sql")):
        obj = parse_file(path)
        if obj.name in objects:
            raise SqlError(f"{path}: duplicate object name {obj.name!r} (also in {objects[obj.name].path})")
        objects[obj.name] = obj
    for obj in objects.values():
        unknown = sorted(obj.depends_on - objects.keys())
        if unknown:
            raise SqlError(f"{obj.path}: unknown reference(s) {', '.join(unknown)}")
    try:
        order = list(TopologicalSorter({n: o.depends_on for n, o in sorted(objects.items())}).static_order())
    except CycleError as exc:
        raise SqlError(f"dependency cycle: {' -> '.join(exc.args[1])}") from None
    return [objects[n] for n in order]
