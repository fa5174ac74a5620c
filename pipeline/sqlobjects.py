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

DIALECT = "risingwave"
DEFAULT_SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


class SqlError(ValueError):
    """A file in ``sql/`` cannot be used; the message names the file (and line where known)."""


@dataclass
class SqlObject:
    """One object of ``sql/``.

    ``kind`` is one of ``table``, ``source``, ``materialized_view``, ``view``, ``sink``; ``topic``,
    ``format`` (``upsert`` or ``plain``) and ``primary_key`` come from the connector clause.
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
        if isinstance(schema, exp.Schema):
            return [
                col.name
                for col in schema.expressions
                if isinstance(col, exp.ColumnDef)
                and any(isinstance(c.kind, exp.PrimaryKeyColumnConstraint) for c in col.constraints or [])
            ]
        return []

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
