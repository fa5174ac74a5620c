"""The database under the embedded engine, behind one interface, with one adapter per database.

:class:`pipeline.engine.embedded.EmbeddedEngine` owns what does not depend on the database: which sites
a record dirties, the order views are refreshed in and the scope of each, the temporal boundaries'
schedule and the sinks' upsert/tombstone diff. A :class:`Backend` owns the rest: the DDL, storing input
records, re-running a view for some sites (or all) and saying which sites' rows moved, the boundary
queries, reading a sink's rows, and the connection that readers (Postgres wire, ``query``) use. The split
follows SQLMesh's engine adapters (one class per engine over a shared interface).

Adapters: :class:`pipeline.engine.duckdb_backend.DuckDBBackend` (DuckDB, vectorised: fast over the whole
fleet, ~5 ms fixed cost per statement) and :class:`pipeline.engine.sqlite_backend.SQLiteBackend`
(stdlib ``sqlite3``: ~20 us per statement, row at a time). :func:`pipeline.engine.adapters.make_backend` builds one by
name (``EngineConfig.backend``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import duckdb
from sqlglot import exp

from pipeline.sqlmodel.objects import SqlObject

#: The names :func:`make_backend` knows.
BACKENDS = ("duckdb", "sqlite", "hybrid")

#: Site scope: a set of site ids, or ``None`` for every site (:data:`pipeline.engine.partition.ALL`).
Scope = frozenset[str] | None


class Backend(ABC):
    """One database under the engine. Not thread-safe: the engine serialises calls.

    Rows handed to :meth:`write` are tuples over :attr:`SqlObject.stored_columns` (the message key, bytes,
    last where ``INCLUDE KEY`` adds it), with Python values (``datetime`` aware in UTC, ``bool``, ``str``,
    numbers); rows read back (:meth:`sink_rows`, :meth:`boundary_rows`, :meth:`query`) carry the same
    Python types whatever the database stores.
    """

    name: ClassVar[str]

    @abstractmethod
    def create_input(self, obj: SqlObject) -> None:
        """Create the table of a RisingWave table or source. Raises :class:`SqlError` if it has no form here."""

    @abstractmethod
    def create_view(self, obj: SqlObject) -> list[str]:
        """Create a (materialized) view as a table the engine refreshes; returns its column names."""

    @abstractmethod
    def prepare(self, views: Sequence[SqlObject], site_keyed: set[str]) -> None:
        """Called once every object exists: compile each view's query restricted to the dirty sites (for
        the views in ``site_keyed``, the relations with a ``site_id`` column)."""

    @abstractmethod
    def write(self, obj: SqlObject, delete_keys: Sequence[bytes], rows: Sequence[tuple[Any, ...]]) -> None:
        """Delete the rows of ``obj`` whose message key is in ``delete_keys``, then insert ``rows``."""

    @abstractmethod
    def delete_before(self, obj: SqlObject, column: str, before: datetime, keep_latest_by: tuple[str, ...] = ()) -> int:
        """Delete ``obj``'s rows whose timestamp ``column`` is before ``before`` (a retention); returns how many.
        With ``keep_latest_by`` (columns), the newest row (by ``column``) of each group of equal values in those
        columns stays, however old: a view reading the latest per group sees the same."""

    @abstractmethod
    def clear(self, obj: SqlObject) -> None:
        """Delete every row of an input table."""

    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None:
        """Undo the open transaction; the next refresh recomputes every view."""

    @abstractmethod
    def set_now(self, now: datetime) -> None:
        """Bind ``NOW()`` of every later statement to ``now``."""

    @abstractmethod
    def has_run(self, view: str) -> bool:
        """True once ``view`` has been refreshed for every site."""

    @abstractmethod
    def refresh_view(self, view: SqlObject, scope: Scope) -> Scope:
        """Re-run ``view`` for ``scope`` (``None``: every site) and return the sites whose rows changed
        (``None`` when a view without sites changed at all)."""

    @abstractmethod
    def probe(self, query: exp.Query) -> bool:
        """True when the database can run ``query`` (a boundary query, ``NOW()`` unbound)."""

    @abstractmethod
    def render(self, query: exp.Query, site_relations: set[str] | None = None) -> str:
        """``query`` (RisingWave dialect) as this database runs it: ``NOW()`` bound to the engine clock,
        and with ``site_relations`` the reads of those relations restricted to the dirty sites."""

    @abstractmethod
    def boundary_rows(self, sql: str, scope: Scope) -> list[tuple[str | None, datetime]]:
        """Run a boundary query from :meth:`render` (restricted to ``scope`` when not ``None``)."""

    @abstractmethod
    def sink_rows(self, sink: SqlObject, scope: Scope) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The rows of a sink's query, for the sites in ``scope`` (``None``: all): column names and rows."""

    @abstractmethod
    def rows(self, name: str, scope: Scope) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The rows of table or view ``name`` for ``scope`` (``None``: all) as of the last refresh: column
        names and rows, without bringing the readers' connection up to date."""

    @abstractmethod
    def read_connection(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection holding every table and view under its ``sql/`` name, for readers (Postgres
        wire). Call :meth:`sync_readers` before each read to bring it up to the last evaluation."""

    def sync_readers(self) -> None:  # noqa: B027 (optional hook)
        """Bring :meth:`read_connection` up to date (nothing to do when it is the engine's own)."""

    def note_input(self, name: str, scope: Scope) -> None:  # noqa: B027 (optional hook)
        """Record that input table ``name`` changed for ``scope`` (for a read mirror)."""

    @abstractmethod
    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a read query in DuckDB's SQL over the tables and views; returns column names and rows."""

    @abstractmethod
    def close(self) -> None: ...


def retention_delete(table: str, column: str, keep_latest_by: tuple[str, ...], null_safe_eq: str) -> str:
    """``DELETE FROM table WHERE column < ?`` (one parameter: the cutoff, in the backend's time type) that
    spares the newest row of each group of ``keep_latest_by`` (empty: nothing spared), for
    :meth:`Backend.delete_before`; ``table`` as the dialect quotes it, ``null_safe_eq`` its null-safe
    equality."""
    sql = f'DELETE FROM {table} WHERE "{column}" < ?'
    if not keep_latest_by:
        return sql
    same = " AND ".join(f'x."{c}" {null_safe_eq} {table}."{c}"' for c in keep_latest_by)
    return sql + f' AND "{column}" < (SELECT MAX(x."{column}") FROM {table} AS x WHERE {same})'
