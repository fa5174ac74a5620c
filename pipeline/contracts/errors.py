"""The root error: every error the project raises on purpose for a person to read derives from
:class:`PipelineError`, so the CLI has one handler (its first line, exit status 1) and no list to keep.

Each package defines its own subclasses beside the code that raises them (``SqlError`` in
:mod:`pipeline.sqlmodel.objects`, ``MigrateError`` in :mod:`pipeline.migrate.model`, ...); the two that
several layers share live here.
"""

from __future__ import annotations

__all__ = ["ConfigError", "PipelineError", "RecordError"]


class PipelineError(Exception):
    """Root of the project's errors: the message is for the operator (its first line stands alone)."""


class ConfigError(PipelineError):
    """A site file, settings file, environment variable or option that cannot be used as given."""


class RecordError(PipelineError):
    """A topic record that does not fit its topic's contract (bad JSON, wrong shape, out of bounds, wrong key)."""
