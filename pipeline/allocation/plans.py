"""Fleet plans in the reference allocator: what each planned session still needs, by when, and which price
slots before its departure are cheaper than now (the rules of price_slots.sql, session_plan_targets.sql,
session_plan_slots.sql, session_plan_needs.sql and the plan branch of session_limits.sql;
docs/architecture.md, "Plans")."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.allocation.reference import State

__all__ = [
    "PLAN_AT_RISK_S",
    "PLAN_HORIZON_S",
    "MAX_WEIGHT",
    "PLAN_TAPER_FACTOR",
    "TAPER_FROM_SOC_PCT",
    "TAPER_SLOPE_PER_PCT",
    "NEED_KW_MIN",
    "URGENT_WEIGHT",
    "PlanNeed",
    "plan_at_risk",
    "plan_cap",
    "own_laxity",
    "plan_needs",
    "need_kw",
    "plan_weight",
    "taper_factor",
]

PLAN_AT_RISK_S = 900
"""A plan is at risk when its laxity is this many seconds or less (session_limits.sql)."""


PLAN_TAPER_FACTOR = 1.5
"""The time a need takes, times this, is what urgency allows for it (session_plan_needs.sql): an EV's
acceptance tapers as its battery fills (CC-CV above about 80 % SoC), so the last kWh come slower. Where the
SoC and the battery size are known the time already counts the taper (:func:`taper_factor`) and this is a
margin for what the share and the EV still do differently; where they are not, it is the only allowance."""
TAPER_FROM_SOC_PCT = 80.0
"""The SoC (%) above which an EV's acceptance is taken to taper (the CV phase of CC-CV charging)."""
TAPER_SLOPE_PER_PCT = 0.0425
"""... falling linearly by this fraction of the full rate per SoC point, to 15 % of it at 100 %
(session_plan_targets.sql)."""
URGENT_WEIGHT = 1000.0
"""A session whose plan is at risk (:func:`plan_at_risk`) fills with its weight times this: under a breaker
that binds it rises a thousand times faster than the sessions that can wait, so it takes the headroom
first, up to its cap, and they share what it leaves (session_limits.sql)."""
NEED_KW_MIN = 1.0
"""... and times the rate it needs to be met by its departure (:func:`need_kw`, kW), at least this: the
sessions at risk share the headroom in proportion to the rates they need (session_limits.sql)."""
MAX_WEIGHT = 1_000_000.0
"""A fill weight is never above this: the levels the fill compares (kW per weight, within 1e-9) stay
within a milli-kW for any session."""
PLAN_HORIZON_S = 2678400
"""The longest wait ``urgent_at`` counts back from a departure (31 days, a plan's bound), s."""


@dataclass(frozen=True)
class PlanNeed:
    """A planned session's target and slots (session_plan_targets, session_plan_needs): ``remaining_kwh``
    by ``departure_at``, ``left_s`` from its latest meter reading, ``cheaper_s`` before departure in slots
    cheaper than the one in force (every later slot when none is), ``price_now`` (None: no price);
    ``share_kw`` its part of the site's EV headroom (kW, :func:`plan_needs`; None: no headroom known),
    ``ev_rate_kw`` the rate the EV last showed it charges at (kW, None: it has not drawn yet;
    executor/learning.py) and
    ``urgent`` whether now is at or past ``urgent_at``, departure less :data:`PLAN_TAPER_FACTOR` times the
    time the remaining energy takes at min(device cap, EV rate, share) less :data:`PLAN_AT_RISK_S`.
    Every such time is that of ``timed_kwh``, the remaining energy times ``taper_factor``
    (:func:`taper_factor`)."""

    departure_at: datetime
    energy_needed_kwh: float
    remaining_kwh: float
    left_s: float
    cheaper_s: float
    price_now: float | None
    share_kw: float | None = None
    ev_rate_kw: float | None = None
    urgent: bool = False
    taper_factor: float = 1.0

    @property
    def timed_kwh(self) -> float:
        """The remaining energy (kWh) as long as it takes at the rate the EV takes now (its taper counted)."""
        return self.remaining_kwh * self.taper_factor


