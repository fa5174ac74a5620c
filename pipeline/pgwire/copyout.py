"""Exports over the embedded engine's Postgres wire: ``COPY (query) TO STDOUT``, which psql's ``\\copy``
and drivers' copy APIs send to get a query's rows as CSV or text.

psql's ``\\copy (SELECT ...) TO 'f.csv' WITH CSV HEADER`` becomes ``COPY (SELECT ...) TO STDOUT WITH CSV
HEADER`` on the wire, and psql writes the file itself from the rows the server streams back
(CopyOutResponse, CopyData, CopyDone: PostgreSQL's protocol, "COPY Operations"). This module reads such a
statement (:func:`parse_copy`, PostgreSQL's ``COPY`` grammar, both its option list and the older
``WITH CSV HEADER`` form) and writes the rows in COPY's formats (:func:`copy_lines`, PostgreSQL's "File
Formats" of the ``COPY`` page). Only ``TO STDOUT`` is read-only: ``COPY ... FROM`` and a copy to a
server file are refused (:class:`CopyError`), as every other write is.

Values are written as the wire's text format writes them in a query result (buenavista's encoders), so
a file holds what psql shows for the same query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from buenavista.core import BVType
from buenavista.postgres import BVTYPE_TO_PGTYPE, PG_UNKNOWN

from pipeline.contracts.errors import PipelineError

__all__ = ["CopyError", "CopyOut", "copy_lines", "parse_copy"]


class CopyError(PipelineError):
    """A ``COPY`` that is refused or malformed: ``sqlstate`` (``25006`` a write, ``42501`` a server file,
    ``0A000`` unsupported, ``42601`` syntax) and message."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class CopyOut:
    """A ``COPY ... TO STDOUT``: the ``query`` whose rows to send and how to write them.

    ``format`` is ``text`` or ``csv``; ``delimiter`` (one character), ``null`` (the string written for
    NULL), ``quote`` and ``escape`` (CSV only, one character each) default as PostgreSQL's do; ``header``
    writes the column names first; ``force_quote`` (CSV) quotes every non-NULL value of those columns
    (``"*"``: all).
    """

    query: str
    format: str = "text"
    header: bool = False
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'
    escape: str = '"'
    force_quote: tuple[str, ...] = ()


_TOKEN = re.compile(
    r"""\s*(?:(?P<string>[Ee]?'(?:[^']|'')*')|(?P<name>"(?:[^"]|"")*"|[A-Za-z_][\w$]*)"""
    r"""|(?P<number>[+-]?\d+)|(?P<punct>[(),.*;]))"""
)
_TRUE = {"true", "on", "1"}
_FALSE = {"false", "off", "0"}


def _syntax(message: str) -> CopyError:
    return CopyError("42601", f"COPY: {message}")


