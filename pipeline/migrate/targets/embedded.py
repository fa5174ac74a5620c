"""The embedded engine's DuckDB file as a migration target.

Objects get the DDL the embedded engine itself uses (:func:`pipeline.engine.embedded.duckdb_ddl`):
tables and sources become tables; a materialized view becomes its query view ``<name>__query`` plus the
table ``<name>`` the engine refreshes from it.
Sinks have no DuckDB object (the engine evaluates their query), so a sink step only records the sink in
the catalog.

Read-only commands (``plan``, ``status``, ``diff``) open the file read-only, and a file that does not
exist yet as an empty in-memory database, so they never create or change anything. DuckDB allows one
writing process per file: a migrator in another process gets a one-line "in use" error from DuckDB's
own file lock, and migrators within one process meet the lock table like on any other target.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from pipeline.engine import embedded as engine
from pipeline.migrate.kafka import ConnectorSettings
from pipeline.migrate.model import MigrateError
from pipeline.migrate.targets.base import OWN_TABLES, Target
from pipeline.sqlmodel.objects import SqlObject

SINK_NOTE = "-- sink: recorded in the catalog only; the embedded engine evaluates its query"


def _query_view(obj_name: str) -> str:
    return f"{obj_name}{engine.QUERY_SUFFIX}"


def embedded_statements(obj: SqlObject) -> list[str]:
    """The DuckDB statements that create ``obj`` as :class:`pipeline.engine.embedded.EmbeddedEngine`
    does (none for a sink). Raises :class:`pipeline.sqlmodel.objects.SqlError` when it has no DuckDB form."""
    return engine.duckdb_ddl(obj)


LIST = """SELECT table_name, CASE table_type WHEN 'VIEW' THEN 'view' ELSE 'table' END
FROM information_schema.tables WHERE table_schema = 'main' AND table_catalog = current_database()"""


class EmbeddedTarget(Target):
    """A DuckDB database file (``engine = 'embedded'``); ``read_only`` for commands that change nothing.

    Raises :class:`MigrateError` when the file cannot be opened (e.g. another process holds it).
    """

    engine = "embedded"
    errors = (duckdb.Error,)
    placeholder = "?"

    def __init__(self, path: str | Path, kafka: ConnectorSettings | None = None, *, read_only: bool = False) -> None:
        super().__init__(kafka)
        self.path = Path(path)
        self.display = str(path)
        if self.path.is_dir():
            raise MigrateError(f"{self.path}: is a directory, not a DuckDB database file")
        try:
            if read_only and not self.path.exists():
                self.con = duckdb.connect(":memory:")
            else:
                self.con = self._connect(read_only)
        except duckdb.Error as exc:
            text = str(exc).splitlines()[0]
            if "lock" in text.lower():
                raise MigrateError(f"{self.path} is in use by another process (DuckDB file lock): {text}") from None
            raise MigrateError(f"cannot open {self.path}: {text}") from None
        self.con.execute("SET TimeZone = 'UTC'")

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.ConnectionException as exc:
            # this process already has the file open read-write (e.g. a migrator holding the lock):
            # DuckDB shares that instance only with the same configuration; we still only read
            if read_only and "different configuration" in str(exc):
                return duckdb.connect(str(self.path))
            raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.con.execute(sql, list(params)).fetchall()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.con.execute(sql, list(params))

    def _missing_table(self, exc: BaseException) -> bool:
        return isinstance(exc, duckdb.CatalogException)

    def _unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, duckdb.ConstraintException)

    def create_statement(self, obj: SqlObject) -> tuple[str, str]:
        if obj.kind == "sink":
            return "", SINK_NOTE
        ddl = ";\n".join(embedded_statements(obj))
        return ddl, ddl

    def materializes(self, kind: str) -> bool:
        return kind != "sink"

    def list_objects(self) -> dict[str, str] | None:
        found = {name: kind for name, kind in self._query(LIST) if name not in OWN_TABLES}
        # a materialized view's query view is part of it, not an object of its own
        return {
            name: kind
            for name, kind in found.items()
            if not (kind == "view" and any(_query_view(base) == name for base in found))
        }

    def drop_statement(self, name: str, kind: str) -> str:
        if kind == "sink":
            return ""
        if kind not in ("materialized_view", "view"):
            return f"DROP TABLE IF EXISTS {name}"
        query_view = _query_view(name)
        if query_view:
            return f"DROP TABLE IF EXISTS {name};\nDROP VIEW IF EXISTS {query_view}"
        return f"DROP VIEW IF EXISTS {name}"

    def close(self) -> None:
        self.con.close()
