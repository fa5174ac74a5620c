"""The one error handler of the ``pipeline`` command.

Every error the project raises for a person to read derives from
:class:`pipeline.contracts.errors.PipelineError`; a command decorated with :func:`one_line_errors` prints
it as ``Error: <message>`` (one line, or the short block a database answer needs: message, DETAIL, HINT)
and exits with status 1. Click's own usage errors keep click's handling (exit status 2); Ctrl-C exits 130.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pipeline.contracts.errors import PipelineError

__all__ = ["MAX_LINES", "one_line_errors"]

F = TypeVar("F", bound=Callable[..., Any])
MAX_LINES = 12


def _message(exc: PipelineError) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = text.splitlines()
    return "\n".join(lines[:MAX_LINES])


def one_line_errors(func: F) -> F:
    """Turn :class:`PipelineError` into ``Error: <message>`` and exit status 1; Ctrl-C into status 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PipelineError as exc:
            raise click.ClickException(_message(exc)) from None
        except KeyboardInterrupt:
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
