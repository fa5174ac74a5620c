"""``pipeline migrate``: the thin click layer over :mod:`pipeline.migrate.commands`.

Options are parsed here, results rendered by :mod:`pipeline.migrate.render` (or printed as JSON), and
expected failures become ``Error: <one line>`` with exit status 1. Exit status: 0 on success; 1 for an
error, a failed or unconfirmed apply, lint problems, or drift under ``status --check``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from pipeline.cli.errors import one_line_errors
from pipeline.sqlmodel import DEFAULT_SQL_DIR

if TYPE_CHECKING:
    from pipeline.migrate.kafka import ConnectorSettings
    from pipeline.migrate.model import Plan

F = TypeVar("F", bound=Callable[..., Any])


def _console() -> Console:
    return Console(highlight=False)


def _connector_settings(
    target: str, settings_file: str | None, bootstrap: str | None, prefix: str | None
) -> ConnectorSettings:
    """Kafka settings for a RisingWave target (``pipeline.app.settings`` plus the CLI overrides); none for
    the embedded target, which has no connectors."""
    from pipeline.migrate.kafka import ConnectorSettings
    from pipeline.migrate.targets import is_wire

    if not is_wire(target):
        return ConnectorSettings()
    return connector_settings(settings_file, bootstrap_servers=bootstrap, topic_prefix=prefix)


def connector_settings(
    settings_file: str | None = None, *, bootstrap_servers: str | None = None, topic_prefix: str | None = None
) -> ConnectorSettings:
    """The Kafka connector properties of RisingWave's sources and sinks, from the deployment settings
    (:func:`pipeline.app.settings.load_settings`: environment, ``settings_file`` or
    ``$PIPELINE_SETTINGS_FILE``) with the given values overriding. Raises
    :class:`pipeline.contracts.errors.ConfigError` for invalid settings."""
    from pipeline.app.settings import KafkaOverrides, load_settings
    from pipeline.migrate.kafka import ConnectorSettings

    kafka = KafkaOverrides(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    settings = load_settings(settings_file, kafka=kafka)
    return ConnectorSettings.from_kafka(settings.kafka)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


_target = click.option(
    "--target",
    envvar="PIPELINE_MIGRATE_TARGET",
    required=True,
    show_envvar=True,
    help="postgresql://... for RisingWave, or the embedded engine's DuckDB file",
)
_sql_dir = click.option(
    "--sql-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_SQL_DIR,
    show_default="sql/",
    help="the desired state: one object per .sql file",
)
_json = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
_allow_drop = click.option("--allow-drop", is_flag=True, help="drop applied objects that are gone from sql/")


def _kafka_options(func: F) -> F:
    func = click.option("--topic-prefix", help="prepended to every topic (default: settings)")(func)
    func = click.option("--kafka-bootstrap", help="Kafka bootstrap servers host:port[,...] (default: settings)")(func)
    func = click.option(
        "--settings",
        "settings_file",
        type=click.Path(dir_okay=False),
        help="deployment settings YAML (default $PIPELINE_SETTINGS_FILE; env PIPELINE_KAFKA__*)",
    )(func)
    return func


@click.group()
def migrate() -> None:
    """Bring a target to sql/ with a plan, like SQLMesh: plan, apply, status, diff, lint; set-password."""


@migrate.command()
@_target
@_sql_dir
@_allow_drop
@_kafka_options
@_json
@one_line_errors
def plan(
    target: str,
    sql_dir: Path,
    allow_drop: bool,
    settings_file: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    as_json: bool,
) -> None:
    """Print the steps apply would run, with their SQL. Changes nothing."""
    from pipeline.migrate import commands
    from pipeline.migrate.render import render_plan

    kafka = _connector_settings(target, settings_file, kafka_bootstrap, topic_prefix)
    result = commands.plan(target, sql_dir, allow_drop=allow_drop, kafka=kafka)
    if as_json:
        _echo_json(result.to_dict())
    else:
        render_plan(result, _console())


@migrate.command()
@_target
@_sql_dir
@_allow_drop
@click.option("--yes", is_flag=True, help="do not ask before destructive steps")
@click.option(
    "--lock-ttl",
    "lock_ttl_s",
    type=click.FloatRange(min=10),
    default=900.0,
    show_default=True,
    help="seconds the lock outlives a crashed migrator (refreshed after every step)",
)
@_kafka_options
@_json
@one_line_errors
def apply(
    target: str,
    sql_dir: Path,
    allow_drop: bool,
    yes: bool,
    lock_ttl_s: float,
    settings_file: str | None,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    as_json: bool,
) -> None:
    """Apply the plan under the target's lock; stop at the first failed step."""
    from pipeline.migrate import commands
    from pipeline.migrate.render import Progress, render_apply, render_plan

    console = _console()

    def confirm(plan_: Plan) -> bool:
        render_plan(plan_, console)
        console.print()
        try:
            return click.confirm(
                f"Run these {len(plan_.steps)} step(s), {len(plan_.destructive)} of them destructive?",
                default=False,
                err=True,
            )
        except click.Abort:
            click.echo(err=True)
            return False

    kafka = _connector_settings(target, settings_file, kafka_bootstrap, topic_prefix)
    result = commands.apply(
        target,
        sql_dir,
        allow_drop=allow_drop,
        yes=yes,
        confirm=None if as_json else confirm,
        kafka=kafka,
        lock_ttl_s=lock_ttl_s,
        on_step=None if as_json else Progress(console),
    )
    if as_json:
        _echo_json(result.to_dict())
    else:
        render_apply(result, console)
    if result.failed is not None:  # not result.ok
        index = len(result.applied) + 1
        raise click.ClickException(
            f"step {index} of {len(result.plan.steps)} ({result.failed.label()}) failed: {result.error}"
        )


