"""The read-only DuckDB backend behind :mod:`pipeline.pgwire.server`: what a client may run, and how.

buenavista (the Postgres-wire library :mod:`pipeline.pgwire.server` uses) asks a backend for sessions
(``buenavista.core.Connection``/``Session``) and their results (``QueryResult``). This module is that
backend over the embedded engine's database, and it is where "read-only" is decided:

* every statement is classified by DuckDB's own parser (``extract_statements``): queries (``SELECT``,
  ``WITH``, ``VALUES``, ``TABLE``, ``SHOW``, ``DESCRIBE``) run, and so does ``COPY (query) TO STDOUT``
  (:mod:`pipeline.pgwire.copyout`, the query checked as any other); ``BEGIN``/``COMMIT``/``ROLLBACK`` open
  and close a read-only snapshot; a ``SET``/``RESET`` of a harmless client setting (``application_name``,
  ``extra_float_digits``...) is acknowledged and ignored; anything else (INSERT, UPDATE, DELETE, CREATE,
  DROP, COPY FROM or to a server file, ATTACH, SET of engine settings or variables, PRAGMA, CALL,
  LOAD...) raises :class:`PgError` ``25006`` (read_only_sql_transaction) or ``42501``, before any
  statement of the request runs;
* every query runs inside a DuckDB ``BEGIN TRANSACTION READ ONLY``, so even a write hidden in a query
  fails, and it reads one committed state: the engine refreshes its materialized-view tables inside a
  transaction, so a reader never sees half a refresh. A client ``BEGIN`` holds one such snapshot until
  ``COMMIT``/``ROLLBACK``; an error inside it aborts it (``25P02`` until it ends), as on Postgres;
* a query may read catalog relations only: table functions other than catalog listings and series, and
  quoted file paths, are refused (``42501``) by walking DuckDB's own parse tree (``json_serialize_sql``),
  and so are the engine's internal ``<view>__query`` views, whose ``NOW()`` is bound on the engine's own
  connection (``42P01``: query ``<view>`` instead).

Each session owns one DuckDB cursor (a separate connection to the same database: DuckDB's rule for using
a database from several threads) and is used by one server thread only. At its start it creates, in that
connection only, the temporary catalog views and macros of :mod:`pipeline.pgwire.catalog` (psql's ``\\d``
and RisingWave's ``SHOW``); nothing is written to the engine's database.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import duckdb
from buenavista.core import BVType, Connection, QueryResult, Session

from pipeline.contracts.errors import PipelineError
from pipeline.pgwire.catalog import catalog_ddl, rewrite_catalog_query, show_query
from pipeline.pgwire.copyout import CopyError, CopyOut, parse_copy

__all__ = [
    "CLIENT_SETTINGS",
    "CopyResult",
    "EngineConnection",
    "PgError",
    "ReadOnlySession",
    "SERVER_VERSION",
    "TABLE_FUNCTIONS",
    "sqlstate",
]


SERVER_VERSION = "13.0 (ev-setpoint-pipeline embedded DuckDB)"
"""Reported as ``server_version``; libpq and psycopg read 13.0 from it, like RisingWave's 13.x."""

CLIENT_SETTINGS = frozenset(
    {
        "application_name",
        "extra_float_digits",
        "client_encoding",
        "datestyle",
        "intervalstyle",
        "client_min_messages",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "standard_conforming_strings",
        "bytea_output",
        "search_path",
        "session",
        "transaction",
    }
)
"""``SET``/``RESET`` names a client library may send at connect; acknowledged and ignored."""

