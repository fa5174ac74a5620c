"""``pipeline config show``: the effective deployment settings, secrets masked, and where each came from.

Settings come from four places (:mod:`pipeline.app.settings`): a command's flags, ``PIPELINE_*`` environment
variables, the settings file (``--settings FILE`` or ``PIPELINE_SETTINGS_FILE``) and the defaults. An
operator who wonders why a service binds where it does runs this with the same environment and file; it
prints every section as YAML (each value commented with ``env``, ``file`` or ``default``) or as JSON.
Registered on the ``pipeline`` group by :mod:`pipeline.cli.main`.
"""

from __future__ import annotations

import json
from typing import Any

import click
import yaml

from pipeline.app.settings import SETTINGS_FILE_ENV, load_settings, masked, sources
from pipeline.cli.errors import one_line_errors

__all__ = ["config", "render_yaml"]


def _scalar(value: Any) -> str:
    """One value as a YAML flow scalar (quoted where YAML would read it otherwise)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip().removesuffix("\n...")


def render_yaml(data: dict[str, dict[str, Any]], origin: dict[str, str] | None = None) -> str:
    """``{section: {key: value}}`` as YAML, each value followed by ``# <origin>`` when ``origin``
    (``{"section.key": "env" | "file" | "default"}``) names it. The result loads back as ``data``."""
    lines = ["# effective settings: command flags > env PIPELINE_* > settings file > defaults"]
    for section, values in data.items():
        lines.append(f"{section}:")
        for key, value in values.items():
            where = (origin or {}).get(f"{section}.{key}")
            lines.append(f"  {key}: {_scalar(value)}" + (f"  # {where}" if where else ""))
    return "\n".join(lines)


@click.group("config")
def config() -> None:
    """The deployment settings (PIPELINE_* env vars and the settings file)."""


@config.command("show")
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(dir_okay=False),
    envvar=SETTINGS_FILE_ENV,
    help=f"deployment settings YAML; env {SETTINGS_FILE_ENV}",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON (without the sources) instead of YAML")
@one_line_errors
def show(settings_path: str | None, as_json: bool) -> None:
    """Print the effective settings, secrets as ***, and whether each came from env, file or default."""
    data = masked(load_settings(settings_path))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(render_yaml(data, sources(settings_path)))
