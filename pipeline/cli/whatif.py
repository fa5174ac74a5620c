"""``pipeline allocate``: what-if, the views over a snapshot of the topics (:mod:`pipeline.engine.whatif`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli.errors import one_line_errors
from pipeline.cli.options import ISO

__all__ = ["allocate"]


@click.command("allocate")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="snapshot JSON: {topic: [records]} ('-' for stdin)",
)
@click.option("--now", type=ISO, help="evaluation time for NOW() (default: the current time)")
@one_line_errors
def allocate(input_path, now):
    """What-if: run the views over a snapshot and print the setpoint records as a JSON array."""
    from pipeline.engine.whatif import allocate as run_allocate

    text = sys.stdin.read() if input_path == "-" else Path(input_path).read_text()
    try:
        snapshot = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{input_path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:  # a number past the int-string limit, nesting too deep
        raise click.ClickException(f"{input_path}: not JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    click.echo(json.dumps(run_allocate(snapshot, now), indent=2))
