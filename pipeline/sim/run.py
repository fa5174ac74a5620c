"""``pipeline simulate``: a fleet of simulated charge points against any OCPP 1.6J central system.

EV visits come from the ElaadNL distributions (seeded), one day at a time: each charger gets about
``evs_per_charger`` visitors a day, taking the next visit that arrives after its charger is free. The
first EV at each charger plugs in at once (with its drawn energy need and dwell time), so a demo has
sessions to balance from the first second.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pipeline.contracts.clock import SimClock, SystemClock
from pipeline.contracts.errors import PipelineError
from pipeline.sim.ev import EV, REAL_EV_RESPONSE_S, ResponseLag
from pipeline.sim.evs import SITE_TZ, EVSampler
from pipeline.sim.fleet import run_fleet
from pipeline.sim.station import FLEET_BACKOFF
from pipeline.sim.v16 import SimulatedChargePoint
from pipeline.sim.v201 import SimulatedChargingStation


class SimulationError(PipelineError):
    """The simulated fleet could not do its job (no charger connected)."""


def sampled_ev_factory(sampler: EVSampler, evs_per_charger: float):
    """An EV factory for :func:`run_fleet`: per charger, visits drawn day by day from ``sampler``."""
    queues: dict[str, list[EV]] = {}

    def factory(charge_point_id: str, now: datetime) -> EV | None:
        if evs_per_charger <= 0:
            return None
        if charge_point_id not in queues:
            queues[charge_point_id] = []
            first = sampler.visit(now.astimezone(SITE_TZ).date())
            return replace(first, arrival_at=now, departure_at=now + (first.departure_at - first.arrival_at))
        queue = queues[charge_point_id]
        day = now.astimezone(SITE_TZ).date()
        while True:
            while queue and queue[0].arrival_at < now:
                queue.pop(0)
            if queue:
                return queue.pop(0)
            count = max(1, round(evs_per_charger))
            queue.extend(sampler.day_visits(day, count))
            day += timedelta(days=1)

    return factory


async def simulate(
    url: str,
    chargers: int,
    *,
    rated_kw: float = 22.0,
    speed: float = 1.0,
    prefix: str = "CP",
    evs_per_charger: float = 2.0,
    seed: int = 7,
    duration_s: float | None = None,
    protocol: str = "ocpp1.6",
    password: str | None = None,
    ev_response_s: ResponseLag = REAL_EV_RESPONSE_S,
) -> dict[str, Any]:
    """Run the fleet until ``duration_s`` clock seconds pass or SIGINT/SIGTERM; returns the fleet summary.

    Chargers behave as real ones do when the central system goes away (a restart, a network outage): they
    keep their sessions and reconnect with a growing, randomised back-off
    (:data:`pipeline.sim.station.FLEET_BACKOFF`), also while it cannot be reached at start. ``protocol``
    is ``ocpp1.6`` or ``ocpp2.0.1``; ``password`` turns on HTTP Basic auth (the charge point id as the
    username, OCPP security profile 1). EVs follow a new limit ``ev_response_s`` clock seconds late (by
    default a lag drawn per session from :data:`~pipeline.sim.ev.REAL_EV_RESPONSE_S`, seeded with
    ``seed``), as real ones do.

    Raises :class:`SimulationError` when no charger ever connected (the URL, the protocol or the
    password is wrong), with the chargers' errors.
    """
    clock = SystemClock() if speed == 1 else SimClock(datetime.now(SITE_TZ), speed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    factory = sampled_ev_factory(EVSampler(seed), evs_per_charger)
    summary = await run_fleet(
        url,
        chargers,
        clock,
        factory,
        prefix=prefix,
        rated_power_kw=rated_kw,
        duration_s=duration_s,
        stop_event=stop,
        auto_reconnect=True,
        reconnect_backoff=FLEET_BACKOFF,
        station=SimulatedChargingStation if protocol == "ocpp2.0.1" else SimulatedChargePoint,
        password=password,
        ev_response_s=ev_response_s,
        seed=seed,
    )
    if summary["chargers_connected"] == 0:
        reasons = summary["errors"][0] if summary["errors"] else "it could not be reached before the end"
        raise SimulationError(f"no charger connected to {url} ({protocol}): {reasons}")
    summary.pop("session_details", None)
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in summary.items()}
