"""The embedded engine's transaction history: kept in a file of its own across restarts, for a retention.

A restarted engine (DuckDB in memory, an empty in-memory transport) still answers ``session_history`` from
the file; events past the retention leave the file and the views; an event delivered twice is stored once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.contracts.clock import SimClock
from pipeline.contracts.topics import TransactionEvent
from pipeline.engine.config import EngineConfig
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.history import TransactionHistory
from pipeline.engine.service import EngineService
from pipeline.transport import MemoryTransport, publish

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)


def ended(sid: str, at: datetime) -> TransactionEvent:
    return TransactionEvent(
        event_id=f"{sid}:ended",
        event_type="ended",
        session_id=sid,
        charge_point_id="CP1",
        connector_id=1,
        transaction_id=sid,
        site_id="s1",
        started_at=at - timedelta(hours=1),
        ended_at=at,
        energy_kwh=10.0,
        recorded_at=at,
    )


def history_ids(engine: EmbeddedEngine) -> list[str]:
    return [r[0] for r in engine.query("SELECT session_id FROM session_history ORDER BY session_id")[1]]


async def run_once(path, clock, records=(), retention_days: float = 90.0) -> list[str]:
    transport = MemoryTransport()
    for event in records:
        await publish(transport, "ocpp.transaction.events", event)
    engine = EmbeddedEngine()
    config = EngineConfig(history_path=path, history_retention_days=retention_days)
    service = EngineService(engine, transport, clock, config)
    await service.step(timeout_s=0)
    service.history.close()
    ids = history_ids(engine)
    engine.close()
    return ids


async def test_history_survives_a_restart_and_leaves_after_its_retention(tmp_path):
    path = tmp_path / "state" / "history.sqlite3"
    clock = SimClock(NOW)
    clock.hold()
    old, new = ended("old", NOW - timedelta(days=5)), ended("new", NOW - timedelta(hours=1))
    assert await run_once(path, clock, [old, new, new]) == ["new", "old"]
    assert await run_once(path, clock) == ["new", "old"]  # a new engine on an empty transport
    assert await run_once(path, clock, retention_days=2) == ["new"]  # 5 days old is past 2 days
    assert await run_once(path, clock) == ["new"]  # and gone from the file


def test_retention_applies_in_the_engine_without_a_file():
    engine = EmbeddedEngine()
    history = TransactionHistory(engine, None, retention_days=1)
    engine.apply([("ocpp.transaction.events", "a", ended("a", NOW - timedelta(days=2)))])
    engine.apply([("ocpp.transaction.events", "b", ended("b", NOW))])
    assert history.restore(NOW) == 0
    engine.evaluate(NOW)
    assert history_ids(engine) == ["b"]
    assert not history.prune_due(NOW + timedelta(minutes=59)) and history.prune_due(NOW + timedelta(hours=1))
    engine.close()


def test_a_retention_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="positive"):
        TransactionHistory(EmbeddedEngine(), None, retention_days=0)
