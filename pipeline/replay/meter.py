"""The replay's site meter: the true load of the site over clock time, against every limit in force.

The controller is judged by what the site really drew, not by what it asked for: the building's load as
the replay publishes it plus every EV's draw as its simulated charger reports it (exact clock times), held
against the breaker, the lower limit a DR window puts in force and, when the breaker has one, its rating
per phase. Kept apart from the driver so the arithmetic is tested without a replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from pipeline.replay.series import ReplaySeries

__all__ = ["PHASES", "ROTATIONS", "PhasesOf", "SetpointExcess", "SiteMeter", "grid_phases"]

PHASES = ("L1", "L2", "L3")
"""The grid's phases (R, S, T), as the per-phase figures name them."""
ROTATIONS = {"RST": (0, 1, 2), "RTS": (0, 2, 1), "SRT": (1, 0, 2), "STR": (1, 2, 0), "TRS": (2, 0, 1), "TSR": (2, 1, 0)}
"""OCPP ``ConnectorPhaseRotation``: the grid phase (0 = L1/R) of the charger's L1, L2, L3."""

PhasesOf = Callable[[str, int], tuple[int, ...]]
"""``phases_of(charge_point_id, connector_id)``: the grid phases (0, 1, 2 for L1, L2, L3) a connector's draw is
on now, each carrying an equal share."""


def grid_phases(phases_in_use: int, rotation: str | None = None) -> tuple[int, ...]:
    """The grid phases (0-2) a draw on the charger's first ``phases_in_use`` phases is on, through the
    charger's ``rotation`` (``"RST"`` when None; see ``pipeline.contracts.topics.PhaseRotation``)."""
    return ROTATIONS[rotation or "RST"][: max(1, min(3, phases_in_use))]


MAX_EPISODES = 20
"""The most episodes over the limit in force a :class:`SiteMeter` keeps (the first ones), for diagnosis."""


