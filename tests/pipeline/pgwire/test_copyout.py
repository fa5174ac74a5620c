"""COPY ... TO STDOUT statements read and rows written in COPY's formats (pipeline.pgwire.copyout), and
psql's catalog idioms rewritten (pipeline.pgwire.catalog), without a server."""

from __future__ import annotations

from datetime import datetime

import pytest
from buenavista.core import BVType

from pipeline.pgwire.catalog import rewrite_catalog_query, show_query
from pipeline.pgwire.copyout import CopyError, CopyOut, copy_lines, parse_copy


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (  # psql's \copy (...) TO 'f.csv' WITH CSV HEADER
            "COPY ( select a, ')' AS b FROM t ) TO STDOUT with csv header",
            CopyOut("select a, ')' AS b FROM t", "csv", True, ",", "", '"', '"'),
        ),
        (
            "copy (SELECT 1) to stdout with (format csv, header, delimiter ';', null 'NA', force_quote *);",
            CopyOut("SELECT 1", "csv", True, ";", "NA", '"', '"', ("*",)),
        ),
        ("COPY t TO STDOUT", CopyOut("SELECT * FROM t", "text", False, "\t", "\\N")),
        ('COPY main."t" (a, b) TO STDOUT (HEADER false)', CopyOut('SELECT a, b FROM main."t"', "text")),
        (
            "COPY t TO STDOUT DELIMITER AS '|' NULL AS '' CSV QUOTE AS '''' FORCE QUOTE a, b",
            CopyOut("SELECT * FROM t", "csv", False, "|", "", "'", "'", ("a", "b")),
        ),
        ("COPY t TO STDOUT (FORMAT text, HEADER on, ENCODING 'UTF-8')", CopyOut("SELECT * FROM t", "text", True)),
    ],
)
def test_copy_statements_are_read(sql, expected):
    assert parse_copy(sql) == expected


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("COPY t FROM STDIN", "25006"),
        ("COPY t TO '/tmp/t.csv'", "42501"),
        ("COPY t TO PROGRAM 'cat'", "42501"),
        ("COPY t TO STDOUT (FORMAT binary)", "0A000"),
        ("COPY t TO STDOUT BINARY", "0A000"),
        ("COPY t TO STDOUT (ENCODING 'LATIN1')", "0A000"),
        ("COPY t TO STDOUT (QUOTE '''')", "0A000"),
        ("COPY t TO STDOUT (FORMAT csv, DELIMITER ';;')", "22023"),
        ("COPY t TO STDOUT (HEADER maybe)", "22023"),
        ("COPY t TO STDOUT (FORMAT json)", "42601"),
        ("COPY t TO STDOUT (COMPRESSION 'gzip')", "42601"),
        ("COPY (SELECT 1 TO STDOUT", "42601"),
        ("COPY t TO STDOUT; SELECT 1", "42601"),
        ("COPY TO STDOUT", "42601"),
    ],
)
def test_copy_statements_that_are_refused(sql, code):
    with pytest.raises(CopyError) as refused:
        parse_copy(sql)
    assert refused.value.sqlstate == code, str(refused.value)


COLUMNS = [("id", BVType.INTEGER), ("note", BVType.TEXT), ("ok", BVType.BOOL), ("at", BVType.TIMESTAMP)]
ROWS = [
    [1, 'a, "b"', True, datetime(2024, 6, 4, 10, 0)],
    [2, "", False, None],
    [3, None, None, None],
    [4, "line\nbreak\\", True, datetime(2024, 6, 4, 10, 0, 0, 500000)],
]


def _written(copy: CopyOut, rows=ROWS) -> str:
    return b"".join(copy_lines(copy, COLUMNS, rows)).decode()


def test_csv_quotes_what_needs_it_and_tells_empty_from_null():
    assert _written(parse_copy("COPY t TO STDOUT WITH CSV HEADER")) == (
        "id,note,ok,at\n"
        '1,"a, ""b""",true,2024-06-04 10:00:00\n'
        '2,"",false,\n'
        "3,,,\n"
        '4,"line\nbreak\\",true,2024-06-04 10:00:00.500000\n'
    )
    forced = parse_copy("COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE (note), ESCAPE '\\', NULL 'NULL')")
    assert (
        _written(forced, ROWS[1:4])
        == '2,"",false,NULL\n3,NULL,NULL,NULL\n4,"line\nbreak\\\\",true,2024-06-04 10:00:00.500000\n'
    )


def test_text_format_escapes_and_writes_null_as_backslash_n():
    assert _written(parse_copy("COPY t TO STDOUT (HEADER)"), ROWS[1:]) == (
        "id\tnote\tok\tat\n2\t\tfalse\t\\N\n3\t\\N\t\\N\t\\N\n4\tline\\nbreak\\\\\ttrue\t2024-06-04 10:00:00.500000\n"
    )
    assert _written(parse_copy("COPY t TO STDOUT DELIMITER ','"), ROWS[:1]) == '1,a\\, "b",true,2024-06-04 10:00:00\n'


def test_psql_catalog_idioms_are_rewritten_outside_literals():
    sql = (
        "SELECT pg_catalog.pg_get_userbyid(c.relowner), 'pg_catalog.x', \"pg_catalog.y\" FROM pg_catalog.pg_class c "
        "WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default AND c.oid::pg_catalog.regclass "
        "::pg_catalog.text <> ''"
    )
    assert rewrite_catalog_query(sql) == (
        "SELECT pg_get_userbyid(c.relowner), 'pg_catalog.x', \"pg_catalog.y\" FROM pg_class c "
        "WHERE c.relname  ~  '^(t)$'  AND c.oid::VARCHAR ::text <> ''"
    )
    assert rewrite_catalog_query("SELECT 1") == "SELECT 1"


def test_show_commands_of_risingwave():
    assert show_query("show materialized views;") == (
        "SELECT name AS \"Name\" FROM pgwire_relations WHERE kind = 'materialized_view' ORDER BY name"
    )
    assert show_query("SHOW SINKS FROM public") is not None
    assert "false" in (show_query("SHOW TABLES FROM rw_catalog") or "")
    assert show_query("SHOW ALL TABLES") is None
    assert show_query("SHOW timezone") is None
