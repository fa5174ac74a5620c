"""Smart charging inside a simulated station: installed profiles in, connector power out.

This is the part of a charger the pipeline is really testing, and it is the same in OCPP 1.6 and 2.0.1. It
decides whether a profile (already translated to :class:`~pipeline.sim.profiles.Profile` by a version
adapter) is accepted, and turns the profiles in force into each connector's pilot, a current per phase on
the EV's phases: min(TxProfile or TxDefaultProfile, the charger's rating per phase, the EV's maximum per
phase), with the station maximum profile shared between the connectors (OCPP 1.6 section 3.13.3). A
profile in A is a current per phase whatever the EV's phases (16 A to a 1-phase EV is 3.68 kW at 230 V); one
in W is shared over the phases the EV draws on. The EV follows a new pilot its session's ``lag_s`` clock
seconds later (:mod:`pipeline.sim.session` draws it from there), and ``on_power`` hears of every change of a
draw with its exact clock time.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pipeline.sim.profiles import STATION_MAX, TX, Profile, ProfileStore, Purpose, period_kw
from pipeline.sim.session import Connector, Session, water_fill

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
        """A limit changed at ``at``: the pilots follow now, each EV its session's ``lag_s`` later."""
        self.recompute(at)

    def cancel_pending(self) -> None:
        """Cancel the EVs' delayed responses (the station stops)."""
        for task in list(self._pending):
            task.cancel()

    def recompute(self, at: datetime) -> None:
        """Set every charging connector's pilot (A per phase) from the limits in force at ``at``:
        min(TxProfile or TxDefaultProfile, the rating per phase, the EV's ``max_current_a``), on
        min(EV phases, station phases, the period's numberPhases) phases, with the station maximum shared out
        by :func:`~pipeline.sim.session.water_fill` (in kW: a station maximum in A is taken over all the
        station's phases). A new pilot reaches the draw as :meth:`follow` says."""
        cp = self.station
        wants: dict[int, float] = {}
        phases: dict[int, int] = {}
        times: dict[int, datetime] = {}
        volts = cp.voltage_v
        rating_a = cp.rated_power_kw * 1000.0 / (cp.phases * volts)
        for cid, c in cp.connectors.items():
            t = times[cid] = at if c.last_t is None else max(at, c.last_t)
            c.advance(t)
            s = c.active
            if s is None:
                continue
            n, limit_a = min(s.ev.phases, cp.phases), math.inf
            found = self.profiles.connector_limit(cid, t, s.started_at)
            if found is not None:
                profile, period = found
                if period.phases:
                    n = max(1, min(n, period.phases))
                limit_a = period.limit if profile.unit == "A" else period.limit / (n * volts)
            phases[cid] = n
            wants[cid] = max(0.0, min(limit_a, rating_a, s.ev.max_current_a)) * n * volts / 1000.0
        cap = self.profiles.in_force(STATION_MAX, 0, at, None)
        cap_kw = math.inf if cap is None else period_kw(cap[1], cap[0].unit, cp.phases, volts)
        for cid, kw in water_fill(cap_kw, wants).items():
            c = cp.connectors[cid]
            self.follow(c, kw * 1000.0 / (phases[cid] * volts), phases[cid], times[cid])

    def follow(self, c: Connector, pilot_a: float, phases: int, at: datetime) -> None:
        """The charger offers ``pilot_a`` (A per phase) on ``phases`` phases from ``at``; the EV draws on it at
        once when it is the session's first offer or its ``lag_s`` is 0, else ``lag_s`` clock seconds later
        (a cut and a raise alike; offers are followed in the order they were made)."""
        s = c.active
        if s is None:
            return
        if c.pilot_a is not None and abs(pilot_a - c.pilot_a) < 1e-9 and phases == c.pilot_phases:
            return
        first = c.followed_a is None
        c.pilot_a, c.pilot_phases = pilot_a, phases
        c.pilot_seq += 1
        seq = c.pilot_seq
        if first or s.lag_s <= 0:
            self._adopt(c, s, seq, pilot_a, phases, at)
            return
        target = at + timedelta(seconds=s.lag_s)

        async def later() -> None:
            await self.station.clock.sleep_until(target)
            self._adopt(c, s, seq, pilot_a, phases, target)

        task = asyncio.create_task(later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @staticmethod
    def _adopt(c: Connector, s: Session, seq: int, pilot_a: float, phases: int, at: datetime) -> None:
        """The EV of ``s`` now draws on offer ``seq`` (unless its session ended or a newer offer is in use)."""
        if c.active is not s or seq < c.followed_seq:
            return
        t = at if c.last_t is None else max(at, c.last_t)
        c.advance(t)
        if c.active is not s:
            return
        c.followed_seq, c.followed_a, c.phases_in_use = seq, pilot_a, phases
        c.redraw(t)

    def emit(self, c: Connector, kw: float, at: datetime) -> None:
        """Tell ``on_power`` (if any) that the connector's draw is ``kw`` from ``at``; its errors are logged."""
        if self.station.on_power is None:
            return
        try:
            self.station.on_power(self.station.charge_point_id, c.connector_id, kw, at)
        except Exception:
            log.exception("%s: on_power callback failed", self.station.charge_point_id)

    def effective_limit_kw(self, connector_id: int, now: datetime) -> float | None:
        """min(station maximum, TxProfile or TxDefaultProfile) at ``now``, kW; None when unlimited. A limit
        in A counts over the phases the connector's EV draws on (the station's when idle)."""
        cp = self.station
        c = cp.connectors[connector_id]
        s = c.session
        tx = self.profiles.connector_limit(connector_id, now, s.started_at if s else None)
        ev_phases = min(s.ev.phases, cp.phases) if s is not None else cp.phases
        kws = []
        if tx is not None:
            profile, period = tx
            n = min(ev_phases, period.phases) if period.phases else ev_phases
            kws.append(period.limit / 1000.0 if profile.unit == "W" else period.limit * n * cp.voltage_v / 1000.0)
        cap = self.profiles.in_force(STATION_MAX, 0, now, None)
        if cap is not None:
            kws.append(period_kw(cap[1], cap[0].unit, cp.phases, cp.voltage_v))
        return min(kws) if kws else None
