"""The whole answer of a Postgres-wire server (RisingWave, Postgres, the embedded engine's port) to a
failed statement, as a short text for the operator.

RisingWave answers with the message "Failed to run the query" and the cause on the lines after it
("Caused by: ..."), some with a hint; Postgres puts the particulars in the DETAIL and HINT fields. The
first line of the exception, all that used to be shown, names neither. :func:`describe` keeps the
message, detail and hint (psycopg's ``Error.diag``), in one line when that is all there is, else in a
short block.
"""

from __future__ import annotations

MAX_LINES = 12
MAX_LINE_CHARS = 300

__all__ = ["describe"]


def _clip(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3] + "..."


def describe(exc: BaseException) -> str:
    """``exc`` as text: the server's message (its first line, then any further lines indented by two
    spaces), then ``DETAIL: ...`` and ``HINT: ...`` when the server sent them. At most 12 lines of at
    most 300 characters. An error without a server message (a refused connection) gives its own first
    line; one without any text, its type name."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if diag is None or not primary:
        text = str(exc).strip()
        return _clip(text.splitlines()[0]) if text else type(exc).__name__
    lines = [line.rstrip() for line in primary.strip().splitlines() if line.strip()]
    out = [lines[0]] + [f"  {line}" for line in lines[1:]]
    for label, value in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint)):
        if value and value.strip() and value.strip() not in primary:
            value_lines = value.strip().splitlines()
            out.append(f"  {label}: {value_lines[0]}")
            out += [f"    {line}" for line in value_lines[1:] if line.strip()]
    if len(out) > MAX_LINES:
        out = out[: MAX_LINES - 1] + [f"  ... ({len(out) - MAX_LINES + 1} more lines)"]
    return "\n".join(_clip(line) for line in out)
