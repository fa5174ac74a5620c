"""``pipeline allocate``: a what-if over a snapshot of topic records, run on the embedded engine.

The snapshot maps topic names to lists of records, exactly the JSON values those topics carry; the
result is the ``ocpp.setpoint.commands`` records the engine would emit, sorted by session id.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.contracts.topics import SETPOINT_COMMANDS, SITE_TOPOLOGY, TOPICS, RecordError, decode
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.sqlmodel.objects import DEFAULT_SQL_DIR


def load_snapshot(snapshot: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Validate a snapshot; returns ``(topic, key, record)`` triples.

    Raises :class:`RecordError` naming the topic and index of the first bad record.
    """
    if not isinstance(snapshot, dict):
        raise RecordError("the snapshot must be a JSON object mapping topic names to lists of records")
    out = []
    for topic, records in snapshot.items():
        if topic not in TOPICS:
            raise RecordError(f"unknown topic {topic!r} (known: {', '.join(TOPICS)})")
        if not isinstance(records, list):
            raise RecordError(f"{topic}: expected a list of records")
        for i, value in enumerate(records):
            try:
                record = decode(topic, None, json.dumps(value).encode())
            except RecordError as exc:
                raise RecordError(f"{topic}[{i}]: {exc}") from None
            out.append((topic, str(getattr(record, TOPICS[topic].key)), record))
    return out


def allocate(
    snapshot: dict[str, Any], now: datetime | None = None, sql_dir: str | Path = DEFAULT_SQL_DIR
) -> list[dict[str, Any]]:
    """Run the views over ``snapshot`` at ``now`` (default: the current time) and return the setpoint
    records as JSON-ready dicts. Raises :class:`RecordError` for a bad record or a snapshot without
    ``site.topology`` (no breaker, no setpoint: an empty answer would look like a result)."""
    now = now or datetime.now(UTC)
    records = load_snapshot(snapshot)
    if not any(topic == SITE_TOPOLOGY for topic, _, _ in records):
        raise RecordError(f"the snapshot has no {SITE_TOPOLOGY} records: setpoints need the site and its breakers")
    engine = EmbeddedEngine(sql_dir)
    try:
        engine.apply(records)
        changes = engine.evaluate(now)
    finally:
        engine.close()
    setpoints = [json.loads(c.value) for c in changes if c.topic == SETPOINT_COMMANDS and c.value]
    return sorted(setpoints, key=lambda r: r["session_id"])
