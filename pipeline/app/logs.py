"""Logging for every ``pipeline`` command: readable text for people, JSON lines for log collectors.

The code that logs (``executor/`` included) uses only the standard library: ``logging.getLogger(__name__)``,
%-style arguments, and ``extra={...}`` for the fields a machine should be able to filter on
(``charge_point_id``, ``reason``, ``action``, ``connector_id``, ``status``, ``duration_ms`` ...). How a
record looks is decided here, once per process, by :func:`configure_logging`:

- ``text``: on standard error; at a terminal rich's handler (``logger: message``), otherwise (a file, a
  pipe, a service manager) one plain line per record, never wrapped at the terminal width. The extra
  fields are left out, so messages name the charger themselves.
- ``json``: one JSON object a line on standard error (standard output stays for a command's results),
  formatted by python-json-logger: ``timestamp`` (ISO-8601 UTC, milliseconds, ``Z``), ``level``,
  ``logger``, ``message``, then every extra field (and ``exc_info`` with a traceback).

At a level above DEBUG, debug records cost one ``isEnabledFor`` check: the executor guards anything
costlier (payload summaries) with it. The ``ocpp`` and ``websockets`` libraries log every frame; their
loggers are held at WARNING unless the level is DEBUG.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

__all__ = ["FORMATS", "LEVELS", "JsonLineFormatter", "configure_logging", "make_handler"]

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")
NOISY = ("ocpp", "websockets")


class JsonLineFormatter(JsonFormatter):
    """A record as one JSON object: ``timestamp``, ``level``, ``logger``, ``message``, then the extras."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level", "name": "logger"}, timestamp=True
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["timestamp"] = None  # first key of the line
        super().add_fields(log_data, record, message_dict)
        when = datetime.fromtimestamp(record.created, tz=UTC)
        log_data["timestamp"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_handler(fmt: str, stream: IO[str] | None = None) -> logging.Handler:
    """A handler for ``fmt`` (``text`` or ``json``), writing to ``stream`` (default: standard error; text
    through rich only when that is a terminal). Raises ``ValueError`` for another format."""
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonLineFormatter())
        return handler
    if fmt == "text":
        target = stream or sys.stderr
        if stream is not None or not target.isatty():  # a file or a pipe: one record per line, never wrapped
            handler = logging.StreamHandler(target)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            return handler
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s", datefmt="[%X]"))
        return handler
    raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def configure_logging(
    level: str = "info", fmt: str = "text", *, stream: IO[str] | None = None, force: bool = False
) -> None:
    """Set the root logger's level and install the one handler for ``fmt``.

    Calling it again replaces the handler it installed. Like :func:`logging.basicConfig`, it leaves the
    root logger alone when that already has another handler (a test harness, an embedding application)
    unless ``force``. Raises ``ValueError`` for an unknown level or format.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = make_handler(fmt, stream)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_pipeline_handler", False)]
    for old in ours:
        root.removeHandler(old)
        old.close()
    if force or len(root.handlers) == 0:
        handler._pipeline_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.NOTSET if level.lower() == "debug" else logging.WARNING)
