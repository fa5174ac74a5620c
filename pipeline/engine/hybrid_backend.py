"""The hybrid adapter of the embedded engine (:mod:`pipeline.engine.backend`): SQLite for the few sites an
input touches, DuckDB for the whole fleet.

Measured (README, Performance): SQLite evaluates one site in a few milliseconds where DuckDB's fixed cost
per statement makes it ~150 ms; over 50,000 sessions DuckDB's vectorised sorts and joins are several
times faster than SQLite's row-at-a-time ones. So each view refresh goes where it is cheap: for at most
``sqlite_max_sites`` sites to :class:`~pipeline.engine.sqlite_backend.SQLiteBackend`, for more (a full
evaluation, a tick's views that read ``NOW()``) to :class:`~pipeline.engine.duckdb_backend.DuckDBBackend`,
unless the whole fleet is that small: then every refresh runs on SQLite (a tick of one 20-charger site
costs SQLite ~1 ms, DuckDB 35-75 ms, and a DR cut landing during it waited for it). ``NOW()`` is bound in
DuckDB only when DuckDB is next used.

Both hold every input (DuckDB's writes are queued and applied when DuckDB is next used or once
:data:`FLUSH_ROWS` are queued, a write per table, so an input batch costs no DuckDB statement). A view's
rows live in both databases; after a refresh in one, the other's rows of the sites that moved are out of
date, and are copied over (only those sites) before the other next reads them: to refresh a view, to diff
a sink, to run a boundary query, or for a reader. So the first
per-site evaluation of a site after a full evaluation copies that site's rows of each view from DuckDB
(~1 ms a view); later ones touch DuckDB not at all. DuckDB is what readers (Postgres wire) read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import duckdb
from sqlglot import exp

from pipeline.engine.backend import Backend, Scope
from pipeline.engine.duckdb_backend import DuckDBBackend
from pipeline.engine.partition import ALL, SITE_COLUMN, union
from pipeline.engine.sqlite_backend import SQLiteBackend
from pipeline.sqlmodel.objects import SqlObject

#: Above this many sites a refresh runs on DuckDB (a site of ~10-20 sessions costs SQLite ~2-5 ms, a
#: DuckDB refresh ~150 ms whatever the sites).
SQLITE_MAX_SITES = 50

#: Queued input rows that DuckDB takes at once rather than when it is next used (a start-up catch-up,
#: a bulk load): a full evaluation then does not carry DuckDB's load.
FLUSH_ROWS = 1000

_SEP = "\x00"


def _subtract(stale: Scope, done: Scope) -> Scope:
    if done is ALL:
        return frozenset()
    if stale is ALL:
        return ALL
    return stale - done


def _intersect(a: Scope, b: Scope) -> Scope:
    if a is ALL:
        return b
    if b is ALL:
        return a
    return a & b


_EMPTY: frozenset[str] = frozenset()

#: One change to the out-of-date sites, for a rollback: (database, view, "set", the value before) or
#: (database, view, "removed" | "added", the sites).
_Undo = tuple[str, str, str, Scope]

_Write = tuple[SqlObject, Sequence[bytes] | None, Sequence[tuple[Any, ...]]]


def _merged(queue: list[_Write]) -> list[_Write]:
    """``queue`` grouped by table (in each table's order: the tables are independent) with consecutive
    writes to one table folded into one (deletes ``None``: empty the table), so a backlog of input
    batches costs DuckDB one statement pair per table, not one per batch and table: 1,000 rows of a
    20-charger site's telemetry, acks and meter readings took DuckDB ~200 ms as they came, interleaved."""
    by_table: dict[str, list[_Write]] = {}
    for write in queue:
        by_table.setdefault(write[0].name, []).append(write)
    out: list[_Write] = []
    for obj, deletes, rows in (write for writes in by_table.values() for write in writes):
        held_deletes = out[-1][1] if out and out[-1][0] is obj else None
        if held_deletes is not None and deletes is not None:
            held_rows = out[-1][2]
            if deletes and obj.key_column is not None:
                gone = set(deletes)
                at = obj.stored_columns.index(obj.key_column)
                held_rows = [row for row in held_rows if row[at] not in gone]
                known = set(held_deletes)
                held_deletes = [*held_deletes, *(k for k in deletes if k not in known)]
            out[-1] = (obj, held_deletes, [*held_rows, *rows])
        else:
            out.append((obj, deletes, list(rows)))
    return out


class HybridBackend(Backend):
    """SQLite for refreshes of few sites, DuckDB for the rest and for readers (see the module docstring).

    ``sqlite_max_sites``: a refresh of at most this many sites runs on SQLite; ``fleet_max_sites`` (default
    ``sqlite_max_sites``): while the input rows have named at most this many sites, refreshes of every site
    (a full evaluation, a tick) run on SQLite too."""

    name = "hybrid"

    def __init__(self, sqlite_max_sites: int = SQLITE_MAX_SITES, fleet_max_sites: int | None = None) -> None:
        self.duck = DuckDBBackend()
        self.lite = SQLiteBackend(catalog=self.duck.con)
        self.max_sites = sqlite_max_sites
        self.fleet_max_sites = sqlite_max_sites if fleet_max_sites is None else fleet_max_sites
        self._queue: list[_Write] = []
        # per database: view -> the sites whose rows there are out of date (ALL: every row)
        # (sets are changed in place, by the sites that change, and journalled for a rollback: a full
        # evaluation leaves every site of a view out of date in the other database, and copying a set of
        # 5,000 sites for each view a one-site change touches cost more than that change's statements)
        self._stale: dict[str, dict[str, set[str] | frozenset[str] | None]] = {"duck": {}, "lite": {}}
        self._views: dict[str, SqlObject] = {}
        self._rank: dict[str, int] = {}  # per view: its place in dependency order
        self._site_keyed: set[str] = set()
        self._reads: dict[str, frozenset[str]] = {}  # per rendered query: the relations it reads
        self._in_tx = False
        self._duck_tx = False
        self._saved: tuple[list[_Undo], int] | None = None  # in a transaction: its journal, queue length
        self._sites: set[str] = set()  # every site an input row named (never shrinks)
        self._site_at: dict[str, int] = {}  # per site-keyed input: where its rows hold site_id
        self._now: datetime | None = None  # NOW() for DuckDB, bound when DuckDB is next used
        self._duck_now: datetime | None = None

    def _use_lite(self, scope: Scope, name: str | None = None) -> bool:
        if scope is ALL:  # every site: SQLite too while the fleet is small
            return len(self._sites) <= self.fleet_max_sites
        return (name is not None and name not in self._site_keyed) or len(scope) <= self.max_sites

    def _engine(self, lite: bool) -> DuckDBBackend | SQLiteBackend:
        if lite:
            return self.lite
        self._flush()
        if self._in_tx and not self._duck_tx:
            self.duck.begin()
            self._duck_tx = True
        if self._now is not None and self._now != self._duck_now:
            self.duck.set_now(self._now)
            self._duck_now = self._now
        return self.duck

    def _flush(self) -> None:
        """Apply the queued input writes to DuckDB (outside any transaction of a refresh: they are committed)."""
        if not self._queue or self._duck_tx:
            return
        queue, self._queue = _merged(self._queue), []
        for obj, deletes, rows in queue:
            if deletes is None:
                self.duck.clear(obj)
            else:
                self.duck.write(obj, deletes, rows)
        if self._saved is not None:
            self._saved = (self._saved[0], 0)

    # -- which sites of a view are out of date in each database ------------------------------------
    def _held(self, db: str, name: str) -> Scope:
        """The sites whose rows of ``name`` are out of date in ``db`` (to read only: a set changed in place)."""
        return cast(Scope, self._stale[db].get(name, _EMPTY))

    def _replace(self, db: str, name: str, value: Scope) -> set[str] | None:
        table = self._stale[db]
        if self._saved is not None:
            self._saved[0].append((db, name, "set", self._held(db, name)))
        held: set[str] | None = ALL if value is ALL else set(value)
        table[name] = held
        return held

    def _remove(self, db: str, name: str, sites: Scope) -> None:
        """``sites`` of ``name`` are up to date in ``db`` now."""
        held = self._held(db, name)
        if held is ALL or sites is ALL:
            if held is ALL or held:
                self._replace(db, name, _subtract(held, sites))
            return
        gone = held & sites
        if gone:
            self._change(db, name, held, "removed", gone)

    def _mark(self, db: str, name: str, sites: Scope) -> None:
        """``sites`` of ``name`` are out of date in ``db`` now."""
        held = self._held(db, name)
        if held is ALL or (sites is not ALL and not sites):
            return
        if sites is ALL:
            self._replace(db, name, ALL)
            return
        new = sites - held
        if new:
            self._change(db, name, held, "added", new)

    def _change(self, db: str, name: str, held: frozenset[str], kind: str, sites: frozenset[str]) -> None:
        """Add ``sites`` to (``kind`` "added") or remove them from ("removed") the out-of-date set of
        ``name`` in ``db``, which holds ``held``, in place, journalled for a rollback."""
        live = self._stale[db].get(name)
        if not isinstance(live, set):
            live = self._replace(db, name, held)
        assert live is not None
        if self._saved is not None:
            self._saved[0].append((db, name, kind, sites))
        if kind == "added":
            live.update(sites)
        else:
            live.difference_update(sites)

    def _undo(self, journal: list[_Undo]) -> None:
        for db, name, kind, value in reversed(journal):
            table = self._stale[db]
            if kind == "set":
                table[name] = value
                continue
            held = table[name]
            assert isinstance(held, set) and value is not ALL
            if kind == "removed":
                held.update(value)
            else:
                held.difference_update(value)

    def _pull(self, names: set[str], scope: Scope) -> None:
        """Copy into DuckDB SQLite's rows of the views in ``names`` for the sites in ``scope`` that SQLite
        changed since DuckDB last had them."""
        for name in names:
            held = self._held("duck", name)
            if held is not ALL and not held:
                continue
            need: Scope = ALL
            if name in self._site_keyed and held is not ALL:
                need = frozenset(held) if scope is ALL else held & scope
                if not need:
                    continue
            target = self._engine(False)
            _, rows = self.lite.rows(name, need)
            target.replace_rows(name, need, rows)
            self._remove("duck", name, need)

    def _ensure_lite(self, names: set[str], scope: Scope) -> None:
        """Bring SQLite's rows of the views in ``names`` up to date for ``scope`` by re-running them there
        for their out-of-date sites (upstream first): cheaper than copying from DuckDB, whose every
        statement costs milliseconds. DuckDB's rows of those sites are then SQLite's to copy back."""
        for name in sorted(names, key=self._rank.__getitem__):
            held = self._held("lite", name)
            if held is not ALL and not held:
                continue
            view = self._views[name]
            need: Scope = ALL
            if name in self._site_keyed and scope is not ALL:
                need = scope if held is ALL else held & scope
                if not need:
                    continue
            self._ensure_lite(view.depends_on & self._views.keys(), need)
            self.lite.refresh_view(view, need)
            self._remove("lite", name, need if name in self._site_keyed else ALL)
            self._mark("duck", name, need)

    # -- schema and writes -------------------------------------------------------------------------
    def create_input(self, obj: SqlObject) -> None:
        self.duck.create_input(obj)
        self.lite.create_input(obj)
        if SITE_COLUMN in obj.stored_columns:
            self._site_at[obj.name] = obj.stored_columns.index(SITE_COLUMN)

    def create_view(self, obj: SqlObject) -> list[str]:
        cols = self.duck.create_view(obj)
        self.lite.create_view(obj)
        self._views[obj.name] = obj
        self._rank[obj.name] = len(self._rank)
        return cols

    def prepare(self, views: Sequence[SqlObject], site_keyed: set[str]) -> None:
        self.duck.prepare(views, site_keyed)
        self.lite.prepare(views, site_keyed)
        self._site_keyed = set(site_keyed)

    def write(self, obj: SqlObject, delete_keys: Sequence[bytes], rows: Sequence[tuple[Any, ...]]) -> None:
        self.lite.write(obj, delete_keys, rows)
        self._queue.append((obj, list(delete_keys), list(rows)))
        at = self._site_at.get(obj.name)
        if at is not None:
            self._sites.update(row[at] for row in rows if row[at] is not None)

    def delete_before(self, obj: SqlObject, column: str, before: datetime, keep_latest_by: tuple[str, ...] = ()) -> int:
        self._flush()  # DuckDB first has every write queued before this delete
        self.duck.delete_before(obj, column, before, keep_latest_by)
        return self.lite.delete_before(obj, column, before, keep_latest_by)

    def clear(self, obj: SqlObject) -> None:
        self.lite.clear(obj)
        self._queue.append((obj, None, []))

    def begin(self) -> None:
        self.lite.begin()
        self._in_tx = True
        self._saved = ([], len(self._queue))

    def commit(self) -> None:
        self.lite.commit()
        if self._duck_tx:
            self.duck.commit()
        self._in_tx = self._duck_tx = False
        self._saved = None
        if sum(len(rows) for _, _, rows in self._queue) >= FLUSH_ROWS:  # a bulk load: DuckDB takes it now
            self._flush()

    def rollback(self) -> None:
        self.lite.rollback()
        if self._duck_tx:
            self.duck.rollback()
        else:
            self.duck._digest.clear()
        if self._saved is not None:
            journal, queued = self._saved
            self._undo(journal)
            del self._queue[queued:]
        self._in_tx = self._duck_tx = False
        self._saved = None

    def set_now(self, now: datetime) -> None:
        self._now = now  # DuckDB's is bound when DuckDB is next used (:meth:`_engine`): a statement, ~1 ms
        self.lite.set_now(now)

    # -- evaluation --------------------------------------------------------------------------------
    def has_run(self, view: str) -> bool:
        return self.duck.has_run(view) or self.lite.has_run(view)

    def refresh_view(self, view: SqlObject, scope: Scope) -> Scope:
        name = view.name
        deps = view.depends_on & self._views.keys()
        if self._use_lite(scope, name):
            self._ensure_lite(deps, scope)
            moved = self.lite.refresh_view(view, scope)
            held = self._held("lite", name)
            if held is ALL or held:
                # SQLite compared against rows older than DuckDB's, which the later views read: the sites
                # it held out of date count as moved
                if name not in self._site_keyed:
                    moved = ALL
                    self._remove("lite", name, ALL)
                else:
                    moved = union(moved, _intersect(held, scope))
                    self._remove("lite", name, scope)
            self._mark("duck", name, moved)
            return moved
        self._pull(deps | {name}, scope)
        moved = self._engine(False).refresh_view(view, scope)
        self.lite._ran.add(name)  # SQLite re-runs it for a site before reading it there
        self._mark("lite", name, moved)
        return moved

    def probe(self, query: exp.Query) -> bool:
        return self.duck.probe(query) and self.lite.probe(query)

    def render(self, query: exp.Query, site_relations: set[str] | None = None) -> str:
        text = self.duck.render(query, site_relations) + _SEP + self.lite.render(query, site_relations)
        ctes = {cte.alias for cte in query.find_all(exp.CTE)}
        self._reads[text] = frozenset(t.name for t in query.find_all(exp.Table) if t.name not in ctes)
        return text

    def _ready(self, reads: set[str], scope: Scope) -> DuckDBBackend | SQLiteBackend:
        """The database that answers a read of the views ``reads`` for ``scope``, with their rows for it
        brought up to date there: SQLite when it runs this scope, else DuckDB."""
        if self._use_lite(scope):
            self._ensure_lite(reads, scope)
            return self.lite
        self._pull(reads, scope)
        return self._engine(False)

    def boundary_rows(self, sql: str, scope: Scope) -> list[tuple[str | None, datetime]]:
        duck_sql, lite_sql = sql.split(_SEP)
        db = self._ready(set(self._reads.get(sql, ())) & self._views.keys(), scope)
        return db.boundary_rows(lite_sql if db is self.lite else duck_sql, scope)

    def sink_rows(self, sink: SqlObject, scope: Scope) -> tuple[list[str], list[tuple[Any, ...]]]:
        return self._ready(sink.depends_on & self._views.keys(), scope).sink_rows(sink, scope)

    def rows(self, name: str, scope: Scope) -> tuple[list[str], list[tuple[Any, ...]]]:
        """From the database whose rows of ``name`` are up to date for ``scope`` (SQLite when both are);
        when neither is, SQLite's are copied into DuckDB first (as for a reader)."""
        if name not in self._views:
            return self.lite.rows(name, scope)  # an input: both hold every row
        for db in ("lite", "duck"):
            held = self._held(db, name)
            if held is not ALL and not (held if scope is ALL else held & scope):
                return self.lite.rows(name, scope) if db == "lite" else self._engine(False).rows(name, scope)
        self._pull({name}, scope)
        return self._engine(False).rows(name, scope)

    # -- readers -----------------------------------------------------------------------------------
    def read_connection(self) -> duckdb.DuckDBPyConnection:
        return self.duck.con

    def sync_readers(self) -> None:
        """Apply the queued input writes to DuckDB and copy in the view rows SQLite changed since."""
        self._flush()
        if not any(v is ALL or v for v in self._stale["duck"].values()):
            return
        self.duck.begin()
        try:
            self._duck_tx = True
            self._pull(set(self._stale["duck"]), ALL)
        except BaseException:
            self.duck.rollback()
            self._stale["duck"] = dict.fromkeys(self._views, ALL)
            raise
        finally:
            self._duck_tx = False
        self.duck.commit()

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        if self._now is not None and self._now != self._duck_now:
            self.duck.set_now(self._now)
            self._duck_now = self._now
        return self.duck.query(sql)

    def close(self) -> None:
        self.lite.close()
        self.duck.close()