@migrate.command()
@_target
@_sql_dir
@click.option("--check", is_flag=True, help="exit 1 when there is drift")
@_json
@one_line_errors
def status(target: str, sql_dir: Path, check: bool, as_json: bool) -> None:
    """Show drift: not applied, changed, untracked, missing, unknown to sql/."""
    from pipeline.migrate import commands
    from pipeline.migrate.render import render_status

    result = commands.status(target, sql_dir)
    if as_json:
        _echo_json(result.to_dict())
    else:
        render_status(result, _console())
    if check and not result.clean:
        raise SystemExit(1)


@migrate.command()
@click.argument("name")
@_target
@_sql_dir
@_json
@one_line_errors
def diff(name: str, target: str, sql_dir: Path, as_json: bool) -> None:
    """Show how object NAME differs between the target and sql/ (normalized SQL)."""
    from pipeline.migrate import commands
    from pipeline.migrate.render import render_diff

    result = commands.diff(target, name, sql_dir)
    if as_json:
        _echo_json(result.to_dict())
    else:
        render_diff(result, _console())


@migrate.command()
@_sql_dir
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="also print each view's relation scans with every CTE expanded (the plan-size measure)",
)
@_json
@one_line_errors
def lint(sql_dir: Path, verbose: bool, as_json: bool) -> None:
    """Reject what cannot run on RisingWave or the embedded engine, with file and line."""
    from pipeline.migrate import commands
    from pipeline.migrate.lint import SCAN_BUDGET, plan_sizes
    from pipeline.migrate.render import render_lint, render_plan_sizes

    issues = commands.lint(sql_dir)
    sizes = plan_sizes(sql_dir) if verbose else []
    if as_json:
        found = [issue.__dict__ for issue in issues]
        _echo_json(
            {"issues": found, "scan_budget": SCAN_BUDGET, "plan_sizes": [s.to_dict() for s in sizes]}
            if verbose
            else found
        )
    else:
        if verbose:
            render_plan_sizes(sizes, SCAN_BUDGET, _console())
        render_lint(issues, _console())
    if issues:
        raise SystemExit(1)


@migrate.command("set-password")
@click.argument("user")
@_target
@click.option(
    "--password-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PIPELINE_MIGRATE_PASSWORD_FILE",
    show_envvar=True,
    help="file holding the password (a Docker secret); one trailing line break is dropped",
)
@one_line_errors
def set_password(user: str, target: str, password_file: Path) -> None:
    """Set USER's password on a RisingWave (or Postgres) target from a file; the password is never shown."""
    from pipeline.app.settings import read_secret_file
    from pipeline.migrate.targets import is_wire
    from pipeline.migrate.users import set_password as set_user_password

    if not is_wire(target):
        raise click.ClickException("set-password needs a postgresql:// target")
    set_user_password(target, user, read_secret_file("--password-file", password_file))
    click.echo(f"password of {user} set")
