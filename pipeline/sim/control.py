"""Smart charging inside a simulated station: installed profiles in, connector power out.

This is the part of a charger the pipeline is really testing, and it is the same in OCPP 1.6 and 2.0.1. It
decides whether a profile (already translated to :class:`~pipeline.sim.profiles.Profile` by a version
adapter) is accepted, and turns the profiles in force into each connector's draw:
min(TxProfile or TxDefaultProfile, EV acceptance, rating), with the station maximum profile shared between
the connectors (OCPP 1.6 section 3.13.3). A change takes effect ``ev_response_s`` clock seconds after the
limit changed, and ``on_power`` hears of every change with its exact clock time.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pipeline.sim.profiles import STATION_MAX, TX, Profile, ProfileStore, Purpose, period_kw
from pipeline.sim.session import Connector, water_fill

if TYPE_CHECKING:
    from pipeline.sim.station import Station

log = logging.getLogger(__name__)


class PowerControl:
    """The profiles of one station and the power they allow; reads its settings from ``station``."""

    def __init__(self, station: Station) -> None:
        self.station = station
        self.profiles = ProfileStore()
        self._pending: set[asyncio.Task[None]] = set()

    def set_profile(self, p: Profile, now: datetime) -> bool:
        """Install ``p`` (received at ``now``) and apply it; False (rejected) for a profile without periods,
        an unknown connector, a station maximum off connector 0, or a TxProfile without an active transaction
        or naming another one (OCPP 1.6 section 3.13.1; OCPP 2.0.1 K01.FR.03)."""
        connectors = self.station.connectors
        connector_id = p.connector_id
        if not p.periods:
            return False
        if connector_id != 0 and connector_id not in connectors:
            return False
        if p.purpose == STATION_MAX and connector_id != 0:
            return False
        if p.purpose == TX:
            c = connectors.get(connector_id)
            s = c.session if c is not None else None
            if s is None or s.end_at is not None:
                return False
            # While the transaction start is in flight the id is unknown: keep the profile; plug_in drops it
            # if it names another transaction.
            if s.transaction_id is not None:
                if p.transaction_id is not None and p.transaction_id != s.transaction_id:
                    return False
                p.transaction_id = s.transaction_id
        self.profiles.install(p)
        self._touch(now)
        return True

    def clear(
        self,
        profile_id: int | None,
        connector_id: int | None,
        purpose: Purpose | None,
        stack_level: int | None,
        now: datetime,
    ) -> int:
        """ClearChargingProfile (OCPP 1.6 section 5.5, 2.0.1 K10): how many profiles were removed."""
        removed = self.profiles.clear(profile_id, connector_id, purpose, stack_level)
        if removed:
            self._touch(now)
        return removed

    def _touch(self, now: datetime) -> None:
        """Profiles changed at ``now``: schedule boundaries before it no longer matter; wake the sessions so
        they plan around the new boundaries."""
        for c in self.station.connectors.values():
            c.limits_at = now if c.limits_at is None else max(c.limits_at, now)
            c.wake.set()
        self.limits_changed(now)

    def limits_changed(self, at: datetime) -> None:
        """A limit changed at ``at``; the EVs follow ``ev_response_s`` clock seconds later (0: right now)."""
        delay = self.station.ev_response_s
        if delay <= 0:
            self.recompute(at)
            return
        target = at + timedelta(seconds=delay)

        async def later() -> None:
            await self.station.clock.sleep((target - self.station.clock.now()).total_seconds())
            self.recompute(target)

        task = asyncio.create_task(later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def cancel_pending(self) -> None:
        """Cancel the delayed recomputes (the station stops)."""
        for task in list(self._pending):
            task.cancel()

    def recompute(self, at: datetime) -> None:
        """Set every charging connector's draw (kW) from the limits in force at ``at``, effective from then:
        min(TxProfile or TxDefaultProfile, the EV's max_ac_kw, the rating), with the station maximum shared
        out by :func:`~pipeline.sim.session.water_fill`."""
        cp = self.station
        wants: dict[int, float] = {}
        times: dict[int, datetime] = {}
        for cid, c in cp.connectors.items():
            t = times[cid] = at if c.last_t is None else max(at, c.last_t)
            c.advance(t)
            s = c.active
            if s is None:
                continue
            limit, phases = math.inf, cp.phases
            found = self.profiles.connector_limit(cid, t, s.started_at)
            if found is not None:
                profile, period = found
                limit = period_kw(period, profile.unit, cp.phases, cp.voltage_v)
                if profile.unit == "A" and period.phases:
                    phases = period.phases
            c.phases_in_use = phases
            wants[cid] = max(0.0, min(limit, s.ev.max_ac_kw, cp.rated_power_kw))
        cap = self.profiles.in_force(STATION_MAX, 0, at, None)
        cap_kw = math.inf if cap is None else period_kw(cap[1], cap[0].unit, cp.phases, cp.voltage_v)
        for cid, kw in water_fill(cap_kw, wants).items():
            c = cp.connectors[cid]
            if abs(kw - c.power_kw) > 1e-9:
                c.power_kw = kw
                self.emit(c, kw, times[cid])
                c.wake.set()

    def emit(self, c: Connector, kw: float, at: datetime) -> None:
        """Tell ``on_power`` (if any) that the connector's draw is ``kw`` from ``at``; its errors are logged."""
        if self.station.on_power is None:
            return
        try:
            self.station.on_power(self.station.charge_point_id, c.connector_id, kw, at)
        except Exception:
            log.exception("%s: on_power callback failed", self.station.charge_point_id)

    def effective_limit_kw(self, connector_id: int, now: datetime) -> float | None:
        """min(station maximum, TxProfile or TxDefaultProfile) at ``now``, kW; None when unlimited."""
        cp = self.station
        s = cp.connectors[connector_id].session
        limits = [
            self.profiles.connector_limit(connector_id, now, s.started_at if s else None),
            self.profiles.in_force(STATION_MAX, 0, now, None),
        ]
        kws = [period_kw(per, p.unit, cp.phases, cp.voltage_v) for p, per in filter(None, limits)]
        return min(kws) if kws else None
