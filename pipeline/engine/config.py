"""The embedded engine's one configuration model: every setting and its default is written here, once.

:class:`pipeline.engine.service.EngineService` takes an :class:`EngineConfig`; the application's
deployment settings use it as their ``engine`` section (``PIPELINE_ENGINE__TICK_S=2`` or a settings file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EngineConfig"]


class EngineConfig(BaseModel):
    """The embedded engine (``pipeline run`` and ``pipeline engine``): times in clock seconds.

    ``tick_s`` is the period of a full re-evaluation with no input, a safety net (``NOW()`` filters fire at
    their own instants, see :mod:`pipeline.engine.boundaries`), ``poll_s`` how long one poll for input
    waits at most (less when a temporal boundary comes sooner), ``batch_max`` the most input records per micro-batch,
    ``catch_up_timeout_s`` the bound on the start-up read of the inputs, ``sql_dir`` the RisingWave SQL
    to run (``None``: the ``sql/`` shipped with the pipeline), and ``backend`` the embedded database
    (:mod:`pipeline.engine.backend`; ``PIPELINE_ENGINE__BACKEND=duckdb`` in the deployment settings).
    ``history_path`` is the SQLite file that keeps ``ocpp.transaction.events`` across restarts (``None``:
    kept in memory only), ``history_retention_days`` how long they are kept (:mod:`pipeline.engine.history`),
    ``input_retention_h`` how long a site-meter reading or profile ack that a newer one supersedes is kept.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_s: float = Field(1.0, gt=0, description="re-evaluation period, s")
    poll_s: float = Field(0.05, gt=0, description="wait for input this long per poll, s")
    batch_max: int = Field(5000, ge=1, description="most input records per micro-batch")
    catch_up_timeout_s: float = Field(300.0, gt=0, description="start-up read of the inputs, s")
    sql_dir: Path | None = Field(None, description="sql/ to run (default: the one shipped with the pipeline)")
    history_path: Path | None = Field(None, description="SQLite file for the transaction history (None: memory only)")
    history_retention_days: float = Field(90.0, gt=0, le=36_600, description="transaction history kept, days")
    input_retention_h: float = Field(
        24.0, gt=0, le=8_784, description="superseded site-meter readings and profile acks kept, hours"
    )
    backend: Literal["hybrid", "sqlite", "duckdb"] | None = Field(
        None,
        description="embedded database: hybrid (SQLite for a few sites, DuckDB for the fleet), sqlite or duckdb"
        " (default: pipeline.engine.embedded.DEFAULT_BACKEND)",
    )
