"""RisingWave (or plain Postgres) over the Postgres wire protocol, with psycopg.

The server says which it is (``SELECT version()``). On RisingWave, DML is flushed implicitly so the
catalog and lock rows are visible at once, and the lock table is ``ON CONFLICT DO NOTHING`` (a duplicate
key is otherwise an overwrite there). On Postgres, the same statements run; RisingWave-only DDL (a
Kafka source, a sink) fails there like any failing step, which is how the tests exercise failures.

Every statement runs in autocommit: RisingWave has no transactional DDL, so a failed step leaves the
steps before it applied and recorded, on both servers alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from sqlglot import exp

from pipeline.migrate.kafka import ConnectorSettings
from pipeline.migrate.model import MigrateError
from pipeline.migrate.targets.base import LOCK_DDL, OWN_TABLES, Target
from pipeline.migrate.targets.pg_errors import describe

DROP_KEYWORD = {
    "materialized_view": "MATERIALIZED VIEW",
    "view": "VIEW",
    "table": "TABLE",
    "source": "SOURCE",
    "sink": "SINK",
}

RW_RELATION_KIND = {
    "table": "table",
    "materialized view": "materialized_view",
    "source": "source",
    "sink": "sink",
    "view": "view",
}

RW_LIST = """SELECT r.name, r.relation_type FROM rw_catalog.rw_relations AS r
JOIN rw_catalog.rw_schemas AS s ON s.id = r.schema_id WHERE s.name = current_schema()"""

PG_LIST = """SELECT table_name, CASE table_type WHEN 'VIEW' THEN 'view' ELSE 'table' END
FROM information_schema.tables WHERE table_schema = current_schema()
UNION ALL
SELECT matviewname, 'materialized_view' FROM pg_matviews WHERE schemaname = current_schema()"""


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password, for messages and the plan header."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class WireTarget(Target):
    """A ``postgresql://`` DSN: RisingWave (``engine = 'risingwave'``) or Postgres (``'postgres'``).

    Raises :class:`MigrateError` when the server cannot be reached.
    """

    errors = (psycopg.Error,)
    placeholder = "%s"

    def __init__(self, dsn: str, kafka: ConnectorSettings | None = None, *, connect_timeout_s: int = 10) -> None:
        super().__init__(kafka)
        self.display = redact_dsn(dsn)
        try:
            self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout_s)
        except psycopg.Error as exc:
            raise MigrateError(f"cannot connect to {self.display}: {describe(exc)}") from None
        version = self._query("SELECT version()")[0][0] or ""
        self.engine = "risingwave" if "risingwave" in version.lower() else "postgres"
        if self.engine == "risingwave":
            self._execute("SET RW_IMPLICIT_FLUSH TO true")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall() if cur.description else []

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql, params or None)

    def _missing_table(self, exc: BaseException) -> bool:
        return (
            isinstance(exc, pg_errors.UndefinedTable)
            or "not found" in str(exc).lower()
            or "does not exist" in str(exc).lower()
        )

    def _unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, pg_errors.UniqueViolation)

    def lock_ddl(self) -> list[str]:
        if self.engine == "risingwave":  # a duplicate key must not overwrite the holder's row
            return [LOCK_DDL + " ON CONFLICT DO NOTHING", LOCK_DDL + " ON CONFLICT IGNORE"]
        return [LOCK_DDL]

    def list_objects(self) -> dict[str, str] | None:
        try:
            rows = self._query(RW_LIST if self.engine == "risingwave" else PG_LIST)
        except psycopg.Error:
            return None
        out: dict[str, str] = {}
        for name, kind in rows:
            kind = RW_RELATION_KIND.get(kind, kind) if self.engine == "risingwave" else kind
            if name not in OWN_TABLES and kind in DROP_KEYWORD:
                out.setdefault(name, kind)
        return out

    def drop_statement(self, name: str, kind: str) -> str:
        return f"DROP {DROP_KEYWORD[kind]} IF EXISTS {exp.to_identifier(name).sql('postgres')}"

    def close(self) -> None:
        self.conn.close()