TABLE_FUNCTIONS = frozenset(
    {
        "generate_series",
        "range",
        "unnest",
        "duckdb_tables",
        "duckdb_views",
        "duckdb_columns",
        "duckdb_schemas",
        "duckdb_databases",
        "duckdb_types",
        "duckdb_constraints",
        "duckdb_indexes",
        "duckdb_functions",
        "duckdb_keywords",
    }
)
"""Table functions a query may call: catalog listings and series. Every other one (``read_csv``,
``glob``, ``duckdb_secrets``, ...) touches files or secrets and is refused."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_SET = re.compile(
    r"^\s*(?:SET|RESET)\s+(?:(?:SESSION|LOCAL)\s+)?(?:CHARACTERISTICS\s+AS\s+)?\"?([A-Za-z_][\w.]*)", re.IGNORECASE
)
_TX = re.compile(r"^\s*(BEGIN|START|COMMIT|END|ROLLBACK|ABORT)\b", re.IGNORECASE)
_COPY = re.compile(r"^\s*COPY\b", re.IGNORECASE)
_QUERY_SUFFIX = "__query"

_ERROR_CODES = {  # DuckDB exception -> SQLSTATE
    duckdb.ParserException: "42601",
    duckdb.CatalogException: "42P01",
    duckdb.BinderException: "42703",
    duckdb.PermissionException: "42501",
    duckdb.ConversionException: "22000",
    duckdb.InvalidInputException: "22023",
    duckdb.TransactionException: "25000",
}


class PgError(PipelineError):
    """An error to send as a Postgres ``ErrorResponse``: ``sqlstate`` (5 characters) and message."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE to report for ``exc`` (``XX000`` when nothing more precise is known)."""
    if isinstance(exc, PgError):
        return exc.sqlstate
    for cls, code in _ERROR_CODES.items():
        if isinstance(exc, cls):
            return code
    return "XX000"


# -- results ---------------------------------------------------------------------------------------------


def _bvtype(duck_type: str) -> BVType:
    """The buenavista (so Postgres) type for a DuckDB type name."""
    name = duck_type.upper()
    if name.endswith("]") or name.startswith(("STRUCT", "MAP", "UNION")):
        return BVType.JSON
    if name in ("BIGINT", "UINTEGER"):
        return BVType.BIGINT
    if name in ("TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT"):
        return BVType.INTEGER
    if name in ("HUGEINT", "UHUGEINT", "UBIGINT") or name.startswith("DECIMAL"):
        return BVType.DECIMAL
    if name in ("DOUBLE", "FLOAT", "REAL"):
        return BVType.FLOAT
    if name == "BOOLEAN":
        return BVType.BOOL
    if name == "DATE":
        return BVType.DATE
    if name.startswith("TIMESTAMP"):
        return BVType.TIMESTAMP
    if name == "TIME":
        return BVType.TIME
    if name == "BLOB":
        return BVType.BYTES
    return BVType.TEXT  # VARCHAR, JSON (already text), UUID, INTERVAL, ENUM, BIT...


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)


