"""Holding the replay's clock until the loop is quiet (pipeline/replay/settle.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pipeline.contracts.clock import SimClock
from pipeline.contracts.topics import DR_SIGNALS, DRSignal
from pipeline.engine.config import EngineConfig
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.service import EngineService
from pipeline.replay.settle import settle
from pipeline.transport.base import publish
from pipeline.transport.memory import MemoryTransport


async def test_the_loop_is_not_quiet_while_a_temporal_boundary_it_has_passed_waits_for_its_evaluation():
    """A held clock stepped past a boundary (a DR event's start here; a plan turning urgent in the week's
    replay) leaves the engine asleep in a poll for input it began while the clock stood still: it evaluates
    when that poll ends. Settle must wait for that evaluation, or the replay moves the clock on and the
    reaction lands at the next event instead (a plan urgent at 20:21:26 acted on at 20:30:00)."""
    t0 = datetime(2024, 6, 3, 16, 50, tzinfo=UTC)
    clock = SimClock(t0, speed=10080.0)
    clock.hold()
    transport = MemoryTransport()
    start = t0 + timedelta(minutes=10)
    dr = DRSignal(
        site_id="s",
        dr_event_id="e",
        curtailment_pct=20.0,
        event_start=start,
        event_end=start + timedelta(hours=2),
        signal_at=t0,
    )
    await publish(transport, DR_SIGNALS, dr)
    engine = EmbeddedEngine()
    service = EngineService(engine, transport, clock, EngineConfig(poll_s=0.5))
    task = asyncio.create_task(service.run())
    try:
        assert await settle(clock, transport, 0.0, engine=service, timeout_s=5.0)
        while service.stats.evaluations == 0:  # the first evaluation (catch-up) has run
            await asyncio.sleep(0.005)
        assert engine.rows("dr_events")[1] == [] and engine.next_boundary() == start
        await asyncio.sleep(0.05)  # the engine is in its next poll, begun with the clock held
        clock.advance((start - t0).total_seconds())  # the held clock is stepped to the event's start
        assert await settle(clock, transport, 0.0, engine=service, timeout_s=5.0)
        assert [row[1] for row in engine.rows("dr_events")[1]] == ["e"]
    finally:
        service.stop()
        await task
