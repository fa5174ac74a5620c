"""The ``pipeline`` command group: registration only. Each command group lives in a module of its own and
none imports this one, so there is no import cycle; the commands' work lives in modules tests call directly.
"""

from __future__ import annotations

import click

from pipeline.app.logs import LEVELS
from pipeline.cli.config import config
from pipeline.cli.migrate import migrate
from pipeline.cli.options import log_format_option
from pipeline.cli.param import param
from pipeline.cli.password import charger_password
from pipeline.cli.plan import plan
from pipeline.cli.replay import replay
from pipeline.cli.rule import rule
from pipeline.cli.serve import engine, executor, run
from pipeline.cli.signal import signal
from pipeline.cli.simulate import simulate
from pipeline.cli.status import status
from pipeline.cli.topics import topics
from pipeline.cli.whatif import allocate

__all__ = ["main"]


@click.group()
@click.version_option(package_name="ev-setpoint-pipeline")
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    help="for every command (env PIPELINE_LOG__LEVEL) [default: info; replay: warning]",
)
@log_format_option()
def main(log_level, log_format) -> None:
    """Streaming-SQL setpoint pipeline for EV smart charging."""


for command in (
    run,
    executor,
    engine,
    topics,
    simulate,
    signal,
    rule,
    param,
    plan,
    allocate,
    replay,
    charger_password,
    migrate,
    config,
    status,
):
    main.add_command(command)