def _plain(value: Any) -> Any:
    """A DuckDB value as buenavista's text encoders expect it: aware timestamps as naive UTC, lists and
    structs as JSON-able data, anything without an encoder (UUID, interval...) as its string."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, (dict, list, tuple)):
        return _jsonable(value)
    if value is None or isinstance(value, (int, float, str, bool, bytes, Decimal, date, time, datetime)):
        return value
    return str(value)


class _Result(QueryResult):
    """A fetched result: columns ``[(name, BVType)]`` and rows, or only a command ``status`` tag."""

    def __init__(
        self, columns: list[tuple[str, BVType]] | None = None, rows: list[list] | None = None, status: str = ""
    ) -> None:
        super().__init__()
        self._columns = columns
        self._rows = rows or []
        self._status = status

    def has_results(self) -> bool:
        return self._columns is not None

    def column_count(self) -> int:
        return len(self._columns or [])

    def column(self, index: int) -> tuple[str, BVType]:
        return (self._columns or [])[index]

    def rows(self):
        return iter(self._rows)

    def status(self) -> str:
        return self._status


class CopyResult(_Result):
    """A ``COPY ... TO STDOUT``'s answer: the query's ``columns`` and ``rows`` and how to write them
    (``copy``); the server streams them as CopyData (:func:`pipeline.pgwire.copyout.copy_lines`)."""

    def __init__(self, copy: CopyOut, result: _Result) -> None:
        super().__init__(None, list(result.rows()), status=f"COPY {len(result._rows)}")
        self.copy = copy
        self.columns = [result.column(i) for i in range(result.column_count())]


# -- the read-only session -------------------------------------------------------------------------------


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


class ReadOnlySession(Session):
    """One client connection: its own DuckDB cursor, queries only, each in a read-only transaction."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        relations: Mapping[str, str] | None = None,
        before_query: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._cur = cursor
        self._before_query = before_query
        self._cur.execute("SET python_enable_replacements = false")  # no Python variables as tables
        for statement in catalog_ddl(relations):  # temporary: this connection's own, never the engine's
            self._cur.execute(statement)
        self._in_tx = False  # a client BEGIN holds a DuckDB read-only transaction open
        self._failed = False  # an error inside the client's transaction: refuse until it ends

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self._cur

    def in_transaction(self) -> bool:
        return self._in_tx

    def close(self) -> None:
        try:
            self._cur.close()
        except duckdb.Error:
            pass

    def execute_sql(self, sql: str, params=None) -> QueryResult:
        """Run ``sql`` (one or more statements) read-only; returns the last statement's result.

        Raises :class:`PgError` for what is refused and DuckDB's exceptions for query errors; inside a
        client transaction any error aborts it (``25P02`` until ``ROLLBACK``), as on Postgres.
        """
        try:
            if self._before_query is not None and not self._in_tx:
                self._before_query()  # the engine's latest evaluation, when its database is not this one
            return self._execute(sql, params)
        except Exception:
            if self._in_tx and not self._failed:
                self._failed = True
                self._end("ROLLBACK")
            raise

    def _execute(self, sql: str, params) -> QueryResult:
        text = sql.strip().rstrip(";").strip()
        if not text:
            return _Result(status="")
        listing = show_query(text)
        if listing is not None:
            return self._select(listing, None)
        sql = rewrite_catalog_query(sql)
        try:
            statements = self._cur.extract_statements(sql)
        except duckdb.Error as exc:
            if _TX.match(text):  # e.g. BEGIN ISOLATION LEVEL ..., which DuckDB does not parse
                statements = None
            elif _COPY.match(text):  # a COPY form DuckDB does not parse: ours says what is wrong with it
                return self._copy(text)
            else:
                raise PgError("42601", str(exc).splitlines()[0]) from None
        if (
            statements is None
            or all(s.type == duckdb.StatementType.TRANSACTION for s in statements)
            and len(statements) == 1
        ):
            return self._transaction(text)
        kinds = [self._admit(s) for s in statements]  # refuse the lot before running any of it
        if "copy" in kinds and len(statements) > 1:
            raise PgError("0A000", "COPY ... TO STDOUT must be sent as a statement of its own")
        result = _Result(status="")
        for statement, kind in zip(statements, kinds, strict=True):
            if kind == "select":
                result = self._select(statement.query, params if len(statements) == 1 else None)
            elif kind == "set":
                result = _Result(status="SET")
            elif kind == "deallocate":
                result = _Result(status="DEALLOCATE")
            elif kind == "copy":
                result = self._copy(statement.query)
            else:
                result = self._transaction(statement.query)
        return result

    def _admit(self, statement) -> str:
        """What to do with one statement: ``select``, ``copy``, ``set`` (ignored), ``tx``; raises if refused."""
        kind = statement.type
        query = statement.query.strip()
        if kind == duckdb.StatementType.SELECT:
            self._check_reads(query)
            return "select"
        if kind == duckdb.StatementType.TRANSACTION:
            return "tx"
        if kind == duckdb.StatementType.COPY:
            self._admit_copy(query)
            return "copy"
        if kind == duckdb.StatementType.SET:
            match = _SET.match(query)
            if match and match.group(1).lower() in CLIENT_SETTINGS:
                return "set"
            raise PgError(
                "25006",
                f"cannot execute {_verb(query)} in a read-only connection: the embedded "
                "engine's settings are not the client's to change",
            )
        if query.upper().startswith("DEALLOCATE"):
            return "deallocate"  # psycopg drops prepared statements it no longer caches
        raise PgError(
            "25006",
            f"cannot execute {_verb(query)} in a read-only connection: the embedded "
            "engine serves its views read-only over Postgres wire",
        )

    def _admit_copy(self, text: str) -> CopyOut:
        """A ``COPY ... TO STDOUT`` of a query this session may run; raises :class:`PgError` otherwise
        (``25006`` COPY FROM or a query that writes, ``42501`` a server file, ``42601`` bad syntax)."""
        try:
            copy = parse_copy(text)
        except CopyError as exc:
            raise PgError(exc.sqlstate, str(exc)) from None
        try:
            inner = self._cur.extract_statements(copy.query)
        except duckdb.Error as exc:
            raise PgError("42601", str(exc).splitlines()[0]) from None
        if len(inner) != 1:
            raise PgError("42601", "COPY (query) takes one query")
        if self._admit(inner[0]) != "select":
            raise PgError("25006", "cannot execute COPY of a statement that is not a query in a read-only connection")
        return copy

    def _copy(self, text: str) -> CopyResult:
        copy = self._admit_copy(text)
        return CopyResult(copy, self._select(copy.query, None))

    def _check_reads(self, query: str) -> None:
        """Refuse a query that reads files, secrets or the engine's internal query views."""
        row = self._cur.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
        tree = json.loads(row[0]) if row else {"error": True}
        if tree.get("error"):
            raise PgError("0A000", f"cannot check this query: {tree.get('error_message', 'not a plain query')}")
        for node in _walk(tree.get("statements", [])):
            kind = node.get("type")
            if kind == "TABLE_FUNCTION":
                name = str((node.get("function") or {}).get("function_name", "")).lower()
                if name not in TABLE_FUNCTIONS:
                    raise PgError(
                        "42501",
                        f"permission denied for function {name}: queries over the embedded "
                        "engine's Postgres wire read its tables and views only",
                    )
            elif kind == "BASE_TABLE":
                name = str(node.get("table_name", ""))
                if not _IDENTIFIER.match(name):
                    raise PgError("42501", f"permission denied for {name!r}: only tables and views can be read")
                if name.endswith(_QUERY_SUFFIX):
                    raise PgError(
                        "42P01",
                        f"relation {name} is internal to the engine; query {name.removesuffix(_QUERY_SUFFIX)} instead",
                    )

    def _select(self, query: str, params) -> _Result:
        if self._failed:
            raise PgError("25P02", "current transaction is aborted, commands ignored until end of transaction block")
        own_tx = not self._in_tx
        if own_tx:
            self._cur.execute("BEGIN TRANSACTION READ ONLY")
        try:
            self._cur.execute(query, list(params) if params else None)
            description = self._cur.description
            rows = self._cur.fetchall() if description else []
        finally:
            if own_tx:
                self._end("COMMIT")
        if not description:
            return _Result(status="SELECT 0")
        columns = [(d[0], _bvtype(str(d[1]))) for d in description]
        return _Result(columns, [[_plain(v) for v in row] for row in rows])

    def _transaction(self, text: str) -> _Result:
        verb = _TX.match(text)
        word = verb.group(1).upper() if verb else ""
        if word in ("BEGIN", "START"):
            if not self._in_tx:
                self._cur.execute("BEGIN TRANSACTION READ ONLY")
                self._in_tx, self._failed = True, False
            return _Result(status="BEGIN")
        if word in ("COMMIT", "END", "ROLLBACK", "ABORT"):
            failed = self._failed
            if self._in_tx and not failed:
                self._end("ROLLBACK")  # nothing was written: ending the snapshot is all there is to do
            self._in_tx, self._failed = False, False
            return _Result(status="ROLLBACK" if failed or word in ("ROLLBACK", "ABORT") else "COMMIT")
        raise PgError("0A000", f"{text.split()[0]} is not supported over the embedded engine's Postgres wire")

    def _end(self, verb: str) -> None:
        try:
            self._cur.execute(verb)
        except duckdb.Error:  # no transaction left to end (DuckDB ended it on an error)
            pass


def _verb(query: str) -> str:
    """The statement's verb for a message: ``INSERT``, ``CREATE TABLE``, ``SET threads``..."""
    words = query.split()
    if not words:
        return "this"
    if words[0].upper() in ("CREATE", "DROP", "ALTER", "SET", "RESET") and len(words) > 1:
        return f"{words[0].upper()} {words[1].rstrip('=;')}"
    return words[0].upper().rstrip(";")


class EngineConnection(Connection):
    """buenavista's connection interface over one root cursor of the engine's database."""

    def __init__(
        self,
        root: duckdb.DuckDBPyConnection,
        relations: Mapping[str, str] | None = None,
        before_query: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._root = root
        self._before_query = before_query
        self._relations = dict(relations) if relations is not None else None
        self._lock = threading.Lock()

    def parameters(self) -> dict[str, str]:
        return {
            "server_version": SERVER_VERSION,
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "TimeZone": "UTC",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "is_superuser": "off",
            "default_transaction_read_only": "on",
        }

    def new_session(self) -> Session:
        with self._lock:  # one thread at a time derives cursors from the root
            cursor = self._root.cursor()
        return ReadOnlySession(cursor, self._relations, self._before_query)
