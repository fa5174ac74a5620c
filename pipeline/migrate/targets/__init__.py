"""Migration targets: one adapter per engine, chosen by the form of ``--target``.

``postgresql://...`` (or ``postgres://...``) is RisingWave over Postgres wire (plain Postgres works too,
for tests); anything else is the path of an embedded engine's DuckDB file.
"""

from __future__ import annotations

from pipeline.migrate.kafka import ConnectorSettings
from pipeline.migrate.targets.base import CATALOG_TABLE, DEFAULT_LOCK_TTL_S, LOCK_TABLE, Target, default_owner

WIRE_SCHEMES = ("postgresql://", "postgres://")


def is_wire(target: str) -> bool:
    return target.startswith(WIRE_SCHEMES)


def open_target(target: str, kafka: ConnectorSettings | None = None, *, read_only: bool = False) -> Target:
    """Connect to ``target``; ``read_only`` promises no writes (the embedded file is opened read-only,
    and not created if missing). Raises :class:`pipeline.migrate.model.MigrateError` if it cannot."""
    if not target:
        from pipeline.migrate.model import MigrateError

        raise MigrateError("no target: pass --target (a postgresql:// DSN or a DuckDB file path)")
    if is_wire(target):
        from pipeline.migrate.targets.risingwave import WireTarget

        return WireTarget(target, kafka)
    from pipeline.migrate.targets.embedded import EmbeddedTarget

    return EmbeddedTarget(target, kafka, read_only=read_only)


__all__ = ["CATALOG_TABLE", "DEFAULT_LOCK_TTL_S", "LOCK_TABLE", "Target", "default_owner", "is_wire", "open_target"]
