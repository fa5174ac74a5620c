"""The Postgres catalog as psql reads it, over the embedded engine's DuckDB, listed as RisingWave lists it.

psql's ``\\d``, ``\\dt``, ``\\dv``, ``\\dm`` and ``\\l`` send fixed queries on ``pg_catalog`` (``pg_class``,
``pg_namespace``, ``pg_database``, ``pg_get_userbyid``...). DuckDB has a ``pg_catalog`` of its own, but it
lacks some of those functions and knows nothing of RisingWave's kinds of relation: on the embedded engine
a materialized view of ``sql/`` is a DuckDB table refreshed from an internal ``<name>__query`` view, and a
source is a table too. This module gives every client session (its own DuckDB connection) temporary
views and macros of those names that shadow DuckDB's, and rewrites the few idioms of psql's queries that
DuckDB does not parse (``OPERATOR(pg_catalog.~)``, ``COLLATE pg_catalog.default``, the ``pg_catalog.``
qualifier that would bypass the shadows). Relations list as on RisingWave (its ``pg_class``: ``relkind``
``r`` for a table, ``m`` for a materialized view, ``v`` for a view, ``s`` for a source), in schema
``public``; the internal query views are not listed.

It also answers RisingWave's ``SHOW TABLES``, ``SHOW MATERIALIZED VIEWS``, ``SHOW VIEWS``,
``SHOW SOURCES`` and ``SHOW SINKS`` (RisingWave's ``SHOW`` command: one ``Name`` column) from the same
list. Nothing here writes to the engine's database: the temporary objects live in the session's own
connection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["KINDS", "catalog_ddl", "rewrite_catalog_query", "show_query"]

KINDS = {"table": "r", "materialized_view": "m", "view": "v", "source": "s", "sink": "k"}
"""RisingWave's kinds of relation (``sql/``'s ``CREATE TABLE``, ``CREATE MATERIALIZED VIEW``...) and the
``pg_class.relkind`` RisingWave gives each (``s`` and ``k`` are RisingWave's own letters)."""

DATABASE = "dev"
"""The database name ``\\l`` lists (RisingWave's default database)."""

OWNER = "root"
"""The owner every relation has (RisingWave's default user)."""

RELATIONS_VIEW = "pgwire_relations"
"""The session's list of public relations: ``name``, ``kind`` (a key of :data:`KINDS`), ``oid`` (DuckDB's,
``NULL`` for a sink, which the embedded engine does not store)."""

_TYPE_NAMES = {
    16: "boolean",
    17: "bytea",
    20: "bigint",
    21: "smallint",
    23: "integer",
    25: "text",
    114: "json",
    700: "real",
    701: "double precision",
    1043: "character varying",
    1082: "date",
    1083: "time without time zone",
    1114: "timestamp without time zone",
    1184: "timestamp with time zone",
    1186: "interval",
    2950: "uuid",
    3802: "jsonb",
}
"""Postgres's names of types by OID, as ``format_type`` gives them (DuckDB's gives ``int4``, ``varchar``...)."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_QUERY_SUFFIX = "__query"

_SHOW = re.compile(
    r"^\s*SHOW\s+(TABLES|MATERIALIZED\s+VIEWS|VIEWS|SOURCES|SINKS)(?:\s+FROM\s+(\w+))?\s*;?\s*$", re.IGNORECASE
)
_SHOW_KINDS = {
    "TABLES": "table",
    "MATERIALIZEDVIEWS": "materialized_view",
    "VIEWS": "view",
    "SOURCES": "source",
    "SINKS": "sink",
}

# psql's idioms DuckDB does not parse, and the qualifier to drop; string literals and quoted names are
# matched first so that nothing inside them is touched.
_TOKENS = re.compile(
    r"""(?P<literal>[Ee]?'(?:[^']|'')*'|"(?:[^"]|"")*")"""
    r"""|(?P<operator>OPERATOR\s*\(\s*pg_catalog\s*\.\s*(?P<op>[^)\s]+)\s*\))"""
    r"""|(?P<collate>COLLATE\s+pg_catalog\s*\.\s*"?default"?)"""
    r"""|(?P<regcast>::\s*pg_catalog\s*\.\s*reg(?:type|class|proc|namespace|role|oper|collation)\b)"""
    r"""|(?P<qualifier>\bpg_catalog\s*\.\s*)""",
    re.IGNORECASE,
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def catalog_ddl(relations: Mapping[str, str] | None = None) -> list[str]:
    """The statements that create one session's catalog, in the session's connection only: temporary
    views ``pg_class``, ``pg_attribute``, ``pg_namespace``, ``pg_database``, ``pg_roles`` and
    :data:`RELATIONS_VIEW`, empty ``pg_policy``, ``pg_statistic_ext``, ``pg_publication``,
    ``pg_publication_rel`` and ``pg_inherits`` (psql 15's ``\\d NAME`` reads them all), and temporary
    macros ``format_type`` (Postgres's type names), ``pg_get_userbyid``, ``pg_get_viewdef``,
    ``pg_get_expr``, ``quote_ident`` and the like.

    ``relations`` maps each public relation's name to its kind (a key of :data:`KINDS`), as ``sql/``
    declares it; only those are listed (sinks too, by ``SHOW SINKS``). Without it the kinds are read
    from DuckDB: a table with a ``<name>__query`` view is a materialized view, other tables are tables,
    views are views, and the ``__query`` views are hidden.

    Raises ``ValueError`` for a name that is not a plain identifier or an unknown kind.
    """
    declared = []
    for name, kind in (relations or {}).items():
        if not _IDENTIFIER.match(name) or kind not in KINDS:
            raise ValueError(f"relation {name!r} of kind {kind!r}: expected a plain name and one of {sorted(KINDS)}")
        declared.append(f"({_literal(name)}, {_literal(kind)})")
    declared_sql = (
        f"SELECT * FROM (VALUES {', '.join(declared)}) AS d(name, kind)"
        if declared
        else "SELECT NULL::VARCHAR AS name, NULL::VARCHAR AS kind WHERE false"
    )
    stored_sql = (
        "SELECT table_name AS name, table_oid AS oid, 'table' AS stored FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND NOT temporary "
        "UNION ALL SELECT view_name, view_oid, 'view' FROM duckdb_views() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND NOT temporary AND NOT internal"
    )
    inferred = (
        "CASE WHEN s.stored = 'table' AND s.name || '__query' IN (SELECT name FROM stored) "
        "THEN 'materialized_view' ELSE s.stored END"
    )
    type_names = " ".join(f"WHEN {oid} THEN {_literal(name)}" for oid, name in _TYPE_NAMES.items())
    relkind = " ".join(f"WHEN {_literal(kind)} THEN {_literal(letter)}" for kind, letter in KINDS.items())
    return [
        f"""CREATE OR REPLACE TEMP VIEW {RELATIONS_VIEW} AS
            WITH declared AS ({declared_sql}), stored AS ({stored_sql})
            SELECT s.name, COALESCE(d.kind, {inferred}) AS kind, s.oid
            FROM stored s LEFT JOIN declared d ON d.name = s.name
            WHERE CASE WHEN {bool(declared)} THEN d.name IS NOT NULL
                       ELSE NOT suffix(s.name, '{_QUERY_SUFFIX}') END
            UNION ALL SELECT name, kind, NULL FROM declared WHERE kind = 'sink'""",
        f"""CREATE OR REPLACE TEMP VIEW pg_class AS
            SELECT c.* REPLACE (CASE r.kind {relkind} END AS relkind, 10 AS relowner, NULL::BIGINT AS relam,
                                'd' AS relreplident, NULL::VARCHAR[] AS reloptions),
                   false AS relforcerowsecurity
            FROM system.pg_catalog.pg_class c JOIN {RELATIONS_VIEW} r ON r.oid = c.oid""",
        """CREATE OR REPLACE TEMP VIEW pg_attribute AS
            SELECT a.* REPLACE (CASE WHEN a.atttypid IN (17, 25, 114, 1043, 1700, 3802) THEN 'x' ELSE 'p' END
                                AS attstorage, -1 AS attstattarget)
            FROM system.pg_catalog.pg_attribute a""",
        """CREATE OR REPLACE TEMP VIEW pg_namespace AS
            SELECT oid, CASE schema_name WHEN 'main' THEN 'public' ELSE schema_name END AS nspname,
                   10 AS nspowner, NULL::VARCHAR[] AS nspacl
            FROM duckdb_schemas()
            WHERE (database_name = current_database() AND schema_name = 'main')
               OR (database_name = 'system' AND schema_name IN ('pg_catalog', 'information_schema'))""",
        f"""CREATE OR REPLACE TEMP VIEW pg_database AS
            SELECT 16384 AS oid, {_literal(DATABASE)} AS datname, 10 AS datdba, 6 AS encoding,
                   'c' AS datlocprovider, false AS datistemplate, true AS datallowconn, -1 AS datconnlimit,
                   'C' AS datcollate, 'C' AS datctype, NULL::VARCHAR AS daticulocale,
                   NULL::VARCHAR[] AS datacl""",
        """CREATE OR REPLACE TEMP VIEW pg_roles AS
            SELECT 10 AS oid, 'root' AS rolname, true AS rolsuper, true AS rolinherit, true AS rolcreaterole,
                   true AS rolcreatedb, true AS rolcanlogin, false AS rolreplication, -1 AS rolconnlimit,
                   NULL::TIMESTAMP AS rolvaliduntil, false AS rolbypassrls, NULL::VARCHAR[] AS rolconfig""",
        """CREATE OR REPLACE TEMP VIEW pg_policy AS
            SELECT NULL::BIGINT AS oid, NULL::VARCHAR AS polname, NULL::BIGINT AS polrelid,
                   NULL::VARCHAR AS polcmd, NULL::BOOLEAN AS polpermissive, NULL::BIGINT[] AS polroles,
                   NULL::VARCHAR AS polqual, NULL::VARCHAR AS polwithcheck WHERE false""",
        """CREATE OR REPLACE TEMP VIEW pg_statistic_ext AS
            SELECT NULL::BIGINT AS oid, NULL::BIGINT AS stxrelid, NULL::VARCHAR AS stxname,
                   NULL::BIGINT AS stxnamespace, NULL::BIGINT AS stxowner, NULL::INTEGER AS stxstattarget,
                   NULL::INTEGER[] AS stxkeys, NULL::VARCHAR[] AS stxkind WHERE false""",
        """CREATE OR REPLACE TEMP VIEW pg_publication AS
            SELECT NULL::BIGINT AS oid, NULL::VARCHAR AS pubname, NULL::BIGINT AS pubowner,
                   NULL::BOOLEAN AS puballtables, NULL::BOOLEAN AS pubinsert, NULL::BOOLEAN AS pubupdate,
                   NULL::BOOLEAN AS pubdelete, NULL::BOOLEAN AS pubtruncate, NULL::BOOLEAN AS pubviaroot
            WHERE false""",
        """CREATE OR REPLACE TEMP VIEW pg_publication_rel AS
            SELECT NULL::BIGINT AS oid, NULL::BIGINT AS prpubid, NULL::BIGINT AS prrelid WHERE false""",
        """CREATE OR REPLACE TEMP VIEW pg_inherits AS
            SELECT NULL::BIGINT AS inhrelid, NULL::BIGINT AS inhparent, NULL::INTEGER AS inhseqno,
                   NULL::BOOLEAN AS inhdetachpending WHERE false""",
        "CREATE OR REPLACE TEMP MACRO pg_relation_is_publishable(relation) AS false",
        """CREATE OR REPLACE TEMP MACRO quote_ident(name) AS
            CASE WHEN regexp_full_match(name, '[a-z_][a-z0-9_$]*') THEN name
                 ELSE '"' || replace(name, '"', '""') || '"' END""",
        f"""CREATE OR REPLACE TEMP MACRO format_type(type_oid, typmod) AS
            CASE type_oid {type_names} ELSE pg_catalog.format_type(type_oid, typmod) END""",
        f"CREATE OR REPLACE TEMP MACRO pg_get_userbyid(role_oid) AS {_literal(OWNER)}",
        f"""CREATE OR REPLACE TEMP MACRO pg_get_viewdef(relation, pretty) AS (
            SELECT regexp_replace(v.sql, '^CREATE (OR REPLACE )?VIEW [^ ]+ AS ', '')
            FROM {RELATIONS_VIEW} r JOIN duckdb_views() v
              ON v.database_name = current_database() AND v.schema_name = 'main'
             AND v.view_name IN (r.name, r.name || '{_QUERY_SUFFIX}')
            WHERE r.oid = relation
            ORDER BY v.view_name = r.name DESC LIMIT 1)""",
        "CREATE OR REPLACE TEMP MACRO pg_table_size(relation) AS NULL::BIGINT",
        "CREATE OR REPLACE TEMP MACRO pg_encoding_to_char(encoding) AS 'UTF8'",
        "CREATE OR REPLACE TEMP MACRO pg_get_expr(expr, relation) AS expr::VARCHAR, "
        "(expr, relation, pretty) AS expr::VARCHAR",
    ]


