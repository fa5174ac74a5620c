"""Site partitioning for the embedded engine: which sites an input record touches, and a view's query
restricted to some sites.

Every setpoint depends only on its own site's inputs (its breaker tree, meters, sessions, prices and DR
events) plus a few global relations (rules, tariff multipliers). So when a batch of records touches one
site, the engine re-runs each view for that site only: the view's query with every site-keyed relation it
reads filtered to the dirty sites, replacing just those sites' rows. The cost of a one-site change then
follows the site's size, not the fleet's. What makes that correct is a property of ``sql/``: every join
between site-keyed relations is on ids unique across sites (node, session, charger), so a row of site S
is made only from rows of site S and from global relations. ``tests/pipeline/engine`` checks partial
against full evaluation on random changes.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

SITE_COLUMN = "site_id"
SITES_PARAM = "dirty_sites"

#: Stands for "every site": a change that cannot be pinned to sites (a rule, an unknown charger).
ALL = None


def union(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """Union of two site scopes, where ``ALL`` (None) absorbs everything."""
    if a is ALL or b is ALL:
        return ALL
    return a | b


def duckdb_sites() -> exp.Select:
    """The dirty sites as DuckDB reads them: ``SELECT UNNEST($dirty_sites)`` (a named list parameter)."""
    return exp.select(exp.Unnest(expressions=[exp.Placeholder(this=SITES_PARAM)]))


def restrict(query: exp.Expr, site_relations: set[str], sites: exp.Select | None = None) -> exp.Expr:
    """``query`` with each read of a relation in ``site_relations`` replaced by the same relation filtered
    to ``site_id IN (sites)``: ``sites`` is a query of the dirty site ids, by default
    :func:`duckdb_sites` (a DuckDB named parameter holding a list of site ids).

    CTE names are left alone; relations without a ``site_id`` column (rules, acks) are read whole, which is
    right because they only ever join to rows of the sites being computed.
    """
    query = query.copy()
    ctes = {cte.alias for cte in query.find_all(exp.CTE)}
    for table in list(query.find_all(exp.Table)):
        name = table.name
        if name in ctes or name not in site_relations:
            continue
        alias = table.alias or name
        subquery = (
            exp.select("*")
            .from_(exp.to_table(name))
            .where(exp.column(SITE_COLUMN).isin(query=(sites or duckdb_sites()).copy()))
            .subquery(alias)
        )
        table.replace(subquery)
    return query


class SiteIndex:
    """Which sites an input record touches.

    Site-keyed inputs (a ``site_id`` column) name their site; a tombstone on an upsert table takes the
    site its key last had, and a key that moves site dirties both. Inputs without a site column are
    pinned through what the engine has seen: ``session_id`` through the sessions table, else
    ``charge_point_id`` through the topology (chargers are topology nodes); anything else is ``ALL``.
    """

    def __init__(self, sessions_table: str = "ocpp_active_sessions", topology_table: str = "site_topology"):
        self.sessions_table = sessions_table
        self.topology_table = topology_table
        self._key_site: dict[str, dict[str, str | None]] = {}

    def sites(
        self, table: str, columns: list[str], upsert_key: str | None, key: str | None, record: Any
    ) -> frozenset[str] | None:
        """The sites one record (``None`` = tombstone for ``key``) of ``table`` touches, and remember its
        key's site. On an upsert table (``upsert_key``: the contract's key field) rows are keyed by the
        message ``key``, or by that field when the record came without one. Returns ``ALL`` when it
        cannot be pinned."""
        if SITE_COLUMN not in columns:
            return self._pinned(record)
        known = self._key_site.setdefault(table, {})
        touched: set[str | None] = set()
        if upsert_key is not None:
            pk = key if key is not None or record is None else str(getattr(record, upsert_key))
            if pk is not None:  # a tombstone without a key deletes nothing
                if pk in known:
                    touched.add(known[pk])
                if record is None:
                    known.pop(pk, None)
                else:
                    known[pk] = getattr(record, SITE_COLUMN)
        if record is not None:
            touched.add(getattr(record, SITE_COLUMN))
        sites = frozenset(site for site in touched if site is not None)
        return ALL if len(sites) < len(touched) else sites

    def _pinned(self, record: Any) -> frozenset[str] | None:
        if record is None:
            return ALL
        session = getattr(record, "session_id", None)
        site = self._key_site.get(self.sessions_table, {}).get(session) if session else None
        if site is None:
            charger = getattr(record, "charge_point_id", None)
            site = self._key_site.get(self.topology_table, {}).get(charger) if charger else None
        return ALL if site is None else frozenset({site})

    def clear(self) -> None:
        self._key_site.clear()