def taper_factor(soc_pct: float | None, remaining_kwh: float, battery_kwh: float | None) -> float:
    """How much longer ``remaining_kwh`` (kWh) takes than at the rate an EV at ``soc_pct`` (%) takes now, its
    acceptance tapering from :data:`TAPER_FROM_SOC_PCT` by :data:`TAPER_SLOPE_PER_PCT` of the full rate per SoC
    point (CC-CV): 1 without the SoC or the battery size (kWh), or with nothing remaining; at least 1
    (session_plan_targets.sql)."""
    if soc_pct is None or battery_kwh is None:
        return 1.0
    end = min(soc_pct + 100.0 * remaining_kwh / battery_kwh, 100.0)
    if end <= soc_pct:
        return 1.0
    taper = max(soc_pct, TAPER_FROM_SOC_PCT)

    def f(x: float) -> float:
        return 1.0 - TAPER_SLOPE_PER_PCT * (x - TAPER_FROM_SOC_PCT)

    full = max(min(end, TAPER_FROM_SOC_PCT) - soc_pct, 0.0)
    tapered = math.log(f(taper) / f(end)) / TAPER_SLOPE_PER_PCT if end > taper else 0.0
    return max((full + tapered) * f(taper) / (end - soc_pct), 1.0)


def _price_slots(state: State, now: datetime) -> dict[str, list[tuple[datetime, datetime, float]]]:
    """site -> ``(valid_from, slot_end, price)`` in force now or later, by start (price_slots.sql): one per
    start (highest price, then latest valid_to), each cut at the next one's start."""
    best: dict[tuple[str, datetime], Any] = {}
    for p in state.prices:
        if p.valid_to > now:
            k = (p.site_id, p.valid_from)
            cur = best.get(k)
            if cur is None or (p.price_per_kwh, p.valid_to) > (cur.price_per_kwh, cur.valid_to):
                best[k] = p
    by_site: dict[str, list[Any]] = defaultdict(list)
    for (site, _), p in best.items():
        by_site[site].append(p)
    out: dict[str, list[tuple[datetime, datetime, float]]] = {}
    for site, rows in by_site.items():
        rows.sort(key=lambda p: p.valid_from)
        out[site] = [
            (
                p.valid_from,
                min(p.valid_to, rows[i + 1].valid_from) if i + 1 < len(rows) else p.valid_to,
                p.price_per_kwh,
            )
            for i, p in enumerate(rows)
        ]
    return out


