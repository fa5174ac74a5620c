"""The ``pipeline`` command group: registration only. Each command group lives in a module of its own and
none imports this one, so there is no import cycle; the commands' work lives in modules tests call directly.

The group loads a command's module only when that command runs (or ``--help`` lists it), click's "lazily
loading subcommands" pattern (click.palletsprojects.com, "Advanced Groups"): a short command such as
``pipeline signal`` then pays for its own imports, not for the engine's, the executor's or the deployment
settings'.
"""

from __future__ import annotations

import importlib

import click

from pipeline.app.logs import LEVELS
from pipeline.cli.options import log_format_option

__all__ = ["main"]

COMMANDS: dict[str, str] = {
    "run": "pipeline.cli.serve:run",
    "executor": "pipeline.cli.serve:executor",
    "engine": "pipeline.cli.serve:engine",
    "topics": "pipeline.cli.topics:topics",
    "simulate": "pipeline.cli.simulate:simulate",
    "signal": "pipeline.cli.signal:signal",
    "rule": "pipeline.cli.rule:rule",
    "param": "pipeline.cli.param:param",
    "plan": "pipeline.cli.plan:plan",
    "allocate": "pipeline.cli.whatif:allocate",
    "replay": "pipeline.cli.replay:replay",
    "charger-password": "pipeline.cli.password:charger_password",
    "migrate": "pipeline.cli.migrate:migrate",
    "config": "pipeline.cli.config:config",
    "status": "pipeline.cli.status:status",
}
"""Command name -> ``module:attribute`` of its click command, in the order ``--help`` lists them."""


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use from ``module:attribute`` paths."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(name for name in super().list_commands(ctx) if name not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command) or command.name != cmd_name:
            raise RuntimeError(f"{self.lazy[cmd_name]} is not the click command {cmd_name!r}")
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="ev-setpoint-pipeline")
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    help="for every command (env PIPELINE_LOG__LEVEL) [default: info; replay: warning]",
)
@log_format_option()
def main(log_level, log_format) -> None:
    """Streaming-SQL setpoint pipeline for EV smart charging."""