def rewrite_catalog_query(sql: str) -> str:
    """``sql`` with psql's catalog idioms in DuckDB's terms: ``OPERATOR(pg_catalog.~)`` as ``~``,
    ``COLLATE pg_catalog.default`` dropped, and ``pg_catalog.`` dropped so the session's shadows of
    ``pg_class``, ``pg_get_userbyid``... answer. Text inside string literals and quoted names is kept.
    A query that does not name ``pg_catalog`` comes back unchanged."""
    if "pg_catalog" not in sql.lower():
        return sql

    def replace(match: re.Match) -> str:
        if match.group("literal"):
            return match.group(0)
        if match.group("operator"):
            return f" {match.group('op')} "
        if match.group("regcast"):  # DuckDB has no reg* types: the oid as text
            return "::VARCHAR"
        return ""

    return _TOKENS.sub(replace, sql)


def show_query(sql: str) -> str | None:
    """The query answering RisingWave's ``SHOW TABLES | MATERIALIZED VIEWS | VIEWS | SOURCES | SINKS
    [FROM public]`` (one ``Name`` column, sorted), or ``None`` when ``sql`` is none of them."""
    match = _SHOW.match(sql)
    if not match:
        return None
    schema = (match.group(2) or "public").lower()
    kind = _SHOW_KINDS[re.sub(r"\s+", "", match.group(1).upper())]
    where = f"kind = {_literal(kind)}" + ("" if schema == "public" else " AND false")
    return f'SELECT name AS "Name" FROM {RELATIONS_VIEW} WHERE {where} ORDER BY name'
