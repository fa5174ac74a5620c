"""The ``--pg-host``/``--pg-port``/``--no-pg`` options of ``pipeline run`` and ``pipeline replay``.

Both serve the embedded engine's tables and views read-only on Postgres wire (:mod:`pipeline.pgwire`);
the flags override the ``pgwire`` settings section (``PIPELINE_PGWIRE__*``, ``--settings``), whose
defaults are ``127.0.0.1:4566`` (RisingWave's port, so the analysts' ``psql`` line is the same) and on.
"""

from __future__ import annotations

import socket

import click

from pipeline.settings import Settings, load_settings

__all__ = ["pg_options", "pg_overrides", "pg_service_args", "replay_pg_args"]


def pg_options(func):
    """Add ``--pg/--no-pg``, ``--pg-host`` and ``--pg-port`` (passed as ``pg``, ``pg_host``, ``pg_port``;
    ``None`` when not given, so the settings decide)."""
    for option in reversed([
        click.option("--pg/--no-pg", "pg", default=None,
                     help="serve the views read-only on Postgres wire [setting pgwire.enabled: on]"),
        click.option("--pg-host", help="Postgres-wire bind address [setting pgwire.host: 127.0.0.1]"),
        click.option("--pg-port", type=click.IntRange(0, 65535),
                     help="Postgres-wire port, 0 for a free one [setting pgwire.port: 4566, as RisingWave]"),
    ]):
        func = option(func)
    return func


def pg_overrides(pg: bool | None, pg_host: str | None, pg_port: int | None) -> dict:
    """The flags as a ``pgwire`` settings section override (flags not given left out)."""
    return {k: v for k, v in (("enabled", pg), ("host", pg_host), ("port", pg_port)) if v is not None}


def pg_service_args(settings: Settings) -> dict:
    """``pg_host``, ``pg_port`` (``None`` when off) and ``pg_password`` for
    :func:`pipeline.runner.start_service` from the ``pgwire`` section."""
    pg = settings.pgwire
    return {"pg_host": pg.host, "pg_port": pg.port if pg.enabled else None,
            "pg_password": pg.password.get_secret_value() if pg.password is not None else None}


def _can_listen(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def replay_pg_args(pg: bool | None, pg_host: str | None, pg_port: int | None) -> dict:
    """:func:`pg_service_args` for ``pipeline replay``, which runs for a while and ends: the psql line is
    printed on stderr, and when the port comes from the settings (no ``--pg-port``) and is taken (say by a
    local RisingWave on 4566) the replay runs without Postgres wire, saying so, instead of failing."""
    overrides = pg_overrides(pg, pg_host, pg_port)
    args = pg_service_args(load_settings(**({"pgwire": overrides} if overrides else {})))
    host, port = args["pg_host"], args["pg_port"]
    if port and pg_port is None and not _can_listen(host, port):
        click.echo(f"Postgres wire off: {host}:{port} is taken (--pg-port 0 picks a free port)", err=True)
        args["pg_port"] = None
    elif port:
        click.echo(f"views while it runs: psql -h {host} -p {port} -d dev -U root", err=True)
    elif port == 0:
        click.echo("views while it runs on a free port, logged at --log-level info", err=True)
    return args
