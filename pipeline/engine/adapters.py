"""The embedded engine's database adapters by name (``EngineConfig.backend``), kept apart from the
interface (:mod:`pipeline.engine.backend`) that every adapter imports."""

from __future__ import annotations

from pipeline.engine.backend import BACKENDS, Backend
from pipeline.engine.duckdb_backend import DuckDBBackend
from pipeline.engine.hybrid_backend import HybridBackend
from pipeline.engine.sqlite_backend import SQLiteBackend

__all__ = ["make_backend"]


def make_backend(name: str, database: str = ":memory:") -> Backend:
    """The adapter called ``name`` (one of :data:`pipeline.engine.backend.BACKENDS`; ``database``, a file,
    for DuckDB only). Raises ``ValueError`` for another name."""
    if name == "duckdb":
        return DuckDBBackend(database)
    if name == "sqlite":
        return SQLiteBackend()
    if name == "hybrid":
        return HybridBackend()
    raise ValueError(f"unknown engine backend {name!r} (known: {', '.join(BACKENDS)})")
