"""Smart charging inside a simulated charge point: installed profiles in, connector power out.

This is the part of a charger the pipeline is really testing. It decides whether a SetChargingProfile is
accepted, and turns the profiles in force into each connector's draw:
min(TxProfile or TxDefaultProfile, EV acceptance, rating), with a ChargePointMaxProfile shared between the
connectors. A change takes effect ``ev_response_s`` clock seconds after the limit changed, and ``on_power``
hears of every change with its exact clock time.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pipeline.sim.profiles import CP_MAX, TX, Profile, ProfileStore, period_kw
from pipeline.sim.session import Connector, water_fill

if TYPE_CHECKING:
    from pipeline.sim.charger import SimulatedChargePoint

log = logging.getLogger(__name__)

ACCEPTED, REJECTED = "Accepted", "Rejected"


class PowerControl:
    """The profiles of one charge point and the power they allow; reads its settings from ``cp``."""

    def __init__(self, cp: SimulatedChargePoint) -> None:
        self.cp = cp
        self.profiles = ProfileStore()
        self._pending: set[asyncio.Task] = set()

    def set_profile(self, connector_id: int, raw: dict, now: datetime) -> str:
        """SetChargingProfile: install and apply, or Rejected (unknown connector, ChargePointMaxProfile off
        connector 0, TxProfile without an active transaction or naming another one)."""
        connectors = self.cp._connectors
        try:
            p = Profile.from_ocpp(connector_id, raw, now)
        except (KeyError, TypeError, ValueError):
            return REJECTED
        if p.unit not in ("A", "W") or not p.periods:
            return REJECTED
        if connector_id != 0 and connector_id not in connectors:
            return REJECTED
        if p.purpose == CP_MAX and connector_id != 0:
            return REJECTED
        if p.purpose == TX:
            c = connectors.get(connector_id)
            s = c.session if c is not None else None
            if s is None or s.end_at is not None:
                return REJECTED
            # While StartTransaction is in flight the id is unknown: keep the profile; plug_in drops it if
            # it names another transaction.
            if s.transaction_id is not None:
                if p.transaction_id is not None and p.transaction_id != s.transaction_id:
                    return REJECTED
                p.transaction_id = s.transaction_id
        self.profiles.install(p)
        self._touch(now)
        return ACCEPTED

    def clear(
        self,
        profile_id: int | None,
        connector_id: int | None,
        purpose: str | None,
        stack_level: int | None,
        now: datetime,
    ) -> int:
        """ClearChargingProfile: how many profiles were removed (0 means Unknown)."""
        removed = self.profiles.clear(profile_id, connector_id, purpose, stack_level)
        if removed:
            self._touch(now)
        return removed

    def _touch(self, now: datetime) -> None:
        """Profiles changed at ``now``: schedule boundaries before it no longer matter; wake the sessions so
        they plan around the new boundaries."""
        for c in self.cp._connectors.values():
            c.limits_at = now if c.limits_at is None else max(c.limits_at, now)
            c.wake.set()
        self.limits_changed(now)

    def limits_changed(self, at: datetime) -> None:
        """A limit changed at ``at``; the EVs follow ``ev_response_s`` clock seconds later (0: right now)."""
        delay = self.cp.ev_response_s
        if delay <= 0:
            self.recompute(at)
            return
        target = at + timedelta(seconds=delay)

        async def later() -> None:
            await self.cp.clock.sleep((target - self.cp.clock.now()).total_seconds())
            self.recompute(target)

        task = asyncio.create_task(later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def cancel_pending(self) -> None:
        for task in list(self._pending):
            task.cancel()

    def recompute(self, at: datetime) -> None:
        """Set every charging connector's draw from the limits in force at ``at``, effective from then."""
        cp = self.cp
        wants: dict[int, float] = {}
        times: dict[int, datetime] = {}
        for cid, c in cp._connectors.items():
            t = times[cid] = at if c.last_t is None else max(at, c.last_t)
            c.advance(t)
            if not c.charging:
                continue
            limit, phases = math.inf, cp.phases
            found = self.profiles.connector_limit(cid, t, c.session.started_at)
            if found is not None:
                profile, period = found
                limit = period_kw(period, profile.unit, cp.phases, cp.voltage_v)
                if profile.unit == "A" and period.phases:
                    phases = period.phases
            c.phases_in_use = phases
            wants[cid] = max(0.0, min(limit, c.session.ev.max_ac_kw, cp.rated_power_kw))
        cap = self.profiles.in_force(CP_MAX, 0, at, None)
        cap_kw = math.inf if cap is None else period_kw(cap[1], cap[0].unit, cp.phases, cp.voltage_v)
        for cid, kw in water_fill(cap_kw, wants).items():
            c = cp._connectors[cid]
            if abs(kw - c.power_kw) > 1e-9:
                c.power_kw = kw
                self.emit(c, kw, times[cid])
                c.wake.set()

    def emit(self, c: Connector, kw: float, at: datetime) -> None:
        """Tell ``on_power`` (if any) that the connector's draw is ``kw`` from ``at``; its errors are logged."""
        if self.cp.on_power is None:
            return
        try:
            self.cp.on_power(self.cp.charge_point_id, c.connector_id, kw, at)
        except Exception:
            log.exception("%s: on_power callback failed", self.cp.charge_point_id)

    def effective_limit_kw(self, connector_id: int, now: datetime) -> float | None:
        """min(ChargePointMaxProfile, TxProfile or TxDefaultProfile) at ``now``, kW; None when unlimited."""
        cp = self.cp
        s = cp._connectors[connector_id].session
        limits = [
            self.profiles.connector_limit(connector_id, now, s.started_at if s else None),
            self.profiles.in_force(CP_MAX, 0, now, None),
        ]
        kws = [period_kw(per, p.unit, cp.phases, cp.voltage_v) for p, per in filter(None, limits)]
        return min(kws) if kws else None
