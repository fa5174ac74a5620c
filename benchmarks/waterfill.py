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
building load and DR window of the replay in the same run, so the project's energy can be read against
both: below this baseline the loop loses energy of its own; between it and the optimum lies foresight.
"""

from __future__ import annotations

from benchmarks.quality import LpProblem, LpResult, _minute_shares

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
                used = sum(load[i] * alloc[i] for i in load)
                step = min(step, (room - used) / weight)
        step = max(0.0, step)
        for i in active:
            alloc[i] += step
        full = [
            load
            for room, (_, load) in zip(rooms, constraints, strict=True)
            if room - sum(load[i] * alloc[i] for i in load) <= TOL
        ]
        active = {i for i in active if caps[i] - alloc[i] > TOL and not any(i in load for load in full)}
    return alloc


def waterfill(p: LpProblem) -> LpResult:
    """The water-fill of the module docstring over ``p`` (the LP's problem: sessions, per-minute limit,
    building load and price). Each minute a session's cap is its maximum times the share of the minute it
    is plugged in, lowered by its taper at the energy it has had and by what it still needs; the result
    has the same fields as the LP's (energy and cost of the schedule, peak, per-session kWh and per-minute
    kW)."""
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
            if s.taper is not None and s.taper.from_pct < 100.0:
                tp = s.taper
                soc = tp.arrival_soc_pct + 100.0 * had[i] / tp.battery_kwh
                if soc > tp.from_pct:
                    taken = 1.0 - (1.0 - tp.end_fraction) * (soc - tp.from_pct) / (100.0 - tp.from_pct)
                    accept = min(accept, tp.ev_max_kw * max(0.0, taken))
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
        for i, kw in _fill(caps, constraints).items():
            power[i][t] = kw
            had[i] += kw / 60.0
    session_kwh = [sum(row) / 60.0 for row in power]
    cost = sum(power[i][t] * p.price_per_kwh[t] / 60.0 for i in range(len(power)) for t in range(minutes))
    peak = max((p.building_kw[t] + sum(row[t] for row in power) for t in range(minutes)), default=0.0)
    return LpResult(sum(session_kwh), cost, peak, session_kwh, power)


__all__ = ["waterfill"]