def plan_needs(
    state: State,
    placed: Iterable[tuple[Any, str]],
    now: datetime,
    headroom: dict[str, float] | None = None,
    device_cap: Callable[[Any], float] | None = None,
    typical: dict[str, float] | None = None,
) -> dict[str, PlanNeed]:
    """session_id -> :class:`PlanNeed` for every placed ``(session record, site_id)`` with a plan.

    Trust, per field: the session record's own ``departure_at`` / ``energy_needed_kwh``, a session plan, a
    charger plan whose departure is after the session started, the charger's then the site's defaults
    (``default_departure_min``: the next such minute of the day, UTC, after the start). ``headroom`` is
    the EV headroom per site node (kW), for ``share_kw``: that headroom times the session's remaining
    energy over what the site's planned sessions leaving no later than it (itself and those leaving with it
    included) still need, the rate earliest-deadline-first can give it (None without headroom, or
    with nothing remaining); a session whose need cannot be met even at its own rate (device cap and
    EV rate) is at risk (:func:`plan_weight`) and counts on that rate (the short ones split the headroom by
    it when it is less than their sum), and the others count on what the short ones leave, needed without
    them.
    ``device_cap(record)`` is the session's cap before rules and plans (kW, the reference's
    :func:`~pipeline.allocation.reference.device_cap`; its rating without it). The headroom a session
    counts on is not the headroom now alone: it moves towards ``typical[site]`` (kW, what the building's
    mean load over the last 24 hours leaves; the headroom now where missing) by the share of a day left
    until its departure (a persistence forecast blended into the daily mean)."""
    headroom = headroom or {}
    typical = typical or {}
    topo = state.topology
    slots = _price_slots(state, now)
    plans_of_session = {p.session_id: p for p in state.plans.values() if p.session_id is not None}
    plans_of_charger = {p.charge_point_id: p for p in state.plans.values() if p.charge_point_id is not None}
    out: dict[str, PlanNeed] = {}
    targets: list[tuple[Any, str, datetime, float, float, float, float, float | None]] = []
    tapers: dict[str, float] = {}
    for rec, site_id in placed:
        plan = plans_of_session.get(rec.session_id)
        if plan is None:
            plan = plans_of_charger.get(rec.charge_point_id)
            if plan is not None and not plan.departure_at > rec.started_at:
                plan = None
        charger = topo.get(rec.charge_point_id)
        charger = charger if charger is not None and charger.kind == "charger" else None
        home = topo.get(site_id)
        home = home if home is not None and home.kind == "site" else None

        def default(name: str, _c: Any = charger, _h: Any = home) -> Any:
            for node in (_c, _h):
                if node is not None and getattr(node, name) is not None:
                    return getattr(node, name)
            return None

        delivered = rec.energy_kwh or 0.0
        departure = rec.departure_at or (plan.departure_at if plan else None)
        if departure is None and (minute := default("default_departure_min")) is not None:
            day = rec.started_at.replace(hour=0, minute=0, second=0, microsecond=0)
            departure = day + timedelta(minutes=minute)
            if not departure > rec.started_at:
                departure += timedelta(days=1)
        if rec.energy_needed_kwh is not None:
            needed = rec.energy_needed_kwh
        elif plan is not None and plan.energy_needed_kwh is not None:
            needed = plan.energy_needed_kwh
        elif plan is not None:
            needed = delivered + (plan.target_soc_pct - (rec.soc_pct or 0.0)) / 100.0 * plan.battery_kwh
        else:
            needed = default("default_energy_kwh")
        if departure is None or needed is None:
            continue
        seen = rec.sampled_at or rec.started_at
        rows = []  # (price, valid_from, usable_s, in_force)
        for start, end, price in slots.get(site_id, []):
            if start <= now < end:
                rows.append((price, start, (end - start).total_seconds(), True))
            elif start > now and start < departure:
                rows.append((price, start, (min(end, departure) - start).total_seconds(), False))
        rows.sort(key=lambda r: (r[0], r[1]))
        current = [i for i, r in enumerate(rows) if r[3]]
        if current:
            cheaper = sum(r[2] for r in rows[: current[0]])
            price_now: float | None = rows[current[0]][0]
        else:
            cheaper = sum(r[2] for r in rows)
            price_now = None
        remaining = needed - delivered if needed > delivered else 0.0
        tapers[rec.session_id] = taper_factor(rec.soc_pct, remaining, plan.battery_kwh if plan is not None else None)
        targets.append(
            (rec, site_id, departure, needed, remaining, (departure - seen).total_seconds(), cheaper, price_now)
        )

    # each session's own rate: its cap before rules and plans, and the rate its EV showed (kW)
    own = {
        rec.session_id: min(
            device_cap(rec) if device_cap is not None else rec.rated_power_kw,
            rec.ev_rate_kw if rec.ev_rate_kw is not None else rec.rated_power_kw,
        )
        for rec, *_ in targets
    }
    # a need that cannot be met even at the session's own rate is at risk (plan_weight): counted at that rate
    short = {
        rec.session_id
        for rec, _, _, _, remaining, left_s, *_ in targets
        if remaining > 0
        and own[rec.session_id] > 0
        and remaining * tapers[rec.session_id] * 3600.0 > left_s * own[rec.session_id]
    }
    short_kw: dict[str, float] = defaultdict(float)
    for rec, site_id, *_ in targets:
        if rec.session_id in short:
            short_kw[site_id] += own[rec.session_id]
    # earliest deadline first among the others: what the site's planned sessions leaving no later than each
    # one need before it leaves
    demand = {
        rec.session_id: sum(
            t[4] for t in targets if t[1] == site_id and t[2] <= departure and t[0].session_id not in short
        )
        for rec, site_id, departure, *_ in targets
    }
    for rec, site_id, departure, needed, remaining, left_s, cheaper, price_now in targets:
        site = topo.get(site_id)
        share = None
        if site is not None and site.kind == "site" and site_id in headroom and remaining > 0:
            now_kw = headroom[site_id]
            room = now_kw + (typical.get(site_id, now_kw) - now_kw) * min(max(left_s, 0.0) / 86400.0, 1.0)
            if rec.session_id in short:
                share = room * own[rec.session_id] / short_kw[site_id]
            else:
                share = max(room - short_kw[site_id], 0.0) * remaining / demand[rec.session_id]
        rate = min(own[rec.session_id], share if share is not None else rec.rated_power_kw)
        wait_s = (
            min(PLAN_TAPER_FACTOR * remaining * tapers[rec.session_id] * 3600.0 / rate + PLAN_AT_RISK_S, PLAN_HORIZON_S)
            if rate > 0
            else 0.0
        )
        out[rec.session_id] = PlanNeed(
            departure_at=departure,
            energy_needed_kwh=needed,
            remaining_kwh=remaining,
            left_s=left_s,
            cheaper_s=cheaper,
            price_now=price_now,
            share_kw=share,
            ev_rate_kw=rec.ev_rate_kw,
            urgent=departure - timedelta(seconds=wait_s) <= now,
            taper_factor=tapers[rec.session_id],
        )
    return out


