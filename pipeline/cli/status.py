"""``pipeline status``: the click layer over :mod:`pipeline.status.collect` and :mod:`pipeline.status.view`.

Registered on the ``pipeline`` group by :mod:`pipeline.cli.main` (``main.add_command``). Status is a client of
a running pipeline: it reads the views over Postgres wire (``pipeline run``'s read-only port, or
RisingWave) and the executor's ``GET /status``.
"""

from __future__ import annotations

import os

import click

from pipeline.cli.errors import one_line_errors
from pipeline.cli.options import dsn_option
from pipeline.status import DEFAULT_EXECUTOR_URL

__all__ = ["status"]


@click.command("status")
@dsn_option
@click.option(
    "--executor-url",
    default=DEFAULT_EXECUTOR_URL,
    show_default=True,
    help="the executor's status port (setting executor.http_port), for GET /status (connected chargers)",
)
@click.option(
    "--pg-port", type=click.IntRange(1, 65535), help="shortcut: the views on 127.0.0.1:PORT (as run's --pg-port)"
)
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    help="shortcut: the executor's status port on 127.0.0.1 (setting executor.http_port)",
)
@click.option("--no-executor", is_flag=True, help="leave the chargers out (no executor to ask)")
@click.option("--once", is_flag=True, help="print one snapshot and exit (for scripts)")
@click.option("--json", "as_json", is_flag=True, help="JSON: one document with --once, else one line per refresh")
@click.option(
    "--interval",
    "interval_s",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.2),
    help="seconds between refreshes",
)
@one_line_errors
def status(dsn, executor_url, pg_port, http_port, no_executor, once, as_json, interval_s):
    """Live view of a running pipeline: sites and breakers, sessions, chargers, DR event and price tier.

    The password for the views, when the DSN has none: PGPASSWORD, else the pgwire.password setting.
    """
    from pipeline.app.settings import load_settings
    from pipeline.status.view import run_status

    if pg_port is not None:
        dsn = f"postgresql://root@127.0.0.1:{pg_port}/dev"
    if http_port is not None:
        executor_url = f"http://127.0.0.1:{http_port}"
    secret = None if os.environ.get("PGPASSWORD") else load_settings().pgwire.password
    try:
        run_status(
            dsn,
            None if no_executor else executor_url,
            once=once,
            as_json=as_json,
            interval_s=interval_s,
            password=secret.get_secret_value() if secret is not None else None,
        )
    except KeyboardInterrupt:  # leaving the live view is the normal way out
        return
