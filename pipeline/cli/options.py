"""Options and helpers shared by the ``pipeline`` commands: ISO times, logging, Postgres wire.

``--pg-host``/``--pg-port``/``--no-pg`` (``pipeline run`` and ``pipeline replay``) serve the embedded
engine's tables and views read-only on Postgres wire (:mod:`pipeline.pgwire.server`); the flags override the
``pgwire`` settings section (``PIPELINE_PGWIRE__*``, ``--settings``), whose defaults are ``127.0.0.1:4566``
(RisingWave's port, so the analysts' ``psql`` line is the same) and on.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import click

from pipeline.app.logs import FORMATS, LEVELS

if TYPE_CHECKING:  # the settings load pydantic-settings: only commands that read them pay for it
    from pipeline.app.settings import PgwireOverrides, Settings

__all__ = [
    "ISO",
    "IsoTime",
    "PgServiceArgs",
    "log_level_option",
    "pg_options",
    "pg_overrides",
    "pg_service_args",
    "replay_pg_args",
    "setup_logging",
    "dsn_option",
]


class IsoTime(click.ParamType):
    """An ISO-8601 timestamp; without an offset it is taken as UTC."""

    name = "ISO-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 time (e.g. 2024-06-03T17:00:00Z)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


ISO = IsoTime()


def setup_logging(level: str | None, settings: Settings | None = None, default: str = "info") -> None:
    """Set up logging (:mod:`pipeline.app.logs`). Level: the command's ``--log-level``, else the group's,
    else ``log.level`` (env, settings file), else ``default``; format: the group's ``--log-format``, else
    ``log.format``. ``settings`` default to the environment and ``$PIPELINE_SETTINGS_FILE``."""
    from pipeline.app.logs import configure_logging
    from pipeline.app.settings import load_settings

    ctx = click.get_current_context(silent=True)
    group = ctx.find_root().params if ctx is not None else {}
    log = (settings or load_settings()).log
    configure_logging(level or group.get("log_level") or log.level or default, group.get("log_format") or log.format)


F = TypeVar("F", bound=Callable[..., Any])


def log_level_option(default: str = "info") -> Callable[[F], F]:
    """The per-command ``--log-level`` (the group's ``pipeline --log-level`` works for every command)."""
    return click.option(
        "--log-level",
        type=click.Choice(LEVELS, case_sensitive=False),
        help=f"default: --log-level before the command, log.level setting, else {default}",
    )


def log_format_option() -> Callable[[F], F]:
    """The group's ``--log-format``."""
    return click.option(
        "--log-format",
        type=click.Choice(FORMATS, case_sensitive=False),
        help="text, or json: one JSON object a line on stderr (env PIPELINE_LOG__FORMAT) [default: text]",
    )


def pg_options(func: F) -> F:
    """Add ``--pg/--no-pg``, ``--pg-host`` and ``--pg-port`` (passed as ``pg``, ``pg_host``, ``pg_port``;
    ``None`` when not given, so the settings decide)."""
    for option in reversed(
        [
            click.option(
                "--pg/--no-pg",
                "pg",
                default=None,
                help="serve the views read-only on Postgres wire [setting pgwire.enabled: on]",
            ),
            click.option("--pg-host", help="Postgres-wire bind address [setting pgwire.host: 127.0.0.1]"),
            click.option(
                "--pg-port",
                type=click.IntRange(0, 65535),
                help="Postgres-wire port, 0 for a free one [setting pgwire.port: 4566, as RisingWave]",
            ),
        ]
    ):
        func = option(func)
    return func


def pg_overrides(pg: bool | None, pg_host: str | None, pg_port: int | None) -> PgwireOverrides:
    """The flags as a ``pgwire`` settings section override (``None``: not given, left to the settings)."""
    from pipeline.app.settings import PgwireOverrides

    return PgwireOverrides(enabled=pg, host=pg_host, port=pg_port)


class PgServiceArgs(TypedDict):
    """Where the replay serves Postgres wire: ``pg_port`` ``None`` when off (0: a free port);
    ``pg_password`` ``None`` for none."""

    pg_host: str
    pg_port: int | None
    pg_password: str | None


def pg_service_args(settings: Settings) -> PgServiceArgs:
    """``pg_host``, ``pg_port`` (``None`` when off) and ``pg_password`` from the ``pgwire`` section (for
    the replay, which serves Postgres wire beside its own loop)."""
    pg = settings.pgwire
    return PgServiceArgs(
        pg_host=pg.host,
        pg_port=pg.port if pg.enabled else None,
        pg_password=pg.password.get_secret_value() if pg.password is not None else None,
    )


def _can_listen(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def replay_pg_args(pg: bool | None, pg_host: str | None, pg_port: int | None) -> PgServiceArgs:
    """:func:`pg_service_args` for ``pipeline replay``, which runs for a while and ends: the psql line is
    printed on stderr, and when the port comes from the settings (no ``--pg-port``) and is taken (say by a
    local RisingWave on 4566) the replay runs without Postgres wire, saying so, instead of failing."""
    from pipeline.app.settings import load_settings

    args = pg_service_args(load_settings(pgwire=pg_overrides(pg, pg_host, pg_port)))
    host, port = args["pg_host"], args["pg_port"]
    if port and pg_port is None and not _can_listen(host, port):
        click.echo(f"Postgres wire off: {host}:{port} is taken (--pg-port 0 picks a free port)", err=True)
        args["pg_port"] = None
    elif port:
        click.echo(f"views while it runs: psql -h {host} -p {port} -d dev -U root", err=True)
    elif port == 0:
        click.echo("views while it runs on a free port, logged at --log-level info", err=True)
    return args


dsn_option = click.option(
    "--dsn",
    default="postgresql://root@127.0.0.1:4566/dev",
    show_default=True,
    envvar="PIPELINE_STATUS_DSN",
    help="the views over Postgres wire: pipeline run's port or RisingWave (env PIPELINE_STATUS_DSN)",
)
"""``--dsn``: the views over Postgres wire, for the commands that read them (``status``, ``rule list``,
``param list``)."""