class SiteMeter:
    """The site's true load over clock time: building load plus every EV's draw, piecewise constant.

    ``seconds_over_limit`` (over the breaker) and ``seconds_over_limit_in_force`` (over the breaker or the
    lower limit a DR window puts in force, :meth:`add_window`, while EVs draw: when the building alone is
    over a DR limit, shedding every EV is all the controller can do) and ``peak_kw`` count only states that
    lasted a positive time. With ``limit_a`` (the breaker's rating per phase, A; ``TopologyNode.limit_a``)
    ``seconds_over_limit_a`` counts, per grid phase, the time its current was over it: an EV's draw is split
    equally over the phases ``phases_of`` names (all three when not given), the building's over all three
    (the BEMS reports one total), at ``voltage_v`` phase to neutral. ``peak_a`` is each phase's highest
    current. ``over_episodes`` lists the first :data:`MAX_EPISODES` spans over the limit in force (start,
    end, seconds, peak and limit kW, the building's load and each EV's draw as it began), for diagnosis.
    Every change is also recorded in ``series`` (the site's load and the session's draw).
    """

    def __init__(
        self,
        limit_kw: float,
        start: datetime,
        series: ReplaySeries | None = None,
        *,
        limit_a: float | None = None,
        voltage_v: float = 230.0,
        phases_of: PhasesOf | None = None,
    ) -> None:
        self.limit_kw = limit_kw
        self.limit_a = limit_a
        self.voltage_v = voltage_v
        self.phases_of: PhasesOf = phases_of or (lambda _cp, _c: (0, 1, 2))
        self.windows: list[tuple[datetime, datetime, float]] = []
        self.seconds_over_limit_in_force = 0.0
        self.over_episodes: list[dict] = []  # when, how long and by what the limit in force was exceeded
        self.building_kw = 0.0
        self.ev: dict[tuple[str, int], float] = {}
        self.ev_a: dict[tuple[str, int], tuple[float, float, float]] = {}
        self._t = start
        self.seconds_over_limit = 0.0
        self.seconds_over_limit_a = [0.0, 0.0, 0.0]
        self.peak_a = [0.0, 0.0, 0.0]
        self.peak_kw = 0.0
        self.peak_building_kw = 0.0
        self.series = series if series is not None else ReplaySeries()

    @property
    def ev_kw(self) -> float:
        return sum(self.ev.values())

    def phase_currents_a(self) -> list[float]:
        """The current on each grid phase now (A): the building's share plus every EV's."""
        base = self.building_kw * 1000.0 / (3 * self.voltage_v)
        return [base + sum(a[p] for a in self.ev_a.values()) for p in range(3)]

    def add_window(self, start: datetime, end: datetime, limit_kw: float) -> None:
        """A DR window: on ``[start, end)`` the limit in force is ``limit_kw`` (kW) if lower than the breaker."""
        self.windows.append((start, end, limit_kw))

    def limit_in_force(self, t: datetime) -> float:
        """The site's limit at ``t`` (kW): the breaker, or a DR window's lower limit."""
        return min([self.limit_kw, *(kw for a, b, kw in self.windows if a <= t < b)])

    def advance(self, t: datetime) -> None:
        dt = (t - self._t).total_seconds()
        if dt <= 0:
            return
        total = self.building_kw + self.ev_kw
        if total > self.limit_kw + 1e-6:
            self.seconds_over_limit += dt
        cuts = sorted({self._t, t, *(x for a, b, _ in self.windows for x in (a, b) if self._t < x < t)})
        for a, b in zip(cuts, cuts[1:], strict=False):  # the state held on [a, b) against each limit in force
            limit_kw = self.limit_in_force(a)
            if total > limit_kw + 1e-6 and self.ev_kw > 1e-6:
                self.seconds_over_limit_in_force += (b - a).total_seconds()
                self._episode(a, b, total, limit_kw)
        for p, amps in enumerate(self.phase_currents_a()):
            self.peak_a[p] = max(self.peak_a[p], amps)
            if self.limit_a is not None and amps > self.limit_a + 1e-6:
                self.seconds_over_limit_a[p] += dt
        self.peak_kw = max(self.peak_kw, total)
        self.peak_building_kw = max(self.peak_building_kw, self.building_kw)
        self._t = t

    def _episode(self, a: datetime, b: datetime, total_kw: float, limit_kw: float) -> None:
        """Note a state over the limit in force on ``[a, b)``: it extends the last episode when that ended at
        ``a``, else starts one (at most :data:`MAX_EPISODES` are kept)."""
        last = self.over_episodes[-1] if self.over_episodes else None
        if last is not None and last["end"] == a.isoformat():
            last["end"], last["seconds"] = b.isoformat(), round(last["seconds"] + (b - a).total_seconds(), 3)
            last["peak_kw"] = round(max(last["peak_kw"], total_kw), 3)
        elif len(self.over_episodes) < MAX_EPISODES:
            self.over_episodes.append(
                {
                    "start": a.isoformat(),
                    "end": b.isoformat(),
                    "seconds": round((b - a).total_seconds(), 3),
                    "peak_kw": round(total_kw, 3),
                    "limit_kw": round(limit_kw, 3),
                    "building_kw": round(self.building_kw, 3),
                    "ev_kw": {f"{cp}/{c}": round(kw, 3) for (cp, c), kw in sorted(self.ev.items()) if kw > 0},
                }
            )

    def on_power(self, charge_point_id: str, connector_id: int, power_kw: float, at: datetime) -> None:
        self.advance(at)
        self.ev[(charge_point_id, connector_id)] = power_kw
        on = self.phases_of(charge_point_id, connector_id)
        share = power_kw * 1000.0 / (len(on) * self.voltage_v)
        self.ev_a[(charge_point_id, connector_id)] = (
            share if 0 in on else 0.0,
            share if 1 in on else 0.0,
            share if 2 in on else 0.0,
        )
        t = max(at, self._t).timestamp()
        self.series.on_power(charge_point_id, connector_id, power_kw, t)
        self.series.record(t, self.building_kw, self.ev_kw)

    def set_building(self, kw: float, at: datetime) -> None:
        self.advance(at)
        self.building_kw = kw
        self.series.record(max(at, self._t).timestamp(), self.building_kw, self.ev_kw)


class SetpointExcess:
    """Setpoint-minutes held above what EVs take: per running session whose cap the executor has learned
    (``learned_cap_kw`` on ``ocpp.active.sessions``), the clock minutes its setpoint stood above its draw
    plus the learning margin (the larger of ``margin_kw`` and ``margin_frac`` of the draw, kW; the
    executor's ``learned_cap_margin_kw`` and ``learned_cap_margin_frac``), summed over sessions. Headroom
    a setpoint holds past that margin is headroom no other EV gets. :meth:`observe` takes every running
    session's state at a time; each state holds until the next observation."""

    def __init__(self, start: datetime, margin_kw: float = 1.0, margin_frac: float = 0.1) -> None:
        self.margin_kw, self.margin_frac = margin_kw, margin_frac
        self.minutes = 0.0
        self._t = start
        self._over = 0

    def observe(self, t: datetime, sessions: Iterable[tuple[float, float, bool]]) -> None:
        """``sessions``: ``(setpoint_kw, draw_kw, cap learned)`` of every running session at ``t``."""
        dt = (t - self._t).total_seconds()
        if dt > 0:
            self.minutes += self._over * dt / 60.0
            self._t = t
        self._over = sum(
            1
            for setpoint_kw, draw_kw, learned in sessions
            if learned and setpoint_kw > draw_kw + max(self.margin_kw, self.margin_frac * draw_kw) + 1e-6
        )
