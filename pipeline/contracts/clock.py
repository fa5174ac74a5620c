"""Clocks shared by the engine, the executor and the simulators.

The engine's ``NOW()``, meter timestamps and every timer read one clock, so a replay can run a real day
faster than real time. :class:`SimClock` also *holds* (stops advancing) while a replay lets the control
loop settle after an event, so transit latency in a compressed day is not counted as hours of overshoot;
latency itself is measured by the benchmarks, in real time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What components need of time: an aware UTC ``now()``, a ``sleep`` in clock seconds and a
    ``sleep_until`` an instant (to wait for a known instant, use it: a delay computed from ``now()`` and
    added back in float seconds may land a fraction of a microsecond past the instant)."""

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, when: datetime) -> None: ...


class SystemClock:
    """Wall-clock time (UTC)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: datetime) -> None:
        await asyncio.sleep(max(0.0, (when - self.now()).total_seconds()))


class SimClock:
    """Accelerated simulated time: ``speed`` simulated seconds pass per real second.

    ``hold()``/``release()`` stop and restart it; while held, ``now()`` is constant and sleepers wait.
    """

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._base_sim = start.astimezone(UTC)
        self._base_real = time.monotonic()
        self._held = False
        self._running = asyncio.Event()
        self._running.set()
        self._advanced = asyncio.Event()

    def now(self) -> datetime:
        if self._held:
            return self._base_sim
        elapsed = (time.monotonic() - self._base_real) * self.speed
        return datetime.fromtimestamp(self._base_sim.timestamp() + elapsed, UTC)

    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> None:
        """Stop the clock at its current reading."""
        if not self._held:
            self._base_sim = self.now()
            self._held = True
            self._running.clear()

    def release(self) -> None:
        """Restart the clock from where it was held."""
        if self._held:
            self._base_real = time.monotonic()
            self._held = False
            self._running.set()

    def advance(self, seconds: float) -> None:
        """Jump forward (used only while held, by drivers that step time themselves)."""
        self._base_sim = self.now() + timedelta(seconds=seconds)  # whole microseconds: exact, unlike floats
        self._base_real = time.monotonic()
        self._advanced.set()  # wake held sleepers to look at the new time
        self._advanced = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of clock time (:meth:`sleep_until` now plus that)."""
        await self.sleep_until(self.now() + timedelta(seconds=max(0.0, seconds)))

    async def sleep_until(self, when: datetime) -> None:
        """Sleep until the clock reads ``when`` or later. While the clock is held a sleeper waits, but one
        whose wake time is reached returns at once, also when a driver ``advance``s the held clock to or past
        it. Instants are compared as datetimes (whole microseconds): in float seconds since the epoch a wake
        time could sit 0.2 us past the instant a driver held the clock at, and the sleeper slept on until
        the clock moved again."""
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            if self._held:
                waits = {asyncio.ensure_future(self._running.wait()), asyncio.ensure_future(self._advanced.wait())}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                continue
            await asyncio.sleep(min(remaining / self.speed, 0.5))
