"""``sql/`` as objects: each file parsed by sqlglot's RisingWave dialect, its kind, connector, keys and
the relations it reads. The engine, the migration planner and the linter share this one model."""

from pathlib import Path

DEFAULT_SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
"""The ``sql/`` shipped with the pipeline (here, without importing sqlglot, for the CLI's defaults)."""