def _rate(need: PlanNeed, ruled_cap_kw: float) -> float:
    """The rate a planned session can expect (kW): the least of its cap, the rate its EV last showed and its
    share of the site's headroom (each when known)."""
    return min(x for x in (ruled_cap_kw, need.ev_rate_kw, need.share_kw) if x is not None)


def plan_at_risk(need: PlanNeed, ruled_cap_kw: float) -> bool:
    """Whether a planned session with energy still to go is urgent or at risk (laxity at most 900 s plus the
    taper's allowance at its expected rate; see :func:`plan_cap`): it then fills with
    :data:`URGENT_WEIGHT` (session_limits.sql)."""
    rate = _rate(need, ruled_cap_kw)
    if need.remaining_kwh <= 0:
        return False
    if need.urgent:
        return True
    if rate <= 0:
        return False
    laxity = need.left_s - need.timed_kwh * 3600.0 / rate
    return laxity <= PLAN_AT_RISK_S + (PLAN_TAPER_FACTOR - 1) * need.timed_kwh * 3600.0 / rate


def plan_cap(need: PlanNeed, ruled_cap_kw: float) -> tuple[float, float | None]:
    """``(cap_kw, laxity_s)`` of a planned session whose cap before plans is ``ruled_cap_kw``
    (session_limits.sql). Its expected rate is the least of that cap, its EV's rate and its share of the
    site's headroom (:func:`_rate`); ``laxity_s`` is :func:`own_laxity`. The cap is 0 once met; the cap
    while the EV has not shown its rate (``ev_rate_kw`` None: a plan timed on the charger's rating would
    start too late for most EVs, and its phases are unknown until it draws), when urgent, at risk (laxity
    at the expected rate at most 900 s plus the taper's allowance, ``PLAN_TAPER_FACTOR - 1`` times that
    time) or when the slots cheaper than now cannot hold what remains at the expected rate; else 0 (it
    waits for them)."""
    laxity = own_laxity(need, ruled_cap_kw)
    rate = _rate(need, ruled_cap_kw)
    if need.remaining_kwh <= 0:
        return 0.0, laxity
    if need.ev_rate_kw is None:  # it has not shown its rate yet: it charges until it does
        return ruled_cap_kw, laxity
    if rate <= 0 or plan_at_risk(need, ruled_cap_kw):
        return ruled_cap_kw, laxity
    if need.timed_kwh > rate * need.cheaper_s / 3600.0 + 1e-9:
        return ruled_cap_kw, laxity
    return 0.0, laxity


def own_laxity(need: PlanNeed, ruled_cap_kw: float) -> float | None:
    """Seconds to departure less the time the remaining energy takes at the session's own rate (its cap, or
    the rate its EV showed when less; no share of the breaker): the least goes first in admission, and
    below 0 the need cannot be met at all (session_limits.sql, ``laxity_s``). None at a rate of 0."""
    rate = min(x for x in (ruled_cap_kw, need.ev_rate_kw) if x is not None)
    return need.left_s - need.timed_kwh * 3600.0 / rate if rate > 0 else None


def need_kw(need: PlanNeed) -> float:
    """The rate (kW) a planned session needs from now to be met by its departure: its remaining energy as
    timed (:attr:`PlanNeed.timed_kwh`, kWh) over the seconds left (at least 60), at least
    :data:`NEED_KW_MIN` (session_limits.sql)."""
    return max(need.timed_kwh * 3600.0 / max(need.left_s, 60.0), NEED_KW_MIN)


def plan_weight(need: PlanNeed, ruled_cap_kw: float, weight: float) -> float:
    """The fill weight of a planned session of record weight ``weight`` (session_limits.sql): times
    :data:`URGENT_WEIGHT` and times :func:`need_kw` while it is at risk (:func:`plan_at_risk`), else as it is;
    at most :data:`MAX_WEIGHT`.

    Under a binding breaker the sessions at risk take the headroom before those that can wait, and share
    what is above their floors in proportion to the rates they need. A need that cannot be met even at its
    own rate (:func:`own_laxity` below 0) does not take it all ahead of one that can: that would hold the
    one that can at its floor until it cannot."""
    if not plan_at_risk(need, ruled_cap_kw):
        return weight
    return min(weight * URGENT_WEIGHT * need_kw(need), MAX_WEIGHT)