def _skip_quoted(text: str, i: int) -> int:
    """The index after the literal, quoted name or comment starting at ``text[i]`` (``i`` if none)."""
    if text.startswith("--", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end + 1
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        if end < 0:
            raise _syntax("unterminated comment")
        return end + 2
    if text[i] in "'\"":
        quote, j = text[i], i + 1
        while True:
            j = text.find(quote, j)
            if j < 0:
                raise _syntax("unterminated quoted string")
            if text.startswith(quote * 2, j):
                j += 2
                continue
            return j + 1
    return i


def _parenthesized(text: str, start: int) -> int:
    """The index of the ``)`` closing the ``(`` at ``text[start]``."""
    depth, i = 0, start
    while i < len(text):
        skipped = _skip_quoted(text, i)
        if skipped != i:
            i = skipped
            continue
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise _syntax("unbalanced parentheses")


class _Tokens:
    def __init__(self, text: str) -> None:
        self.items: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if not text[pos:].strip():
                break
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise _syntax(f"unexpected {text[pos:].strip()[:20]!r}")
            kind = match.lastgroup or ""
            self.items.append((kind, match.group(kind)))
            pos = match.end()
        self.at = 0

    def peek(self) -> str:
        """The next token, upper-cased if a bare word; ``""`` at the end."""
        if self.at >= len(self.items):
            return ""
        kind, value = self.items[self.at]
        return value.upper() if kind == "name" and not value.startswith('"') else value

    def next(self) -> tuple[str, str]:
        if self.at >= len(self.items):
            raise _syntax("unexpected end of statement")
        self.at += 1
        return self.items[self.at - 1]

    def take(self, *words: str) -> bool:
        if self.peek() in words:
            self.at += 1
            return True
        return False

    def string(self) -> str:
        kind, value = self.next()
        if kind != "string":
            raise _syntax(f"expected a quoted string, not {value!r}")
        body = value[value.index("'") + 1 : -1].replace("''", "'")
        if value[0] in "Ee":
            body = body.encode("latin-1", "backslashreplace").decode("unicode_escape")
        return body

    def name(self) -> str:
        kind, value = self.next()
        if kind != "name":
            raise _syntax(f"expected a name, not {value!r}")
        return value[1:-1].replace('""', '"') if value.startswith('"') else value.lower()

    def value(self) -> str:
        """An option's value: a quoted string, a word or a number."""
        kind, value = self.next()
        if kind == "string":
            self.at -= 1
            return self.string()
        if kind in ("name", "number"):
            return value.lower()
        raise _syntax(f"unexpected {value!r}")


def _source(text: str) -> tuple[str, str]:
    """The query a ``COPY`` reads and the rest of the statement after it (``TO ...``)."""
    body = text.strip().rstrip(";")
    match = re.match(r"(?is)^\s*COPY\s+", body)
    if not match:
        raise _syntax("not a COPY statement")
    rest = body[match.end() :]
    if rest.startswith("("):
        end = _parenthesized(rest, 0)
        query = rest[1:end].strip()
        if not query:
            raise _syntax("empty query")
        return query, rest[end + 1 :]
    table = re.match(r'^((?:"(?:[^"]|"")*"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"(?:[^"]|"")*"|[A-Za-z_][\w$]*))*)\s*', rest)
    if not table:
        raise _syntax("expected a table name or a parenthesized query after COPY")
    rest = rest[table.end() :]
    columns = "*"
    if rest.startswith("("):
        end = _parenthesized(rest, 0)
        columns, rest = rest[1:end].strip(), rest[end + 1 :]
    return f"SELECT {columns} FROM {table.group(1)}", rest


def parse_copy(text: str) -> CopyOut:
    """Read a ``COPY {table [(columns)] | (query)} TO STDOUT [[WITH] options]`` statement.

    Options, as PostgreSQL's ``COPY`` takes them: ``(FORMAT csv|text, HEADER [bool], DELIMITER 'c', NULL
    's', QUOTE 'c', ESCAPE 'c', FORCE_QUOTE (columns) | *, ENCODING 'UTF8')`` or the older ``[BINARY]
    [DELIMITER [AS] 'c'] [NULL [AS] 's'] [CSV [HEADER] [QUOTE [AS] 'c'] [ESCAPE [AS] 'c'] [FORCE QUOTE
    columns | *]]`` that psql's ``\\copy ... WITH CSV HEADER`` sends.

    Raises :class:`CopyError`: ``25006`` for ``COPY ... FROM``, ``42501`` for a copy to a file or a
    program, ``0A000`` for the binary format or another encoding than UTF8, ``42601`` for bad syntax.
    """
    query, rest = _source(text)
    tokens = _Tokens(rest)
    if tokens.take("FROM"):
        raise CopyError(
            "25006",
            "cannot execute COPY FROM in a read-only connection: the embedded engine's tables are not the client's to fill",
        )
    if not tokens.take("TO"):
        raise _syntax("expected TO STDOUT")
    if not tokens.take("STDOUT"):
        raise CopyError(
            "42501",
            "permission denied for COPY to a file or program on the server: use COPY ... TO STDOUT "
            "(psql's \\copy writes the file on the client)",
        )
    options: dict[str, Any] = {}
    tokens.take("WITH")
    if tokens.take("("):
        while True:
            name = tokens.name()
            if tokens.peek() in (",", ")"):
                value: Any = "true"
            elif name == "force_quote" and tokens.take("("):
                value = _names(tokens)
            elif name == "force_quote" and tokens.take("*"):
                value = ("*",)
            else:
                value = tokens.value()
            options[name] = value
            if tokens.take(")"):
                break
            if not tokens.take(","):
                raise _syntax(f"expected , or ) after option {name}")
    else:
        _legacy_options(tokens, options)
    tokens.take(";")
    if tokens.peek():
        raise _syntax(f"unexpected {tokens.peek()!r}")
    return _build(query, options)


def _names(tokens: _Tokens) -> tuple[str, ...]:
    names = [tokens.name()]
    while tokens.take(","):
        names.append(tokens.name())
    if not tokens.take(")"):
        raise _syntax("expected ) after the column names")
    return tuple(names)


def _legacy_options(tokens: _Tokens, options: dict[str, Any]) -> None:
    """PostgreSQL's pre-9.0 option syntax (``WITH CSV HEADER``...), which psql's ``\\copy`` passes on."""
    while tokens.peek() and tokens.peek() != ";":
        if tokens.take("BINARY"):
            options["format"] = "binary"
        elif tokens.take("CSV"):
            options["format"] = "csv"
        elif tokens.take("HEADER"):
            options["header"] = "true"
        elif tokens.take("DELIMITER", "NULL", "QUOTE", "ESCAPE"):
            word = tokens.items[tokens.at - 1][1].lower()
            tokens.take("AS")
            options[word] = tokens.string()
        elif tokens.take("FORCE"):
            if not tokens.take("QUOTE"):
                raise _syntax("expected QUOTE after FORCE")
            if tokens.take("*"):
                options["force_quote"] = ("*",)
            else:
                names = [tokens.name()]
                while tokens.take(","):
                    names.append(tokens.name())
                options["force_quote"] = tuple(names)
        else:
            raise _syntax(f"unknown option {tokens.peek()!r}")


def _one_char(name: str, value: str) -> str:
    if len(value) != 1:
        raise CopyError("22023", f"COPY {name} must be a single one-byte character")
    return value


def _build(query: str, options: dict[str, Any]) -> CopyOut:
    known = {"format", "header", "delimiter", "null", "quote", "escape", "force_quote", "encoding"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise _syntax(f"option {unknown[0]!r} not recognized")
    fmt = str(options.get("format", "text"))
    if fmt == "binary":
        raise CopyError("0A000", "COPY in the binary format is not supported here: use FORMAT csv or text")
    if fmt not in ("text", "csv"):
        raise _syntax(f"COPY format {fmt!r} not recognized")
    encoding = str(options.get("encoding", "utf8")).lower().replace("-", "").replace("_", "")
    if encoding != "utf8":
        raise CopyError("0A000", "COPY writes UTF8 only")
    header = str(options.get("header", "false"))
    if header not in _TRUE | _FALSE:
        raise CopyError("22023", f"COPY HEADER takes a Boolean value, not {header!r}")
    csv = fmt == "csv"
    if not csv and any(name in options for name in ("quote", "escape", "force_quote")):
        raise CopyError("0A000", "COPY QUOTE, ESCAPE and FORCE_QUOTE are available only in CSV mode")
    quote = _one_char("quote", options.get("quote", '"'))
    delimiter = _one_char("delimiter", options.get("delimiter", "," if csv else "\t"))
    null = str(options.get("null", "" if csv else "\\N"))
    if delimiter in "\r\n" or (not csv and delimiter == "\\") or (csv and delimiter == quote):
        raise CopyError("22023", f"COPY delimiter {delimiter!r} cannot be used")
    return CopyOut(
        query=query,
        format=fmt,
        header=header in _TRUE,
        delimiter=delimiter,
        null=null,
        quote=quote,
        escape=_one_char("escape", options.get("escape", quote)),
        force_quote=tuple(options.get("force_quote", ())),
    )


# -- writing rows ----------------------------------------------------------------------------------------


_TEXT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def _text_field(value: str, delimiter: str) -> str:
    out = []
    for char in value:
        if char in _TEXT_ESCAPES:
            out.append(_TEXT_ESCAPES[char])
        elif char == delimiter:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _csv_field(value: str, copy: CopyOut, force: bool) -> str:
    needs_quotes = (
        force
        or value == copy.null
        or value == "\\."
        or any(c in value for c in (copy.delimiter, copy.quote, "\n", "\r"))
    )
    if not needs_quotes:
        return value
    escaped = "".join(copy.escape + c if c in (copy.quote, copy.escape) else c for c in value)
    return copy.quote + escaped + copy.quote


def copy_lines(copy: CopyOut, columns: Sequence[tuple[str, BVType]], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """The lines of ``rows`` in ``copy``'s format, each ending in ``\\n``, UTF-8: the header first if
    asked (the column names), then one line per row. ``columns`` are the result's ``(name, type)``;
    values are written as the wire's text format writes them."""
    encoders = [BVTYPE_TO_PGTYPE.get(kind, PG_UNKNOWN)[1] for _, kind in columns]
    csv = copy.format == "csv"
    forced = [copy.force_quote == ("*",) or name in copy.force_quote for name, _ in columns]

    def line(fields: list[str | None], header: bool = False) -> bytes:
        out = []
        for i, field in enumerate(fields):
            if field is None:
                out.append(copy.null)
            elif csv:
                out.append(_csv_field(field, copy, forced[i] and not header))
            else:
                out.append(_text_field(field, copy.delimiter))
        return (copy.delimiter.join(out) + "\n").encode()

    if copy.header:
        yield line([name for name, _ in columns], header=True)
    for row in rows:
        yield line([None if value is None else str(encoders[i](value)) for i, value in enumerate(row)])
