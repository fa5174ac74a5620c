"""Transaction history for the embedded engine: ``ocpp.transaction.events`` kept for a retention, in a file.

The embedded engine's DuckDB lives in memory and is rebuilt from the input topics at every start. That is
right for the live inputs, but not for history: on the in-memory transport of ``pipeline run`` nothing is
left after a restart, and on Kafka a rebuild finds only what the topic's own retention kept (7 days by
default). So the engine keeps the transaction events it loads in an SQLite file of its own
(``EngineConfig.history_path``), loads them back at start before it reads the topics, and forgets events
older than ``EngineConfig.history_retention_days`` (90 by default), by the executor's ``recorded_at``,
in the file and in its database alike. RisingWave needs none of this: there ``session_history`` is a
materialized view over the append-only source and keeps every session for as long as the view exists.

An event is stored once per ``event_id`` (``'{session_id}:{event_type}'``); one delivered again (a Kafka
rebuild finds the events the file already has) is loaded twice into the engine, which the views read by
MIN / MAX per session, so it changes nothing there.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.contracts.topics import (
    SETPOINT_ACKS,
    SITE_DEMAND,
    TRANSACTION_EVENTS,
    RecordError,
    TransactionEvent,
    decode,
    encode,
)
from pipeline.engine.embedded import EmbeddedEngine

__all__ = ["DEFAULT_RETENTION_DAYS", "TransactionHistory"]

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 90.0
SUPERSEDED: dict[str, tuple[str, tuple[str, ...]]] = {
    SITE_DEMAND: ("measured_at", ("site_id",)),
    SETPOINT_ACKS: ("sent_at", ("session_id", "status")),
}
"""The append inputs that arrive all day (a site meter every few seconds, an ack per profile call), by topic:
the time column and the group whose newest row the views read (``site_demand_latest`` and
``site_input_clock`` the newest reading per site; ``session_last_accepted`` the newest accepted profile per
session). Older rows of a group are read only by ``site_building_mean`` (the site readings of the last 24
hours), so the embedded engine forgets them after ``input_retention`` (24 hours by default: less shortens
that mean) instead of keeping every reading for ever (RisingWave keeps only the operators' state)."""
DEFAULT_INPUT_RETENTION_H = 24.0
PRUNE_EVERY = timedelta(hours=1)  # of clock: the retention is in days, an hour late is nothing

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transaction_events (
    event_id TEXT PRIMARY KEY,
    recorded_at TEXT NOT NULL,  -- ISO-8601 UTC, so text order is time order
    value BLOB NOT NULL         -- the record's JSON value, as on the topic
)
"""


def _iso(when: datetime) -> str:
    return when.isoformat()


class TransactionHistory:
    """``ocpp.transaction.events`` of one :class:`~pipeline.engine.embedded.EmbeddedEngine`, kept for
    ``retention_days`` (> 0), in the SQLite file ``path`` when given (``None``: in the engine only, lost at
    restart). Not thread-safe; the engine service calls it between evaluations.

    Raises ``sqlite3.Error`` when the file cannot be opened or is not an SQLite database, and
    ``ValueError`` for a retention that is not positive.
    """

    def __init__(
        self,
        engine: EmbeddedEngine,
        path: str | Path | None,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        input_retention_h: float = DEFAULT_INPUT_RETENTION_H,
    ):
        if not retention_days > 0 or not input_retention_h > 0:
            raise ValueError(f"retentions must be positive, not {retention_days!r} days / {input_retention_h!r} h")
        self.engine = engine
        self.path = None if path is None else Path(path)
        self.retention = timedelta(days=retention_days)
        self.input_retention = timedelta(hours=input_retention_h)
        self._db: sqlite3.Connection | None = None
        self._next_prune: datetime | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)  # used by one task, on worker threads
            self._db.execute(_SCHEMA)
            self._db.commit()

    def restore(self, now: datetime) -> int:
        """Forget what is past the retention at ``now``, then load the file's events into the engine (oldest
        first); returns how many were loaded. A stored value that no longer fits the contract is skipped
        and logged."""
        self.prune(now)
        if self._db is None:
            return 0
        records: list[tuple[str, str | None, Any]] = []
        for event_id, value in self._db.execute("SELECT event_id, value FROM transaction_events ORDER BY recorded_at"):
            try:
                event = decode(TRANSACTION_EVENTS, None, value)
            except RecordError as exc:
                log.warning("history: stored event %s skipped: %s", event_id, exc)
                continue
            assert isinstance(event, TransactionEvent)
            records.append((TRANSACTION_EVENTS, event.session_id, event))
        self.engine.apply(records)
        log.info("history: %d transaction events restored from %s", len(records), self.path)
        return len(records)

    def keep(self, records: Iterable[tuple[str, str | None, Any]]) -> int:
        """Store the transaction events among ``records`` (``(topic, key, record)`` as the engine applied
        them; other topics are ignored), once per ``event_id``; returns how many were new."""
        if self._db is None:
            return 0
        rows = [
            (r.event_id, _iso(r.recorded_at), encode(r))
            for topic, _key, r in records
            if topic == TRANSACTION_EVENTS and isinstance(r, TransactionEvent)
        ]
        if not rows:
            return 0
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO transaction_events VALUES (?, ?, ?)", rows)
        self._db.commit()
        return self._db.total_changes - before

    def prune_due(self, now: datetime) -> bool:
        """True when the last :meth:`prune` is an hour (of clock) or more before ``now``, or never ran."""
        return self._next_prune is None or now >= self._next_prune

    def prune(self, now: datetime) -> int:
        """Forget events recorded before ``now - retention``, in the file and in the engine, and the rows of
        the busy append inputs (:data:`SUPERSEDED`) older than ``input_retention`` that a newer row of their
        group supersedes; returns how many rows left the engine."""
        cutoff = now - self.retention
        if self._db is not None:
            self._db.execute("DELETE FROM transaction_events WHERE recorded_at < ?", [_iso(cutoff)])
            self._db.commit()
        self._next_prune = now + PRUNE_EVERY
        deleted = self.engine.forget(TRANSACTION_EVENTS, "recorded_at", cutoff)
        for topic, (column, group) in SUPERSEDED.items():
            deleted += self.engine.forget(topic, column, now - self.input_retention, keep_latest_by=group)
        return deleted

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
