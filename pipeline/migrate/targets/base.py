"""What every migration target shares: the catalog table, the lock, and running one step.

A target is one database the migrator brings to ``sql/``: RisingWave (or Postgres, in tests) over
psycopg, or an embedded DuckDB file. Both keep two tables of ours:

* ``pipeline_migrate_catalog``: one row per applied object (name, kind, hash, depends_on, sql, source,
  applied_at). ``plan`` and ``status`` compare ``sql/`` with it.
* ``pipeline_migrate_lock``: at most one row (primary key ``name = 'migrate'``) with its owner and an
  expiry. RisingWave has no advisory locks and no multi-statement write transactions, so the lock is an
  insert-if-absent: the row is inserted (Postgres and DuckDB reject a duplicate key; on RisingWave the
  table is ``ON CONFLICT DO NOTHING``), then read back; whoever's owner is in the row holds the lock.
  An expired row (a crashed migrator) is taken over; a live one refuses with :class:`LockHeld`.
  Expiry is refreshed after every step, and compares client clocks (keep them roughly in sync).
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.migrate.kafka import ConnectorSettings, inject, is_kafka, render
from pipeline.migrate.model import CREATE, DROP, RECREATE, CatalogEntry, LockHeld, MigrateError, Step
from pipeline.sqlmodel.objects import SqlObject

CATALOG_TABLE = "pipeline_migrate_catalog"
LOCK_TABLE = "pipeline_migrate_lock"
LOCK_NAME = "migrate"
OWN_TABLES = frozenset({CATALOG_TABLE, LOCK_TABLE})
DEFAULT_LOCK_TTL_S = 900.0

CATALOG_DDL = f"""CREATE TABLE IF NOT EXISTS {CATALOG_TABLE} (
    name VARCHAR PRIMARY KEY,
    kind VARCHAR,
    hash VARCHAR,
    depends_on VARCHAR,
    sql VARCHAR,
    source VARCHAR,
    applied_at TIMESTAMPTZ
)"""

LOCK_DDL = f"""CREATE TABLE IF NOT EXISTS {LOCK_TABLE} (
    name VARCHAR PRIMARY KEY,
    owner VARCHAR,
    acquired_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ
)"""


def default_owner() -> str:
    """``user@host pid N #xxxxxx``: who holds a lock, unique per migrator even within one process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()} #{uuid.uuid4().hex[:6]}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Target(ABC):
    """A database the migrator applies ``sql/`` to. Use as a context manager; ``close`` disconnects.

    ``engine`` is ``embedded``, ``risingwave`` or ``postgres``; ``display`` is the target as shown to
    people (no password); ``errors`` are the exception types a failing statement raises.
    """

    engine: str
    display: str
    errors: tuple[type[BaseException], ...] = ()
    placeholder = "%s"

    def __init__(self, kafka: ConnectorSettings | None = None) -> None:
        self.kafka = kafka or ConnectorSettings()

    # --- what each engine provides -------------------------------------------------------------
    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run ``sql`` and return its rows."""

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run ``sql`` (autocommit)."""

    @abstractmethod
    def _missing_table(self, exc: BaseException) -> bool:
        """Whether ``exc`` says a table does not exist."""

    @abstractmethod
    def _unique_violation(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a duplicate-key error."""

    @abstractmethod
    def list_objects(self) -> dict[str, str] | None:
        """Every relation in the target's schema (name -> kind) except our own tables; ``None`` when the
        target cannot list them."""

    @abstractmethod
    def drop_statement(self, name: str, kind: str) -> str:
        """The statement dropping object ``name`` of ``kind`` (empty when nothing needs to run)."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect."""

    def create_statement(self, obj: SqlObject) -> tuple[str, str]:
        """``(statement to run, statement to show)`` for creating ``obj``; they differ only by redacted
        secrets. Kafka connectors get the apply-time settings; anything else runs as written in
        ``sql/``."""
        if is_kafka(obj):
            return render(obj, inject(obj, self.kafka)), render(obj, inject(obj, self.kafka, redact=True))
        text = obj.sql.strip().rstrip(";").rstrip()
        return text, text

    def materializes(self, kind: str) -> bool:
        """Whether an object of ``kind`` exists as a relation on this target (an embedded sink does not)."""
        return True

    def lock_ddl(self) -> list[str]:
        """DDL of the lock table, alternatives in order of preference (the first that runs wins)."""
        return [LOCK_DDL]

    # --- catalog -------------------------------------------------------------------------------
    def _p(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    def ensure_tables(self) -> None:
        """Create the catalog and lock tables if they do not exist yet."""
        self._execute(CATALOG_DDL)
        last: BaseException | None = None
        for ddl in self.lock_ddl():
            try:
                self._execute(ddl)
                return
            except self.errors as exc:
                last = exc
        assert last is not None
        raise last

    def read_catalog(self) -> dict[str, CatalogEntry]:
        """The applied objects by name; empty when the catalog table does not exist (nothing applied)."""
        try:
            rows = self._query(
                f"SELECT name, kind, hash, depends_on, sql, source, applied_at FROM {CATALOG_TABLE} ORDER BY name"
            )
        except self.errors as exc:
            if self._missing_table(exc):
                return {}
            raise
        return {
            r[0]: CatalogEntry(
                r[0], r[1], r[2], tuple(d for d in (r[3] or "").split(",") if d), r[4] or "", r[5] or "", r[6]
            )
            for r in rows
        }

    def record(self, obj: SqlObject, shown_sql: str) -> None:
        """Upsert ``obj``'s catalog row (applied now)."""
        self.forget(obj.name)
        self._execute(
            self._p(
                f"INSERT INTO {CATALOG_TABLE} (name, kind, hash, depends_on, sql, source, applied_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            (obj.name, obj.kind, obj.hash, ",".join(sorted(obj.depends_on)), shown_sql, obj.sql, _utcnow()),
        )

    def forget(self, name: str) -> None:
        """Delete ``name``'s catalog row, if any."""
        self._execute(self._p(f"DELETE FROM {CATALOG_TABLE} WHERE name = ?"), (name,))

    # --- lock ----------------------------------------------------------------------------------
    def _lock_row(self) -> tuple | None:
        rows = self._query(
            self._p(f"SELECT owner, acquired_at, expires_at FROM {LOCK_TABLE} WHERE name = ?"), (LOCK_NAME,)
        )
        return rows[0] if rows else None

    def acquire_lock(self, owner: str, ttl_s: float = DEFAULT_LOCK_TTL_S) -> None:
        """Take the migration lock for ``owner`` for ``ttl_s`` seconds; takes over an expired lock.

        Raises :class:`LockHeld` when another owner's lock is live.
        """
        self.ensure_tables()
        row = None
        for _ in range(3):
            now = _utcnow()
            try:
                self._execute(
                    self._p(f"INSERT INTO {LOCK_TABLE} (name, owner, acquired_at, expires_at) VALUES (?, ?, ?, ?)"),
                    (LOCK_NAME, owner, now, now + timedelta(seconds=ttl_s)),
                )
            except self.errors as exc:
                if not self._unique_violation(exc):
                    raise
            row = self._lock_row()
            if row is None:  # released between our insert and read: try again
                continue
            holder, _, expires_at = row
            if holder == owner:
                return
            if expires_at is not None and expires_at < now:  # a crashed migrator's lock: take it over
                self._execute(self._p(f"DELETE FROM {LOCK_TABLE} WHERE name = ? AND owner = ?"), (LOCK_NAME, holder))
                continue
            break
        if row is None:
            raise LockHeld("unknown", None, None)
        raise LockHeld(row[0], row[1], row[2])

    def refresh_lock(self, owner: str, ttl_s: float = DEFAULT_LOCK_TTL_S) -> None:
        """Push ``owner``'s lock expiry to ``ttl_s`` seconds from now. Raises if the
        lock expired meanwhile (:class:`MigrateError`)."""
        self._execute(
            self._p(f"UPDATE {LOCK_TABLE} SET expires_at = ? WHERE name = ? AND owner = ?"),
            (_utcnow() + timedelta(seconds=ttl_s), LOCK_NAME, owner),
        )
        row = self._lock_row()
        if row is None or row[0] != owner:
            taken = f" and {row[0]} took it over" if row else ""
            raise MigrateError(f"lost the migration lock (it expired{taken}); stopped")

    def release_lock(self, owner: str) -> None:
        """Drop ``owner``'s lock (a no-op if it is not the holder)."""
        self._execute(self._p(f"DELETE FROM {LOCK_TABLE} WHERE name = ? AND owner = ?"), (LOCK_NAME, owner))

    @contextmanager
    def locked(self, owner: str | None = None, ttl_s: float = DEFAULT_LOCK_TTL_S) -> Iterator[str]:
        """Hold the lock for the ``with`` block; yields the owner string. Raises :class:`LockHeld`."""
        owner = owner or default_owner()
        self.acquire_lock(owner, ttl_s)
        try:
            yield owner
        finally:
            try:
                self.release_lock(owner)
            except self.errors:  # the connection is gone: the lock expires by itself
                pass

    # --- steps ---------------------------------------------------------------------------------
    def run_step(self, step: Step) -> None:
        """Run one step and record it in the catalog; raises one of :attr:`errors` when it fails."""
        if step.statement:
            self._execute(step.statement)
        if step.action in (CREATE, RECREATE):
            assert step.obj is not None
            self.record(step.obj, step.sql)
        elif step.action == DROP:
            self.forget(step.name)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
