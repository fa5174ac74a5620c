"""How good the controller's charging is: a replay against the best any controller could have done.

For each scenario it runs ``pipeline replay`` (the whole loop: engine, executor, simulated chargers) and
then solves, on the same sessions, building load, prices and DR window, two linear programs at minute
resolution with perfect foresight (scipy's HiGHS):

1. **maximum energy**: each session's average power in each minute it is plugged in is a variable, at most
   the session's maximum power (its EV's AC limit within the charger's rating, times the share of the
   minute it is plugged in); the EVs together stay within the limit in force (the breaker, lowered during
   the DR window) minus the building load, and, when the breaker has a rating per phase, every phase's
   current stays within it; no session gets more than it asked for.
2. **minimum cost for that energy**: the same constraints, at least that energy, priced at the day-ahead
   price of each minute. Solved three times: for the optimum's energy, for the energy the controller
   delivered (so the controller's cost per kWh is set beside the cheapest way to deliver what it
   delivered), and for exactly what the controller delivered to each session (:func:`min_cost_each`: the
   price of the timing alone, where the second may also move energy to sessions plugged in at cheaper
   hours, leaving a need the controller met unmet).

Each scenario runs twice in one run: without plans (the loop knows nothing of departures or needs) and with
plans known (``pipeline replay --plans``: each driver publishes a ``session.plans`` record at plug-in with
the EV's real departure and need). Reported per scenario and mode: energy delivered as % of the optimum,
unmet energy over sessions (sum and worst session, the optimum's sum beside it), the share of sessions
whose need was met by their departure (of all that left within the replay, and of those the optimum meets),
cost per kWh against the cost-optimal schedule for the same energy, seconds over the breaker, over the
limit in force and over the rating per phase, and peak site load.

The optimum does not model the chargers: each session has its own power bound, so two sessions that the
replay ran one after the other on one charger may overlap in the LP. That only loosens the bound (the
optimum is an upper bound on what any controller could deliver to these sessions).

    python -m benchmarks quality --json docs/benchmarks/quality.json     # three days, a few minutes
    python -m benchmarks quality --long --json out.json                  # and a 7-day replay
    python -m benchmarks.quality --markdown docs/benchmarks/quality.json # README's table from the JSON
    python -m benchmarks.quality --scenario "60 kW breaker" --plans      # one scenario, one mode
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from benchmarks.common import table
from pipeline.replay.meter import grid_phases

SCENARIOS = (
    {
        "name": "default day",
        "day": "2024-06-03",
        "days": 1,
        "limit_kw": 100.0,
        "breaker_a": 145.0,
        "speed": 2880.0,
        "drain": True,
    },
    {
        "name": "60 kW breaker",
        "day": "2024-06-03",
        "days": 1,
        "limit_kw": 60.0,
        "breaker_a": 87.0,
        "speed": 2880.0,
        "drain": True,
    },
    {
        "name": "winter weekday",
        "day": "2024-01-17",
        "days": 1,
        "limit_kw": 100.0,
        "breaker_a": 145.0,
        "speed": 2880.0,
        "drain": True,
    },
)
"""The scenarios of a default run (a few minutes): seed 7, 10 chargers of 22 kW, 12 households, a 20 % DR
event 17:00-19:00 local each day (the replay's defaults). ``breaker_a`` is the breaker's kW over three
phases at 230 V, rounded up. ``drain``: the replay runs on past the day until every EV that came has left
(``ReplayOptions.drain``), so a session is measured on what it got by its departure."""
LONG_SCENARIOS = (
    {"name": "7 days", "day": "2024-06-03", "days": 7, "limit_kw": 100.0, "breaker_a": 145.0, "speed": 10080.0},
)
"""Added by ``--long``: a week of replay (its clock holds at every event; about 3 minutes per mode on 2 vCPUs)."""
QUICK_SCENARIOS = ({**SCENARIOS[0], "name": "default day (quick)", "speed": 8000.0},)
MINUTE_S = 60.0


@dataclass(frozen=True)
class LpSession:
    """One session for the LP: plugged in on ``[start_min, end_min)`` (minutes from the grid's start, may be
    fractional), wanting ``need_kwh`` (kWh) at up to ``max_kw`` (kW) drawn equally on the grid ``phases``
    (0, 1, 2 for L1, L2, L3) at ``voltage_v`` (V, phase to neutral)."""

    start_min: float
    end_min: float
    need_kwh: float
    max_kw: float
    phases: tuple[int, ...] = (0, 1, 2)
    voltage_v: float = 230.0
    taper: Taper | None = None


@dataclass(frozen=True)
class Taper:
    """How a session's EV takes less as its battery fills, as the simulated EVs do
    (:meth:`pipeline.sim.ev.EV.taper_fraction`): at state of charge ``soc`` (%) it takes at most
    ``ev_max_kw`` x (1 - (1 - ``end_fraction``) x (soc - ``from_pct``) / (100 - ``from_pct``)) kW above
    ``from_pct``; the SoC is ``arrival_soc_pct`` plus the energy delivered over ``battery_kwh``."""

    battery_kwh: float
    arrival_soc_pct: float
    ev_max_kw: float
    from_pct: float = 80.0
    end_fraction: float = 0.15


@dataclass(frozen=True)
class LpProblem:
    """The site over ``len(limit_kw)`` minutes: per minute the limit in force (kW: the breaker, or lower
    during DR), the building load (kW, spread equally over three phases at ``voltage_v``) and the price
    (EUR/kWh); ``limit_a`` the breaker's rating per phase (A), None for none."""

    sessions: list[LpSession]
    limit_kw: list[float]
    building_kw: list[float]
    price_per_kwh: list[float]
    limit_a: float | None = None
    voltage_v: float = 230.0


@dataclass
class LpResult:
    """A schedule: ``energy_kwh`` in all and per session, its ``cost_eur``, the site's ``peak_kw`` (building
    included), and ``power_kw[i][t]``, session i's average power in minute t (kW)."""

    energy_kwh: float
    cost_eur: float
    peak_kw: float
    session_kwh: list[float]
    power_kw: list[list[float]] = field(repr=False)


def _minute_shares(s: LpSession, minutes: int) -> list[tuple[int, float]]:
    """``(minute, share of it plugged in)`` for every minute the session overlaps."""
    out = []
    first, last = max(0, math.floor(s.start_min)), min(minutes, math.ceil(s.end_min))
    for t in range(first, last):
        share = min(t + 1, s.end_min) - max(t, s.start_min)
        if share > 1e-9:
            out.append((t, share))
    return out


def build_lp(p: LpProblem) -> dict:
    """The constraints shared by both programs, in ``scipy.optimize.linprog`` form.

    Returns ``{"index": [(session, minute)], "bounds": [(0, kW)], "A_ub": csr, "b_ub": [...],
    "energy_row": [kWh per kW-minute of each variable]}``: variable k is session ``index[k][0]``'s average
    power (kW) in minute ``index[k][1]``, bounded by its ``max_kw`` times its share of the minute. Rows:
    per minute, the EVs' sum within ``limit_kw - building_kw`` (never below 0: the building alone over the
    limit leaves no room); per phase and minute with ``limit_a``, the EVs' current within ``limit_a`` less
    the building's share; per session, its energy within ``need_kwh``. Raises ValueError when the
    per-minute series differ in length."""
    from scipy.sparse import coo_matrix

    minutes = len(p.limit_kw)
    if not len(p.building_kw) == len(p.price_per_kwh) == minutes:
        raise ValueError("limit_kw, building_kw and price_per_kwh need one value per minute each")
    index: list[tuple[int, int]] = []
    bounds: list[tuple[float, float | None]] = []
    for i, s in enumerate(p.sessions):
        for t, share in _minute_shares(s, minutes):
            index.append((i, t))
            bounds.append((0.0, s.max_kw * share))
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    b_ub: list[float] = []
    for k, (_, t) in enumerate(index):  # site: sum of EVs <= limit - building
        rows.append(t)
        cols.append(k)
        vals.append(1.0)
    b_ub += [max(0.0, p.limit_kw[t] - p.building_kw[t]) for t in range(minutes)]
    row = minutes
    if p.limit_a is not None:  # per phase: EV amps <= rating - building amps
        for k, (i, t) in enumerate(index):
            s = p.sessions[i]
            for ph in s.phases:
                rows.append(row + ph * minutes + t)
                cols.append(k)
                vals.append(1000.0 / (len(s.phases) * s.voltage_v))
        building_a = [kw * 1000.0 / (3 * p.voltage_v) for kw in p.building_kw]
        b_ub += [max(0.0, p.limit_a - building_a[t]) for _ in range(3) for t in range(minutes)]
        row += 3 * minutes
    for k, (i, _) in enumerate(index):  # per session: energy <= need
        rows.append(row + i)
        cols.append(k)
        vals.append(1.0 / 60.0)
    b_ub += [s.need_kwh for s in p.sessions]
    row += len(p.sessions)
    # Taper: per session and minute after its first, an auxiliary variable holds the energy delivered before
    # that minute (kWh; equality rows chain them), and the minute's power stays within the EV's acceptance
    # at the SoC that energy gives. The SoC at the minute's start is the lowest of the minute, so the bound
    # is at least what the simulated EV takes (it holds each 1 % step at the step's top): still an upper bound.
    eq_rows: list[int] = []
    eq_cols: list[int] = []
    eq_vals: list[float] = []
    n_eq = 0
    aux = len(index)
    by_session: dict[int, list[int]] = {}
    for k, (i, _) in enumerate(index):
        by_session.setdefault(i, []).append(k)
    for i, ks in by_session.items():
        tp = p.sessions[i].taper
        if tp is None or tp.from_pct >= 100.0:
            continue
        slope = tp.ev_max_kw * (1.0 - tp.end_fraction) / (100.0 - tp.from_pct)  # kW per % of SoC
        per_kwh = slope * 100.0 / tp.battery_kwh  # kW less per kWh delivered, above from_pct
        base = tp.ev_max_kw - slope * (tp.arrival_soc_pct - tp.from_pct)  # acceptance at 0 kWh, kW
        previous: tuple[int, int | None] | None = None  # (p variable, its cumulative variable; None for 0)
        for k in ks:
            share = (bounds[k][1] or 0.0) / p.sessions[i].max_kw if p.sessions[i].max_kw > 0 else 0.0
            if previous is not None:
                cum = aux
                aux += 1
                bounds.append((0.0, None))
                # cum - cum_prev - p_prev / 60 = 0
                eq_rows += [n_eq, n_eq]
                eq_cols += [cum, previous[0]]
                eq_vals += [1.0, -1.0 / 60.0]
                if previous[1] is not None:
                    eq_rows.append(n_eq)
                    eq_cols.append(previous[1])
                    eq_vals.append(-1.0)
                n_eq += 1
                # p_k <= share x (base - per_kwh x cum)
                rows += [row, row]
                cols += [k, cum]
                vals += [1.0, share * per_kwh]
                b_ub.append(share * base)
                row += 1
                previous = (k, cum)
            else:
                if base < (bounds[k][1] or 0.0):  # already in the taper at plug-in
                    bounds[k] = (0.0, max(0.0, share * base))
                previous = (k, None)
    n = aux
    a_ub = coo_matrix((vals, (rows, cols)), shape=(row, n)).tocsr()
    a_eq = coo_matrix((eq_vals, (eq_rows, eq_cols)), shape=(n_eq, n)).tocsr() if n_eq else None
    return {
        "index": index,
        "bounds": bounds,
        "A_ub": a_ub,
        "b_ub": b_ub,
        "A_eq": a_eq,
        "b_eq": [0.0] * n_eq,
        "energy_row": [1.0 / 60.0] * len(index) + [0.0] * (n - len(index)),
    }


def _result(p: LpProblem, lp: dict, x) -> LpResult:
    minutes = len(p.limit_kw)
    power = [[0.0] * minutes for _ in p.sessions]
    for k, (i, t) in enumerate(lp["index"]):
        power[i][t] = float(x[k])
    session_kwh = [sum(row) / 60.0 for row in power]
    cost = sum(power[i][t] * p.price_per_kwh[t] / 60.0 for i in range(len(power)) for t in range(minutes))
    peak = max((p.building_kw[t] + sum(row[t] for row in power) for t in range(minutes)), default=0.0)
    return LpResult(sum(session_kwh), cost, peak, session_kwh, power)


def _solve(p: LpProblem, lp: dict, c: list[float], extra_row=None, extra_b: float | None = None):
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, vstack

    a_ub, b_ub = lp["A_ub"], list(lp["b_ub"])
    if extra_row is not None:
        a_ub = vstack([a_ub, csr_matrix([extra_row])]).tocsr()
        b_ub.append(extra_b)
    if not lp["index"]:
        return [], 0.0
    c = list(c) + [0.0] * (len(lp["bounds"]) - len(c))  # the taper's auxiliary variables cost nothing
    a_eq = lp.get("A_eq")
    res = linprog(
        c,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=lp.get("b_eq") if a_eq is not None else None,
        bounds=lp["bounds"],
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"linprog: {res.message}")
    return res.x, res.fun


def max_energy(p: LpProblem, lp: dict | None = None) -> LpResult:
    """The most energy (kWh) any schedule delivers within the constraints of :func:`build_lp`."""
    lp = lp or build_lp(p)
    x, _ = _solve(p, lp, [-e for e in lp["energy_row"]])
    return _result(p, lp, x)


def min_cost(p: LpProblem, energy_kwh: float, lp: dict | None = None) -> LpResult:
    """The cheapest schedule (EUR at each minute's price) delivering at least ``energy_kwh`` (kWh, less a
    part in a million for the solver's tolerance) within the constraints of :func:`build_lp`; RuntimeError
    when no schedule delivers it."""
    lp = lp or build_lp(p)
    c = [p.price_per_kwh[t] / 60.0 for _, t in lp["index"]]
    target = energy_kwh * (1 - 1e-6) - 1e-6
    x, _ = _solve(p, lp, c, extra_row=[-e for e in lp["energy_row"]], extra_b=-target)
    return _result(p, lp, x)


def min_cost_each(p: LpProblem, session_kwh: list[float]) -> LpResult:
    """The cheapest schedule within the constraints of :func:`build_lp` that gives each session exactly
    ``session_kwh[i]`` (kWh, in ``p.sessions``' order; at most its need): the price of the timing alone,
    with the choice of whom to serve fixed. Each session's need is set to its energy and the total
    required, so none can take another's share. RuntimeError when no schedule delivers it."""
    from dataclasses import replace

    fixed = replace(
        p, sessions=[replace(s, need_kwh=min(s.need_kwh, kwh)) for s, kwh in zip(p.sessions, session_kwh, strict=True)]
    )
    return min_cost(fixed, sum(s.need_kwh for s in fixed.sessions))


# ------------------------------------------------------------------------------------------ the replay side


def problem_from_replay(summary: dict) -> LpProblem:
    """The LP of a replay's summary: its sessions (``session_results``), its DR windows, and the building
    load and prices of its days and options (the data the replay published)."""
    from pipeline.replay.data import building_load, price_signals

    opts = summary["options"]
    start = datetime.fromisoformat(summary["replay_start"])
    end = datetime.fromisoformat(summary["replay_end"])
    minutes = round((end - start).total_seconds() / MINUTE_S)
    day = date.fromisoformat(opts["day"])

    def minute_of(t: datetime) -> float:
        return (t - start).total_seconds() / MINUTE_S

    def at(t: int) -> datetime:
        return start + timedelta(minutes=t)

    data_days = opts["days"] + (1 if opts.get("drain") else 0)
    steps = building_load(day, data_days, opts["households"])
    building = []
    j = 0
    for t in range(minutes):
        while j + 1 < len(steps) and steps[j + 1][0] <= at(t):
            j += 1
        building.append(steps[j][1])
    prices = price_signals(summary["site_id"], day, data_days)
    price = [next((s.price_per_kwh for s in prices if s.valid_from <= at(t) < s.valid_to), 0.0) for t in range(minutes)]
    windows = [
        (datetime.fromisoformat(w["start"]), datetime.fromisoformat(w["end"]), w["limit_kw"])
        for w in summary["dr_windows"]
    ]
    limit = [
        min([summary["breaker_limit_kw"], *(kw for a, b, kw in windows if a <= at(t) < b)]) for t in range(minutes)
    ]
    sessions = [
        LpSession(
            start_min=minute_of(datetime.fromisoformat(v["arrival_at"])),
            end_min=minute_of(datetime.fromisoformat(v["departure_at"])),
            need_kwh=v["energy_requested_kwh"],
            max_kw=v["max_power_kw"],
            phases=grid_phases(v.get("phases", 3), v.get("phase_rotation")),
            voltage_v=v.get("voltage_v", 230.0),
            taper=Taper(
                battery_kwh=v["battery_kwh"],
                arrival_soc_pct=v["arrival_soc_pct"],
                ev_max_kw=v["ev_max_ac_kw"],
                from_pct=v["taper_from_pct"],
                end_fraction=v["taper_end_fraction"],
            )
            if "battery_kwh" in v
            else None,
        )
        for v in summary["session_results"]
    ]
    return LpProblem(sessions, limit, building, price, summary.get("breaker_limit_a"))


def replay_cost(series, summary: dict) -> tuple[float, float]:
    """``(kWh, EUR)`` the replay's sessions drew, integrated exactly over each session's draw (a step
    function in ``series.sessions``) against the hourly prices, up to the replay's end."""
    end = datetime.fromisoformat(summary["replay_end"]).timestamp()
    prices = sorted((p.start, p.end, p.price) for p in series.prices)
    kwh = eur = 0.0
    for changes in series.sessions.values():
        for (t0, kw), (t1, _) in zip(changes, [*changes[1:], (end, 0.0)], strict=True):
            if kw <= 0 or t1 <= t0:
                continue
            for a, b, price in prices:
                lo, hi = max(a, t0), min(b, t1)
                if hi > lo:
                    kwh += kw * (hi - lo) / 3600.0
                    eur += kw * (hi - lo) / 3600.0 * price
    return kwh, eur


MET_TOLERANCE_KWH = 0.01
"""A session's need counts as met when at most this much of it is left (kWh)."""


def ev_alone_kwh(visit: dict) -> float | None:
    """The most a session's EV can take of its need (kWh) charging alone at its maximum from plug-in to
    departure, as the simulated EV takes it: ``max_power_kw`` (its AC limit within the charger's rating),
    and above ``taper_from_pct`` its ``ev_max_ac_kw`` x its taper, held over each 1 % step of SoC at the
    step's top (:meth:`pipeline.sim.session.Session.acceptance_a`). ``visit`` is one of a replay summary's
    ``session_results``; ``None`` when it carries no battery (no taper to step).

    The LP bounds a minute by the taper at the minute's SoC, a line through the steps' tops (an upper bound:
    a convex program cannot hold a step function), so for a stop of an hour or less near full it may credit
    a need the EV itself cannot take in time; this is the bound that settles whether it can."""
    from pipeline.sim.ev import taper_fraction
    from pipeline.sim.session import TAPER_STEP_PCT, taper_step_top_pct

    if "battery_kwh" not in visit:
        return None
    left_s = (
        datetime.fromisoformat(visit["departure_at"]) - datetime.fromisoformat(visit["arrival_at"])
    ).total_seconds()
    battery, need = visit["battery_kwh"], visit["energy_requested_kwh"]
    start, end = visit["taper_from_pct"], visit["taper_end_fraction"]
    soc, kwh = visit["arrival_soc_pct"], 0.0
    while left_s > 0 and kwh < need and soc < 100.0:
        if soc < start:
            top, kw = start, visit["max_power_kw"]
        else:
            top = taper_step_top_pct(start, math.floor((soc - start) / TAPER_STEP_PCT + 1e-9))
            kw = min(visit["max_power_kw"], visit["ev_max_ac_kw"] * taper_fraction(top, start, end))
        step_kwh = min((top - soc) * battery / 100.0, need - kwh, kw * left_s / 3600.0)
        kwh += step_kwh
        left_s -= step_kwh / kw * 3600.0
        soc = top if step_kwh >= (top - soc) * battery / 100.0 - 1e-12 else soc + step_kwh * 100.0 / battery
    return kwh


def met_shares(summary: dict, best: LpResult) -> dict:
    """Of the sessions whose EV left within the replay (a later departure is cut by the replay's end, for
    the optimum too): how many there are, how many the replay met by their departure, how many the
    optimum (``best``, built from ``summary``'s sessions in order) meets, and how many of those the replay
    met too. A need the optimum meets counts as deliverable only when the EV alone could take it
    (:func:`ev_alone_kwh`); ``optimum_met_beyond_ev`` counts those it credits beyond that."""
    end = datetime.fromisoformat(summary["replay_end"])
    left = [
        (v, best.session_kwh[i])
        for i, v in enumerate(summary["session_results"])
        if datetime.fromisoformat(v["departure_at"]) <= end
    ]
    met = [v["energy_unmet_kwh"] <= MET_TOLERANCE_KWH for v, _ in left]
    lp_met = [kwh >= v["energy_requested_kwh"] - MET_TOLERANCE_KWH for v, kwh in left]
    alone = [ev_alone_kwh(v) for v, _ in left]
    can = [
        a is None or a >= v["energy_requested_kwh"] - MET_TOLERANCE_KWH for a, (v, _) in zip(alone, left, strict=True)
    ]
    deliverable = [o and c for o, c in zip(lp_met, can, strict=True)]
    return {
        "sessions_left": len(left),
        "sessions_met": sum(met),
        "optimum_sessions_met": sum(deliverable),
        "sessions_met_of_optimum_met": sum(m and o for m, o in zip(met, deliverable, strict=True)),
        "optimum_met_beyond_ev": sum(o and not c for o, c in zip(lp_met, can, strict=True)),
    }


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def measure(scenario: dict, plans: bool = False, prices_known: bool = False) -> dict:
    """Run one scenario's replay (with ``plans``: each driver's plan published at plug-in; with
    ``prices_known``: every day's prices at its start, not a day ahead) and its LPs; returns its row (see
    the module docstring)."""
    import logging
    import time

    from benchmarks.waterfill import waterfill
    from pipeline.replay.driver import ReplayOptions, run_replay
    from pipeline.replay.series import ReplaySeries

    logging.getLogger("pipeline").setLevel(logging.ERROR)  # the loop's own chatter ...
    logging.getLogger("pipeline.replay").setLevel(logging.WARNING)  # ... but not a loop that did not settle
    options = ReplayOptions(
        day=date.fromisoformat(scenario["day"]),
        days=scenario["days"],
        limit_kw=scenario["limit_kw"],
        breaker_a=scenario.get("breaker_a"),
        speed=scenario["speed"],
        chargers=scenario.get("chargers", 10),
        plans=plans,
        drain=scenario.get("drain", False),
        prices_known=prices_known,
    )
    series = ReplaySeries()
    summary = asyncio.run(run_replay(options, series=series))
    started = time.perf_counter()
    problem = problem_from_replay(summary)
    lp = build_lp(problem)
    best = max_energy(problem, lp)
    cheapest_best = min_cost(problem, best.energy_kwh, lp)
    drawn_kwh, drawn_eur = replay_cost(series, summary)
    delivered = summary["energy_delivered_kwh"]
    cheapest_same = min_cost(problem, min(delivered, best.energy_kwh), lp)
    cheapest_each = min_cost_each(problem, [v["energy_delivered_kwh"] for v in summary["session_results"]])
    fill, floored = waterfill(problem), waterfill(problem, floors=True)
    lp_s = time.perf_counter() - started
    over_a = summary.get("seconds_over_limit_a") or {}
    met = met_shares(summary, best)
    return {
        "scenario": scenario["name"],
        "plans": plans,
        "prices_known": prices_known,
        **met,
        "met_pct": _pct(met["sessions_met"], met["sessions_left"]),
        "met_of_optimum_met_pct": _pct(met["sessions_met_of_optimum_met"], met["optimum_sessions_met"]),
        "plan_bound_setpoints": summary.get("setpoints_bound_by_plan"),
        "day": scenario["day"],
        "days": scenario["days"],
        "breaker_kw": scenario["limit_kw"],
        "breaker_a": scenario.get("breaker_a"),
        "sessions": summary["sessions"],
        "evs_turned_away": summary["evs_turned_away"],
        "requested_kwh": summary["energy_requested_kwh"],
        "delivered_kwh": delivered,
        "optimum_kwh": round(best.energy_kwh, 3),
        "energy_pct_of_optimum": round(100.0 * delivered / best.energy_kwh, 1) if best.energy_kwh else None,
        "waterfill_pct_of_optimum": round(100.0 * fill.energy_kwh / best.energy_kwh, 1) if best.energy_kwh else None,
        "waterfill_floors_pct_of_optimum": round(100.0 * floored.energy_kwh / best.energy_kwh, 1)
        if best.energy_kwh
        else None,
        "unmet_kwh": summary["energy_unmet_kwh"],
        "worst_unmet_kwh": summary["worst_session_unmet_kwh"],
        "optimum_unmet_kwh": round(sum(s.need_kwh for s in problem.sessions) - best.energy_kwh, 3),
        "eur_per_kwh": round(drawn_eur / drawn_kwh, 4) if drawn_kwh else None,
        "optimum_eur_per_kwh_same_energy": round(cheapest_same.cost_eur / cheapest_same.energy_kwh, 4)
        if cheapest_same.energy_kwh
        else None,
        "optimum_eur_per_kwh_same_sessions": round(cheapest_each.cost_eur / cheapest_each.energy_kwh, 4)
        if cheapest_each.energy_kwh
        else None,
        "optimum_eur_per_kwh_max_energy": round(cheapest_best.cost_eur / cheapest_best.energy_kwh, 4)
        if cheapest_best.energy_kwh
        else None,
        "metered_kwh": round(drawn_kwh, 3),
        "seconds_over_breaker": summary["seconds_over_limit"],
        "seconds_over_limit_in_force": summary["seconds_over_limit_in_force"],
        "over_limit_episodes": summary.get("over_limit_episodes", []),
        "seconds_over_a": ", ".join(f"{k} {v:g}" for k, v in over_a.items()) if over_a else None,
        "seconds_over_a_per_phase": over_a or None,
        "peak_kw": summary["peak_site_kw"],
        "optimum_peak_kw": round(cheapest_best.peak_kw, 2),
        "peak_phase_a": summary.get("peak_phase_a"),
        "setpoint_minutes_above_draw": summary.get("setpoint_minutes_above_draw"),
        "speed": scenario["speed"],
        "replay_wall_s": summary["wall_clock_s"],
        "unsettled_events": summary.get("unsettled_events", 0),
        "unsettled_at": summary.get("unsettled_at", []),
        "lp_s": round(lp_s, 1),
        "lp_variables": len(lp["index"]),
        "session_detail": [
            {
                k: v[k]
                for k in (
                    "charge_point_id",
                    "arrival_at",
                    "departure_at",
                    "energy_requested_kwh",
                    "max_power_kw",
                    "phases",
                    "energy_delivered_kwh",
                    "energy_unmet_kwh",
                    "plan",
                )
                if k in v
            }
            | {
                "optimum_kwh": round(best.session_kwh[i], 3),
                "waterfill_kwh": round(fill.session_kwh[i], 3),
                "waterfill_floors_kwh": round(floored.session_kwh[i], 3),
            }
            for i, v in enumerate(summary["session_results"])
        ],
    }


def run(quick: bool = False, long: bool = False) -> dict:
    """The rows of :data:`QUICK_SCENARIOS` with ``quick``, else of :data:`SCENARIOS` (with ``long``, of
    :data:`LONG_SCENARIOS` too)."""
    scenarios = QUICK_SCENARIOS if quick else SCENARIOS + (LONG_SCENARIOS if long else ())
    return {"rows": [measure(s, plans) for s in scenarios for plans in (False, True)]}


def tables(result: dict) -> list:
    def cents(eur: float | None) -> float | None:
        return None if eur is None else round(100 * eur, 2)

    rows = [
        {
            **r,
            "ct_per_kwh": cents(r.get("eur_per_kwh")),
            "optimum_ct_per_kwh_same_energy": cents(r.get("optimum_eur_per_kwh_same_energy")),
            "cost_ratio": round(r["eur_per_kwh"] / r["optimum_eur_per_kwh_same_energy"], 3)
            if r.get("eur_per_kwh") and r.get("optimum_eur_per_kwh_same_energy")
            else None,
        }
        for r in result["rows"]
    ]
    energy = table(
        "Charging quality: the replay against the LP optimum (perfect foresight, minute resolution)",
        (
            "scenario",
            "plans",
            "sessions",
            "requested_kwh",
            "delivered_kwh",
            "optimum_kwh",
            "energy_pct_of_optimum",
            "waterfill_pct_of_optimum",
            "waterfill_floors_pct_of_optimum",
            "unmet_kwh",
            "worst_unmet_kwh",
            "optimum_unmet_kwh",
            "met_pct",
            "met_of_optimum_met_pct",
        ),
        rows,
        caption="water-fill: equal shares minute by minute, each EV's maximum and taper known, no departures, "
        "without and with the 6 A floors (benchmarks/waterfill.py); met: sessions whose need was met by their departure, of those that left within the replay "
        "and of those the optimum meets",
    )
    cost = table(
        "Charging quality: cost, limits and peaks",
        (
            "scenario",
            "plans",
            "ct_per_kwh",
            "optimum_ct_per_kwh_same_energy",
            "cost_ratio",
            "seconds_over_breaker",
            "seconds_over_limit_in_force",
            "seconds_over_a",
            "peak_kw",
            "optimum_peak_kw",
            "setpoint_minutes_above_draw",
            "replay_wall_s",
        ),
        rows,
        caption="cost in euro cents per kWh (day-ahead price) against the cheapest schedule of the same energy; "
        "seconds over the rating per phase as L1, L2, L3; setpoint-minutes above the draw plus the learning "
        "margin once a cap was learned",
    )
    return [energy, cost]


def _pct_text(pct: float | None) -> str:
    return "-" if pct is None else f"{pct:.1f} %"


def markdown(result: dict) -> str:
    """The README's table of a run's ``result`` (the ``quality`` entry of the JSON file)."""
    lines = [
        "| scenario | plans | sessions (turned away) | delivered / optimum, kWh | % of optimum (water-fill: no floors, floors) | unmet, kWh (worst session) | "
        "optimum unmet, kWh | met by departure (of those the optimum meets) | ct/kWh (cheapest for that energy; for each session's) | "
        "s over breaker / limit in force / per phase (L1, L2, L3) | peak, kW (optimum) | "
        "setpoint-min above draw + margin |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        over_a = r.get("seconds_over_a_per_phase") or {}
        phases = ", ".join(f"{v:g}" for v in over_a.values()) if over_a else "-"
        met = (
            f"{r['sessions_met']}/{r['sessions_left']} ({r['sessions_met_of_optimum_met']}/{r['optimum_sessions_met']})"
            if "sessions_met" in r
            else "-"
        )
        minutes = r.get("setpoint_minutes_above_draw")
        excess = "-" if minutes is None else f"{minutes:g}"
        each = (
            ""
            if r.get("optimum_eur_per_kwh_same_sessions") is None
            else f"; {100 * r['optimum_eur_per_kwh_same_sessions']:.2f}"
        )
        lines.append(
            f"| {r['scenario']} | {'known' if r.get('plans') else 'none'} | {r['sessions']} ({r.get('evs_turned_away', 0)}) | "
            f"{r['delivered_kwh']:.1f} / {r['optimum_kwh']:.1f} | "
            f"{r['energy_pct_of_optimum']:.1f} % ({_pct_text(r.get('waterfill_pct_of_optimum'))}, {_pct_text(r.get('waterfill_floors_pct_of_optimum'))}) | {r['unmet_kwh']:.1f} ({r['worst_unmet_kwh']:.1f}) | "
            f"{r['optimum_unmet_kwh']:.1f} | {met} | "
            f"{100 * r['eur_per_kwh']:.2f} ({100 * r['optimum_eur_per_kwh_same_energy']:.2f}{each}) | "
            f"{r['seconds_over_breaker']:g} / {r['seconds_over_limit_in_force']:g} / {phases} | "
            f"{r['peak_kw']:.1f} ({r['optimum_peak_kw']:.1f}) | {excess} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.quality [--quick] [--long] [--json FILE]`` runs it;
    ``python -m benchmarks.quality --markdown FILE`` prints the README's table from a run's JSON;
    ``python -m benchmarks.quality --scenario NAME [--plans] [--prices-known]`` runs one scenario in one
    mode and prints its row as JSON (``--prices-known``: every price published at the replay's start, the
    yardstick that tells what the day-ahead horizon costs from what the plan rules cost)."""
    import json
    import sys
    from pathlib import Path

    from benchmarks.__main__ import main as run_all

    argv = list(argv or [])
    if argv[:1] == ["--markdown"] and len(argv) == 2:
        print(markdown(json.loads(Path(argv[1]).read_text())["results"]["quality"]), end="")
        return 0
    if argv[:1] == ["--scenario"] and len(argv) >= 2:
        found = [s for s in SCENARIOS + LONG_SCENARIOS if s["name"] == argv[1]]
        flags = argv[2:]
        if not found or len(set(flags)) != len(flags) or not set(flags) <= {"--plans", "--prices-known"}:
            names = ", ".join(str(s["name"]) for s in SCENARIOS + LONG_SCENARIOS)
            print(f"usage: --scenario NAME [--plans] [--prices-known], NAME one of: {names}", file=sys.stderr)
            return 2
        row = measure(found[0], plans="--plans" in flags, prices_known="--prices-known" in flags)
        print(json.dumps(row, indent=2))
        return 0
    return run_all(["quality", *argv])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
