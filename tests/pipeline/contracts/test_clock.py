"""The simulated clock: held, stepped by a driver, and the sleepers that wait on it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pipeline.contracts.clock import SimClock

# A pair of instants where now + (when - now) in float seconds since the epoch lands 0.24 us past ``when``.
NOW = datetime(2024, 6, 3, 11, 39, 1, 498011, tzinfo=UTC)
WHEN = datetime(2024, 6, 3, 11, 39, 1, 604739, tzinfo=UTC)


def held_at(t: datetime) -> SimClock:
    clock = SimClock(t)
    clock.hold()  # a few microseconds after t: the clock ran since it was made
    clock.advance((t - clock.now()).total_seconds())
    assert clock.now() == t
    return clock


async def test_a_sleeper_wakes_when_a_held_clock_is_stepped_exactly_to_its_instant():
    assert NOW.timestamp() + (WHEN - NOW).total_seconds() > WHEN.timestamp()  # the float trap this guards
    for sleep in ("sleep", "sleep_until"):
        clock = held_at(NOW)
        task = asyncio.ensure_future(
            clock.sleep((WHEN - NOW).total_seconds()) if sleep == "sleep" else clock.sleep_until(WHEN)
        )
        await asyncio.sleep(0)
        assert not task.done()  # held short of its instant: it waits
        clock.advance((WHEN - clock.now()).total_seconds())
        assert clock.now() == WHEN
        await asyncio.wait_for(task, 1.0)  # the executor's dispatcher slept on here until the clock moved again


async def test_a_held_clock_steps_by_whole_microseconds():
    clock = held_at(NOW)
    clock.advance((WHEN - NOW).total_seconds())
    assert clock.now() == WHEN
    clock.advance(0.000001)
    assert clock.now() == WHEN + timedelta(microseconds=1)
