"""The simulated station's end of an OCPP-J connection: what it needs of the ``ocpp`` library's
``ChargePoint`` (:class:`Link`), when it tries to reconnect (:class:`ReconnectBackoff`), and a call that
gives up when its connection ends (:func:`call_until_ended`).

Kept apart from :mod:`pipeline.sim.station` so that the station holds the charger's behaviour and this
module the rules of the wire it behaves over.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["DEFAULT_BACKOFF", "FLEET_BACKOFF", "Link", "ReconnectBackoff", "call_until_ended"]


@dataclass(frozen=True)
class ReconnectBackoff:
    """How long a station waits before each attempt to reconnect, in real seconds.

    The OCPP-J reconnection rule of OCPP 2.0.1 Part 4, section 5.3 (``OCPPCommCtrlr.RetryBackOff*``): the
    first attempt waits ``wait_minimum_s`` plus a random share of ``random_range_s``; each further attempt
    doubles the fixed part, ``repeat_times`` times at most, and keeps it from then on. The random part keeps
    a fleet from reconnecting all at once after a central system restart. OCPP-J 1.6 leaves the schedule to
    the charger; the same one is used for both.
    """

    wait_minimum_s: float = 0.05
    random_range_s: float = 0.05
    repeat_times: int = 5

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before attempt ``attempt`` (0 for the first after the connection was lost), seconds."""
        doubled = self.wait_minimum_s * 2 ** min(max(attempt, 0), self.repeat_times)
        return doubled + (rng or random).uniform(0.0, self.random_range_s)


DEFAULT_BACKOFF = ReconnectBackoff()
"""A station's back-off unless told otherwise: 50-100 ms for the first attempt (tests, demos, the replay)."""

FLEET_BACKOFF = ReconnectBackoff(wait_minimum_s=2.0, random_range_s=3.0, repeat_times=3)
"""The back-off of ``pipeline simulate`` chargers: 2-5 s for the first attempt, at most 16-19 s later."""


class Link(Protocol):
    """The station's end of an OCPP-J connection (an ``ocpp`` library ``ChargePoint`` of either version)."""

    async def start(self) -> None:
        """Route incoming messages until the connection closes."""

    async def call(self, payload: Any) -> Any:
        """Send a request and return the library's result object (raises on CallError or timeout)."""


async def call_until_ended(link: Link, reader: asyncio.Future[Any], payload: Any) -> Any:
    """``link.call(payload)``'s result, or ``ConnectionError`` once ``reader`` (the task routing the link's
    incoming messages, :meth:`Link.start`) has ended before it: the connection is gone, so no answer can
    come. Raises what ``link.call`` raises (a CallError, its timeout).

    The ``ocpp`` library sends one call at a time, so a call left to its response timeout after its
    connection ended would hold every later message of the station back that long.
    """
    if reader.done():
        raise ConnectionError("the connection has ended")
    call = asyncio.ensure_future(link.call(payload))
    try:
        await asyncio.wait((call, reader), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not call.done():
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
    if call.cancelled():
        raise ConnectionError("the connection ended before the answer")
    return call.result()
