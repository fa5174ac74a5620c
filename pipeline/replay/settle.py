"""Holding the replay's simulated clock while the loop reacts: every event the replay makes (a plug-in, a
building step, a session's end, a DR boundary) is followed by a quiet loop before simulated time moves on,
and the increases the executor holds back on clock time (its debounce, the EV response lag after a cut) are
stepped through in simulated time, not waited for in real time. So the replay measures the controller,
not how fast this machine runs the clock."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta

from executor import Executor
from pipeline.contracts.clock import SimClock
from pipeline.engine.service import EngineService
from pipeline.transport.memory import MemoryTransport

__all__ = ["SETTLE_TIMEOUT_S", "UNSETTLED", "run_clock_to", "settle", "settle_dispatch", "step_dispatch"]

log = logging.getLogger(__name__)

SETTLE_TIMEOUT_S = 60.0
"""Real seconds the clock is held for the loop to go quiet before it moves on regardless (logged and counted
in :data:`UNSETTLED`): on a loaded machine an evaluation can take seconds, and a clock that moved on
before the loop answered would count the machine's slowness as the controller's seconds over a limit."""
UNSETTLED: contextvars.ContextVar[list[datetime] | None] = contextvars.ContextVar("unsettled", default=None)
"""The simulated instants at which :func:`settle` gave up, for the replay that sets it (its summary's
``unsettled_events``: figures from a replay with any are suspect)."""


def _waiting_on(
    transport: MemoryTransport,
    quiet_s: float,
    executor: Executor | None,
    engine: EngineService | None,
    ready: Callable[[], bool] | None,
    explain: bool = False,
) -> Iterator[str]:
    """What the loop is still busy with, in this order, lazily: the first one ends the look (``ready()``, which
    may wake a session to report its end, is asked only when all else is quiet). ``explain`` adds what
    keeps the executor busy (for the warning; the settle loop polls without building it)."""
    if transport.lag() != 0:
        yield "records unconsumed"
    if transport.idle_for() < quiet_s:
        yield "records sent within the quiet time"
    if executor is not None and not executor.idle:
        yield f"executor busy ({executor.busy_with()})" if explain else "executor busy"
    if engine is not None and engine.busy:
        yield "engine evaluating"
    if engine is not None and engine.boundary_owed:
        yield "a temporal boundary passed, the engine still to evaluate it"
    if ready is not None and not ready():
        yield "a session end unreported, or a charger's limit change due"


async def settle(
    clock: SimClock,
    transport: MemoryTransport,
    quiet_s: float,
    executor: Executor | None = None,
    timeout_s: float = SETTLE_TIMEOUT_S,
    engine: EngineService | None = None,
    ready: Callable[[], bool] | None = None,
) -> bool:
    """Hold the clock until no record is unconsumed, none was sent for ``quiet_s`` real seconds, the
    executor (if given) has no call in flight or due, the engine (if given) is not mid-evaluation and owes
    no evaluation for a temporal boundary the clock has passed (a price slot's start, a plan turning
    urgent: :attr:`EngineService.boundary_owed`), and ``ready()`` (if given) is true; False after
    ``timeout_s`` real seconds (logged)."""
    clock.hold()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        if next(_waiting_on(transport, quiet_s, executor, engine, ready), None) is None:
            return True
    log.warning(
        "the loop did not settle within %.1fs at %s (waiting on: %s)",
        timeout_s,
        clock.now().isoformat(),
        ", ".join(_waiting_on(transport, quiet_s, executor, engine, ready, explain=True))
        or "nothing, at the last look",
    )
    missed = UNSETTLED.get()
    if missed is not None:
        missed.append(clock.now())
    return False


async def settle_dispatch(
    clock: SimClock,
    transport: MemoryTransport,
    executor: Executor,
    quiet_s: float,
    until: datetime,
    engine: EngineService | None = None,
    ready: Callable[[], bool] | None = None,
) -> None:
    """Settle, then step the held clock (never past ``until``, the next event) to when an increase the
    executor holds back on clock time may go (its debounce, or the EV response lag after a cut), and settle
    again: those waits are part of dispatch, so they take simulated time, but not real time."""
    if await settle(clock, transport, quiet_s, executor, engine=engine, ready=ready):
        await step_dispatch(clock, transport, executor, quiet_s, until, engine=engine, ready=ready)


async def run_clock_to(
    clock: SimClock,
    when: datetime,
    woken: asyncio.Event,
    early_real_s: float = 0.05,
    on_the_way: Callable[[datetime], Awaitable[None]] | None = None,
) -> None:
    """Run the clock on to ``when`` and hold it exactly there, or return early, the clock held, once ``woken``
    is set (whoever sets it holds the clock first). The clock is held ``early_real_s`` real seconds short
    and stepped the rest, so an event lands at its own instant, not late by the event loop's jitter times
    the speed-up; ``on_the_way(when)``, if given, is awaited while it is held short, to step through what
    falls due on the way (the executor's held-back increases)."""
    clock.release()
    early = when - timedelta(seconds=early_real_s * clock.speed)
    if clock.now() < early and not woken.is_set():
        sleeper = asyncio.ensure_future(clock.sleep_until(early))
        waiter = asyncio.ensure_future(woken.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()
    clock.hold()
    if woken.is_set():
        return
    if clock.now() > when:
        log.debug("the clock ran %.1f s past an event", (clock.now() - when).total_seconds())
    if on_the_way is not None and clock.now() < when:
        await on_the_way(when)
    if not woken.is_set() and clock.now() < when:
        clock.advance((when - clock.now()).total_seconds())


async def step_dispatch(
    clock: SimClock,
    transport: MemoryTransport,
    executor: Executor,
    quiet_s: float,
    until: datetime,
    engine: EngineService | None = None,
    ready: Callable[[], bool] | None = None,
) -> None:
    """Step the held clock through the increases the executor holds back on clock time (its debounce, the
    EV response lag after a cut) that fall due before ``until``, settling after each; nothing when none
    does."""
    for _ in range(20):
        release = executor.pending_until()
        if release is None or release >= until:
            return
        clock.advance(max(0.0, (release - clock.now()).total_seconds()) + 0.001)
        if not await settle(clock, transport, quiet_s, executor, engine=engine, ready=ready):
            return
