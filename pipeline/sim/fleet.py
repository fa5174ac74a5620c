"""Run many simulated charge points against one central system.

The demo, the replay and the load benchmarks need a site full of chargers with EVs coming and going; this
module is the loop that does it. Each charger is independent: it asks an EV factory for its next visitor,
waits on the clock for the arrival, charges it and asks again. A failure in one charger is logged and the
rest carry on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from pipeline.contracts.clock import Clock
from pipeline.sim.ev import EV
from pipeline.sim.station import Station
from pipeline.sim.v16 import SimulatedChargePoint

log = logging.getLogger(__name__)

EVFactory = Callable[[str, datetime], "EV | None | Awaitable[EV | None]"]
"""ev_factory(charge_point_id, now) -> the charger's next EV, or None when it gets no more."""


async def run_fleet(
    url: str,
    chargers: int,
    clock: Clock,
    ev_factory: EVFactory,
    *,
    prefix: str = "CP",
    rated_power_kw: float = 22.0,
    phases: int = 3,
    voltage_v: float = 230.0,
    duration_s: float | None = None,
    stop_event: asyncio.Event | None = None,
    station: type[Station] = SimulatedChargePoint,
    **charger_kwargs: Any,
) -> dict[str, Any]:
    """Run ``chargers`` charge points named f"{prefix}{i:03d}" (i from 1) until every factory is exhausted,
    ``duration_s`` clock seconds have passed, or ``stop_event`` is set; sessions still running then are
    stopped (reason Other).

    Extra keyword arguments (``meter_interval_s``, ``on_power``, ``ev_response_s``, ``password``, ...) go to
    every :class:`SimulatedChargePoint`.

    ``station`` is the protocol adapter (:class:`SimulatedChargePoint` for OCPP 1.6J,
    :class:`~pipeline.sim.v201.SimulatedChargingStation` for 2.0.1).

    Returns a summary: chargers, chargers_connected (that ever got through BootNotification),
    chargers_failed (ids), errors (one line per failed charger), sessions (count), energy_delivered_kwh,
    energy_requested_kwh (needs of the EVs that were plugged in), by_reason, started_at, ended_at, and
    session_details (one dict per finished session).
    """
    started_at = clock.now()
    stopping = asyncio.Event()
    points = [
        station(
            f"{prefix}{i:03d}",
            url,
            clock,
            rated_power_kw=rated_power_kw,
            phases=phases,
            voltage_v=voltage_v,
            **charger_kwargs,
        )
        for i in range(1, chargers + 1)
    ]
    requested = {cp.charge_point_id: 0.0 for cp in points}
    failed: set[str] = set()
    connected: set[str] = set()
    errors: dict[str, str] = {}

    async def until_stopping(aw: Awaitable[Any]) -> bool:
        """Await ``aw`` unless stopping comes first; True when ``aw`` finished."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
        return task.done() and not task.cancelled()

    async def drive(cp: Station) -> None:
        try:
            starting = asyncio.ensure_future(cp.start())
            if not await until_stopping(starting):  # still trying to connect (back-off) when the run ends
                return
            starting.result()  # its error, if it gave up
            connected.add(cp.charge_point_id)
            while not stopping.is_set():
                ev = ev_factory(cp.charge_point_id, clock.now())
                if inspect.isawaitable(ev):
                    ev = await ev
                if ev is None:
                    return
                if not await until_stopping(clock.sleep_until(ev.arrival_at)):
                    return
                if stopping.is_set():
                    return
                if await cp.plug_in(ev) is None:
                    log.warning("%s: EV %s was not accepted", cp.charge_point_id, ev.ev_id)
                    continue
                requested[cp.charge_point_id] += ev.energy_need_kwh
                if not await until_stopping(cp.wait_done(1)):
                    return
        except Exception as exc:  # one line per charger, never a traceback per charger
            failed.add(cp.charge_point_id)
            errors[cp.charge_point_id] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.error("%s: charger failed: %s", cp.charge_point_id, errors[cp.charge_point_id])

    drivers = [asyncio.create_task(drive(cp), name=f"fleet-{cp.charge_point_id}") for cp in points]
    all_done = asyncio.ensure_future(asyncio.gather(*drivers, return_exceptions=True))
    waits: set[asyncio.Future] = {all_done}
    if duration_s is not None:
        waits.add(asyncio.ensure_future(clock.sleep(duration_s)))
    if stop_event is not None:
        waits.add(asyncio.ensure_future(stop_event.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.set()
        for w in waits - {all_done}:
            w.cancel()
        await asyncio.gather(all_done, return_exceptions=True)
        results = await asyncio.gather(*(cp.stop() for cp in points), return_exceptions=True)
        for cp, res in zip(points, results, strict=True):
            if isinstance(res, Exception):
                log.error("%s: stop failed: %r", cp.charge_point_id, res)

    sessions = [s for cp in points for s in cp.sessions]
    return {
        "chargers": chargers,
        "chargers_connected": len(connected),
        "chargers_failed": sorted(failed),
        "errors": [errors[cp] for cp in sorted(errors)],
        "sessions": len(sessions),
        "energy_delivered_kwh": sum(s.energy_kwh for s in sessions),
        "energy_requested_kwh": sum(requested.values()),
        "by_reason": dict(Counter(s.reason for s in sessions)),
        "started_at": started_at,
        "ended_at": clock.now(),
        "session_details": [{"charge_point_id": cp.charge_point_id, **asdict(s)} for cp in points for s in cp.sessions],
    }


def fixed_schedule_factory(evs: dict[str, list[EV]]) -> Callable[[str, datetime], EV | None]:
    """An ev_factory serving each charger its own list of EVs, in order (handy for tests and demos)."""
    queues = {k: list(v) for k, v in evs.items()}

    def factory(charge_point_id: str, now: datetime) -> EV | None:
        queue = queues.get(charge_point_id)
        return queue.pop(0) if queue else None

    return factory


def simple_ev(
    ev_id: str,
    arrival_at: datetime,
    *,
    dwell_s: float = 4 * 3600.0,
    energy_kwh: float = 20.0,
    max_ac_kw: float = 11.0,
    battery_kwh: float = 60.0,
    arrival_soc_pct: float = 30.0,
    model: str = "generic",
) -> EV:
    """A plain EV arriving at ``arrival_at`` and staying ``dwell_s`` seconds."""
    return EV(
        ev_id,
        model,
        battery_kwh,
        max_ac_kw,
        arrival_soc_pct,
        energy_kwh,
        arrival_at,
        arrival_at + timedelta(seconds=dwell_s),
    )
