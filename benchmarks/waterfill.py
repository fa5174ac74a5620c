"""A second yardstick beside the LP in ``benchmarks quality``: an ideal controller that knows no departure.

The LP optimum (:mod:`benchmarks.quality`) has perfect foresight: it knows when each EV leaves and what it
needs, and moves charging between EVs accordingly. No controller without plans can reach it, so the gap
between the project and the optimum mixes two things: the price of not knowing departures, and what the
loop itself loses (floors, the debounce of raises, caps still to be learned, EVs following a new limit
seconds late, metering). This module measures the first alone: minute by minute, it shares the room in
force among the EVs plugged in by equal-share water-filling (max-min fair progressive filling), each EV up
to what it really takes (its maximum and its taper, known exactly), within the limit in force less the
building load and, with a rating per phase, within every phase's current; no floors, no lag, no debounce.
It is the "equal-share water-fill, EV max known" of the allocation's issue, run on the very sessions,
building load and DR window of the replay in the same run.

Like the LP, that fill lets an EV charge at any rate. A real one does not charge below 6 A per phase it
draws on (IEC 61851-1), so with ``floors`` the water-fill first admits sessions in arrival order while
their minimum (the floor, or what the EV takes if that is less: it is known here) fits within every
limit, pauses the others for the minute, and fills the rest equally above the minimums, as the project's
allocator does (``pipeline.allocation``), but with each EV's acceptance known at every minute and no lag.
Read the project's energy against both: below the water-fill with floors, the loop loses energy of its
own (caps still to be learned, debounce, EVs following late); between it and the optimum lie foresight
and the floors.
"""

from __future__ import annotations

from benchmarks.quality import LpProblem, LpResult, _minute_shares
from pipeline.allocation.reference import MIN_CURRENT_A
from pipeline.sim.ev import taper_fraction

TOL = 1e-9


def _fill(caps: dict[int, float], constraints: list[tuple[float, dict[int, float]]]) -> dict[int, float]:
    """Max-min fair progressive filling: every session rises together from 0 until it reaches its cap
    (kW) or a constraint it is in fills; ``constraints`` are ``(room, {session: load per kW})``. Returns
    each session's kW."""
    alloc = dict.fromkeys(caps, 0.0)
    active = {i for i, cap in caps.items() if cap > TOL}
    rooms = [max(0.0, room) for room, _ in constraints]
    while active:
        step = min(caps[i] - alloc[i] for i in active)
        for room, (_, load) in zip(rooms, constraints, strict=True):
            weight = sum(load[i] for i in active if i in load)
            if weight > TOL:
                used = sum(load[i] * alloc.get(i, 0.0) for i in load)
                step = min(step, (room - used) / weight)
        step = max(0.0, step)
        for i in active:
            alloc[i] += step
        full = [
            load
            for room, (_, load) in zip(rooms, constraints, strict=True)
            if room - sum(load[i] * alloc.get(i, 0.0) for i in load) <= TOL
        ]
        active = {i for i in active if caps[i] - alloc[i] > TOL and not any(i in load for load in full)}
    return alloc


def _admit(
    order: list[int], minimum: dict[int, float], constraints: list[tuple[float, dict[int, float]]]
) -> dict[int, float]:
    """Sessions in ``order`` keep their ``minimum`` (kW) while it fits in what every constraint has left;
    returns the admitted ones with their minimum (the others are paused, at 0)."""
    left = [room for room, _ in constraints]
    admitted: dict[int, float] = {}
    for i in order:
        need = [load.get(i, 0.0) * minimum[i] for _, load in constraints]
        if all(n <= room + TOL for n, room in zip(need, left, strict=True)):
            admitted[i] = minimum[i]
            left = [room - n for n, room in zip(need, left, strict=True)]
    return admitted


def waterfill(p: LpProblem, floors: bool = False) -> LpResult:
    """The water-fill of the module docstring over ``p`` (the LP's problem: sessions, per-minute limit,
    building load and price), with ``floors`` the one that pauses what does not fit at 6 A. Each minute a
    session's cap is its maximum times the share of the minute it is plugged in, lowered by its taper at
    the energy it has had and by what it still needs; the result has the same fields as the LP's (energy
    and cost of the schedule, peak, per-session kWh and per-minute kW)."""
    minutes = len(p.limit_kw)
    power = [[0.0] * minutes for _ in p.sessions]
    had = [0.0] * len(p.sessions)
    shares = [dict(_minute_shares(s, minutes)) for s in p.sessions]
    a_per_kw = [1000.0 / (len(s.phases) * s.voltage_v) if s.phases else 0.0 for s in p.sessions]
    for t in range(minutes):
        caps: dict[int, float] = {}
        for i, s in enumerate(p.sessions):
            share = shares[i].get(t)
            if share is None:
                continue
            accept = s.max_kw
            if (tp := s.taper) is not None:
                soc = tp.arrival_soc_pct + 100.0 * had[i] / tp.battery_kwh
                accept = min(accept, tp.ev_max_kw * taper_fraction(soc, tp.from_pct, tp.end_fraction))
            caps[i] = max(0.0, min(accept * share, (s.need_kwh - had[i]) * 60.0))
        if not caps:
            continue
        constraints = [(p.limit_kw[t] - p.building_kw[t], dict.fromkeys(caps, 1.0))]
        if p.limit_a is not None:
            building_a = p.building_kw[t] * 1000.0 / (3 * p.voltage_v)
            for ph in range(3):
                load = {i: a_per_kw[i] for i in caps if ph in p.sessions[i].phases}
                if load:
                    constraints.append((p.limit_a - building_a, load))
        base: dict[int, float] = {}
        if floors:
            floor = {
                i: MIN_CURRENT_A * len(p.sessions[i].phases) * p.sessions[i].voltage_v / 1000.0 * shares[i][t]
                for i in caps
            }
            order = sorted(caps, key=lambda i: (p.sessions[i].start_min, i))
            base = _admit(order, {i: min(floor[i], caps[i]) for i in caps}, constraints)
            constraints = [
                (room - sum(load.get(i, 0.0) * kw for i, kw in base.items()), load) for room, load in constraints
            ]
            caps = {i: caps[i] - kw for i, kw in base.items()}
        for i, kw in _fill(caps, constraints).items():
            kw += base.get(i, 0.0)
            power[i][t] = kw
            had[i] += kw / 60.0
    session_kwh = [sum(row) / 60.0 for row in power]
    cost = sum(power[i][t] * p.price_per_kwh[t] / 60.0 for i in range(len(power)) for t in range(minutes))
    peak = max((p.building_kw[t] + sum(row[t] for row in power) for t in range(minutes)), default=0.0)
    return LpResult(sum(session_kwh), cost, peak, session_kwh, power)


__all__ = ["waterfill"]
