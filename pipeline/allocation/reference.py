"""A plain-Python reference allocator: the oracle the SQL views are tested against.

It implements the rules of ``sql/`` (docs/architecture.md, "Allocation") directly over topic records,
without SQL: headroom per breaker, caps and floors, rules, DR, tariff shaping and stale telemetry,
bottom-up admission, and weighted max-min fair water-filling done as *event-driven progressive
filling* (every unfrozen session rises at the rate of its weight until it reaches its cap or a breaker
above it saturates) rather than the closed-form levels the SQL uses, so the two are independent
routes to the same numbers. Where a breaker on the tree has a per-phase current rating (``limit_a``),
the per-phase limits are not laminar with the kW ones, and the allocation is the SQL's level by level
rule (deepest breaker first; at each, its phase levels side by side, then its kW level): the reference
computes each level by iterative water-filling rather than the SQL's sorted running sums.

Phases (docs/architecture.md, "Allocation"): an EV draws on ``ev_phases`` of the charger's lines (its
L1, or L1 and L2, or all three), which load the grid phases the charger's ``phase_rotation`` wires them
to (OCPP 1.6 ConnectorPhaseRotation); its current on each is ``kW * 1000 / (ev_phases * V)``.

Thresholds mirror the SQL files: ``SESSION_STALE_S`` (session_telemetry.sql), ``BUILDING_STALE_S`` and
``STALE_MARGIN`` (site_building_load.sql, node_headroom.sql), ``TARIFF_MULTIPLIERS``
(tariff_multipliers.sql), and, in :mod:`pipeline.allocation.plans`, ``PLAN_AT_RISK_S`` (session_limits.sql). Fleet plans
(price_slots.sql, session_plan_targets.sql, session_plan_slots.sql, session_plan_needs.sql) are
:func:`~pipeline.allocation.plans.plan_needs`, re-exported here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline.allocation.plans import plan_at_risk, plan_cap, plan_needs, plan_weight
from pipeline.contracts.topics import (
    ACTIVE_SESSIONS,
    CONTROL_RULES,
    DR_SIGNALS,
    PRICE_SIGNALS,
    RULE_SOURCES,
    SESSION_PLANS,
    SETPOINT_ACKS,
    SITE_DEMAND,
    SITE_TOPOLOGY,
    TOPICS,
)

SESSION_STALE_S = 600
BUILDING_STALE_S = 1800
STALE_MARGIN = 0.1
MAX_DEPTH = 5
TARIFF_MULTIPLIERS = {"OFF_PEAK": 1.0, "MID_PEAK": 1.0, "ON_PEAK": 0.5, "CRITICAL_PEAK": 0.0}
EPS = 1e-9
OVERRIDE_PRIORITY = 2147483647
MAX_CURRENT_A = 4000.0
MIN_CURRENT_A = 6.0  # the lowest current an EV may be offered (IEC 61851-1)
GRID_PHASES = "RST"


@dataclass
class Session:
    rec: Any
    site_id: str
    attach: str
    cap_kw: float = 0.0
    floor_kw: float = 0.0
    reserve_kw: float = 0.0  # what it holds in admission from the sessions after it: its floor, or its cap
    # while its plan is at risk (_admit)
    priority: int = 0
    cap_binding: str = "cap"
    paused_by: str | None = None
    laxity_s: float | None = None
    weight: float = 1.0  # the fill's weight: the record's, times more while its plan is at risk (plan_weight)
    path: list[str] = field(default_factory=list)  # ancestors by depth, site first
    allocated_kw: float = 0.0
    binding: str = "paused"

    @property
    def ev_phases(self) -> int:
        return ev_phases(self.rec)

    @property
    def a_per_kw(self) -> float:
        """Current on each grid phase it loads for 1 kW (A)."""
        return 1000.0 / (self.ev_phases * self.rec.voltage_v)

    @property
    def loads(self) -> str:
        return loaded_phases(self.rec.phase_rotation, self.ev_phases)


@dataclass
class State:
    """The latest state of every input topic, as the engine's tables hold it."""

    topology: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    demand: list[Any] = field(default_factory=list)
    prices: list[Any] = field(default_factory=list)
    dr: list[Any] = field(default_factory=list)
    acks: list[Any] = field(default_factory=list)
    plans: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, str | None, Any]]) -> State:
        """The state after ``records``, ``(topic, message key, decoded record or None for a tombstone)`` in
        topic order. An upsert table row is keyed by the message key or, for a record that came without
        one, by its contract's key field (:data:`pipeline.contracts.topics.TOPICS`), as the engine keys it;
        a tombstone without a key deletes nothing."""
        s = cls()
        upserts = {
            SITE_TOPOLOGY: s.topology,
            ACTIVE_SESSIONS: s.sessions,
            CONTROL_RULES: s.rules,
            SESSION_PLANS: s.plans,
        }
        appends = {
            SITE_DEMAND: s.demand,
            PRICE_SIGNALS: s.prices,
            DR_SIGNALS: s.dr,
            SETPOINT_ACKS: s.acks,
        }
        for topic, key, rec in records:
            if topic in upserts:
                pk = key if key is not None or rec is None else str(getattr(rec, TOPICS[topic].key))
                if pk is None:
                    continue
                if rec is None:
                    upserts[topic].pop(pk, None)
                else:
                    upserts[topic][pk] = rec
            elif topic in appends and rec is not None:
                appends[topic].append(rec)
        return s


def _paths(topology: dict[str, Any]) -> dict[str, list[str]]:
    """node_id -> ancestors by depth (site first, the node last), for nodes at depth <= MAX_DEPTH."""
    out = {}
    for node_id, node in topology.items():
        chain = [node_id]
        parent = node.parent_id
        while parent is not None and len(chain) <= MAX_DEPTH + 1:
            chain.append(parent)
            parent = topology[parent].parent_id if parent in topology else None
        if len(chain) - 1 <= MAX_DEPTH:
            out[node_id] = list(reversed(chain))
    return out


def _active_dr(state: State, now: datetime) -> dict[str, tuple[float | None, float | None]]:
    latest: dict[tuple[str, str], Any] = {}
    for sig in state.dr:
        k = (sig.site_id, sig.dr_event_id)
        if k not in latest or sig.signal_at > latest[k].signal_at:
            latest[k] = sig
    out: dict[str, tuple[float | None, float | None]] = {}
    for (site, _), sig in latest.items():
        if sig.event_start <= now < sig.event_end:
            pct, lim = out.get(site, (None, None))
            if sig.curtailment_pct is not None:
                pct = sig.curtailment_pct if pct is None else max(pct, sig.curtailment_pct)
            if sig.limit_kw is not None:
                lim = sig.limit_kw if lim is None else min(lim, sig.limit_kw)
            out[site] = (pct, lim)
    return out


def _price_tiers(state: State, now: datetime) -> dict[str, str]:
    best: dict[str, Any] = {}
    for p in state.prices:
        if p.valid_from <= now < p.valid_to:
            cur = best.get(p.site_id)
            if cur is None or (p.valid_from, p.price_per_kwh) > (cur.valid_from, cur.price_per_kwh):
                best[p.site_id] = p
    return {site: p.price_tier.value for site, p in best.items()}


def _active_rules(state: State, now: datetime) -> list[Any]:
    return [
        r
        for r in state.rules.values()
        if (r.valid_from is None or r.valid_from <= now) and (r.valid_to is None or r.valid_to > now)
    ]


def ev_phases(rec) -> int:
    """The phases a session's EV draws on: its ``ev_phases``, else the charger's, never more than the
    charger's."""
    return min(rec.ev_phases or rec.phases, rec.phases)


def loaded_phases(rotation: str | None, n: int) -> str:
    """The grid phases (of ``"RST"``) an EV on ``n`` phases loads on a charger wired ``rotation``
    (``None``: ``"RST"``): the first ``n`` letters, the grid phases of the charger's L1 .. Ln."""
    rotation = rotation or "RST"
    if sorted(rotation) != sorted(GRID_PHASES):
        return GRID_PHASES  # an unknown wiring is counted on every phase
    return "".join(sorted(rotation[:n], key=GRID_PHASES.index))


def _amps(kw: float, n: int, voltage_v: float, loads: str) -> dict[str, float]:
    """The current ``kw`` draws on each grid phase (A), ``kw * 1000 / (n * V)`` on the phases it loads."""
    return {p: kw * 1000.0 / (n * voltage_v) if p in loads else 0.0 for p in GRID_PHASES}


def _default_floor(rec) -> float:
    """``min_power_kw``, else 6 A (IEC 61851-1) on each of the EV's phases: ``6 * ev_phases * V / 1000``."""
    if rec.min_power_kw is not None:
        return rec.min_power_kw
    return MIN_CURRENT_A * ev_phases(rec) * rec.voltage_v / 1000.0


def device_cap(rec) -> float:
    """The smallest of the EVSE rating, the EV's acceptance, what it has shown it takes and, for an EV on
    fewer phases than the charger, the charger's per-phase rating on its phases (nulls ignored), kW."""
    return min(
        rec.rated_power_kw,
        rec.ev_max_power_kw or rec.rated_power_kw,
        rec.learned_cap_kw if rec.learned_cap_kw is not None else rec.rated_power_kw,
        rec.rated_power_kw * ev_phases(rec) / rec.phases,
    )


def allocate(records: Iterable[tuple[str, str | None, Any]], now: datetime) -> dict[str, dict]:
    """The setpoints the views should produce: ``session_id -> {setpoint_kw, setpoint_a, phases, binding,
    node_id, node_limit_kw, site_limit_kw, floor_kw, cap_kw, admitted, path, a_per_kw, loads}``
    (``floor_kw`` onwards only for balanced sessions), plus ``"__headroom__" -> {node_id: headroom_kw}``
    and ``"__headroom_a__" -> {node_id: {"R"|"S"|"T": A}}`` for the nodes with a per-phase rating, and
    ``"__typical__" -> {site_id: kW}``, the headroom the building's mean load of the last 24 hours leaves
    (for :func:`~pipeline.allocation.plans.plan_needs`; sites with readings in that day only)."""
    state = State.from_records(records)
    topo, paths = state.topology, _paths(state.topology)
    rules = _active_rules(state, now)
    stale_before = now - timedelta(seconds=SESSION_STALE_S)

    # Placement and freshness (session_telemetry.sql).
    placed: list[tuple[Any, str, str, bool, bool]] = []
    for rec in state.sessions.values():
        c = topo.get(rec.charge_point_id)
        n = topo.get(rec.node_id) if rec.node_id else None
        t = topo.get(rec.site_id) if rec.site_id else None
        c = c if c is not None and c.kind == "charger" else None
        n = n if n is not None and n.kind != "charger" else None
        t = t if t is not None and t.kind == "site" else None
        home = c or n or t
        if home is None:
            continue
        seen = rec.sampled_at or rec.started_at
        placed.append((rec, home.site_id, home.node_id, c.managed if c else True, seen <= stale_before))

    last_accepted: dict[str, Any] = {}
    for ack in state.acks:
        if (
            ack.status == "Accepted"
            and ack.action == "SetChargingProfile"
            and ack.session_id
            and (ack.purpose or "Tx") == "Tx"
        ):
            cur = last_accepted.get(ack.session_id)
            if cur is None or (ack.answered_at or ack.sent_at) > (cur.answered_at or cur.sent_at):
                last_accepted[ack.session_id] = ack

    # Fixed load per breaker (node_fixed_load.sql).
    fixed: dict[str, float] = defaultdict(float)
    fixed_a: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(GRID_PHASES, 0.0))
    busy_chargers = {rec.charge_point_id for rec, *_ in placed}
    items: list[tuple[str, float, dict[str, float]]] = []
    for rec, _, attach, managed, stale in placed:
        if not managed:
            load = rec.rated_power_kw if stale or rec.current_power_kw is None else rec.current_power_kw
        elif stale:
            ack = last_accepted.get(rec.session_id)
            load = ack.setpoint_kw if ack and ack.setpoint_kw is not None else rec.rated_power_kw
        else:
            continue
        n = ev_phases(rec)
        items.append((attach, load, _amps(load, n, rec.voltage_v, loaded_phases(rec.phase_rotation, n))))
    reserved: dict[str, float] = {}
    for r in rules:
        if r.action == "reserve" and r.scope_id not in busy_chargers:
            reserved[r.scope_id] = max(reserved.get(r.scope_id, 0.0), r.limit_kw)
    for cid, load in reserved.items():
        c = topo.get(cid)
        c = c if c is not None and c.kind == "charger" else None
        n, volts, rotation = (c.phases, c.voltage_v, c.phase_rotation) if c else (3, 230.0, None)
        items.append((cid, load, _amps(load, n, volts, loaded_phases(rotation, n))))
    for node_id, load, amps in items:
        for anc in paths.get(node_id, []):
            fixed[anc] += load
            for p, a in amps.items():
                fixed_a[anc][p] += a

    # Headroom per breaker (site_building_load.sql, node_headroom.sql).
    latest_demand: dict[str, Any] = {}
    day_ago = now - timedelta(hours=24)
    recent: dict[str, list[float]] = defaultdict(list)  # the building's readings of the last 24 hours
    for d in state.demand:
        if d.site_id not in latest_demand or d.measured_at > latest_demand[d.site_id].measured_at:
            latest_demand[d.site_id] = d
        if d.measured_at > day_ago:  # site_building_mean.sql
            recent[d.site_id].append(max(d.current_demand_kw - d.ev_load_kw, 0.0))
    dr = _active_dr(state, now)
    node_caps: dict[str, tuple[float, int, str]] = {}
    for r in rules:
        if r.action == "cap" and r.scope in ("site", "node"):
            key = (r.limit_kw, -RULE_SOURCES[r.source], r.rule_id)
            if r.scope_id not in node_caps or key < node_caps[r.scope_id]:
                node_caps[r.scope_id] = key
    headroom: dict[str, float] = {}
    typical: dict[str, float] = {}  # what the site's mean building load leaves (session_plan_needs.sql)
    headroom_a: dict[str, dict[str, float]] = {}
    limited_by: dict[str, str] = {}
    for node_id in paths:
        node = topo[node_id]
        base, building = node.limit_kw, 0.0
        dr_kw = base
        if node.kind == "site":
            d = latest_demand.get(node_id)
            if d is not None:
                if d.demand_limit_kw is not None:
                    base = min(base, d.demand_limit_kw)
                building = max(d.current_demand_kw - d.ev_load_kw, 0.0)
                if d.measured_at <= now - timedelta(seconds=BUILDING_STALE_S):
                    building += STALE_MARGIN * node.limit_kw
            pct, lim = dr.get(node_id, (None, None))
            dr_kw = min(base * (1 - (pct or 0) / 100.0), lim if lim is not None else base)
        else:
            dr_kw = base
        limit, label = dr_kw, ("dr" if dr_kw < base else node_id)
        if node_id in node_caps and node_caps[node_id][0] <= dr_kw:
            limit, label = node_caps[node_id][0], node_caps[node_id][2]
        headroom[node_id] = max(limit - building - fixed[node_id], 0.0)
        if node.kind == "site" and recent.get(node_id):
            mean = sum(recent[node_id]) / len(recent[node_id])
            typical[node_id] = min(max(limit - mean - fixed[node_id], 0.0), 100000.0)
        limited_by[node_id] = label
        if node.limit_a is not None:
            # the building load is not metered per phase: taken as balanced over the three
            rating_a = node.limit_a if 0 < node.limit_a <= MAX_CURRENT_A else 0.0
            per_phase = {
                p: rating_a - building * 1000.0 / (3 * node.voltage_v) - fixed_a[node_id][p] for p in GRID_PHASES
            }
            headroom_a[node_id] = {p: a if 0 < a <= MAX_CURRENT_A else 0.0 for p, a in per_phase.items()}

    tiers = _price_tiers(state, now)
    needs = plan_needs(state, [(rec, site_id) for rec, site_id, *_ in placed], now, headroom, device_cap, typical)
    out: dict[str, dict] = {}

    # Caps, floors and rules of balanced sessions (session_limits.sql).
    sessions: list[Session] = []
    for rec, site_id, attach, managed, stale in placed:
        if not managed:
            continue
        path = paths.get(attach)
        if path is None or topo[path[0]].kind != "site":
            continue
        node_of = topo[attach].parent_id if topo[attach].kind == "charger" else attach
        if stale:
            ack = last_accepted.get(rec.session_id)
            kw = (
                ack.setpoint_kw if ack and ack.setpoint_kw is not None else min(_default_floor(rec), rec.rated_power_kw)
            )
            out[rec.session_id] = _setpoint(kw, rec, "stale", node_of, site_id, headroom)
            continue
        s = Session(rec=rec, site_id=site_id, attach=attach, path=path, weight=rec.weight)
        mine = [(r, 2) for r in rules if r.scope == "session" and r.scope_id == rec.session_id]
        mine += [(r, 1) for r in rules if r.scope == "charger" and r.scope_id == rec.charge_point_id]
        mine += [(r, 0) for r in rules if r.scope in ("site", "node") and r.scope_id in path and r.action == "pause"]
        overrides = sorted(
            (r for r in mine if r[0].action == "override"),
            key=lambda x: (-RULE_SOURCES[x[0].source], -x[1], x[0].rule_id),
        )
        override = overrides[0][0] if overrides else None
        floor_prec = RULE_SOURCES[override.source] if override else 0
        applicable = [r for r, _ in mine if r.action in ("cap", "pause") and RULE_SOURCES[r.source] >= floor_prec]
        caps = sorted(
            (r for r in applicable if r.action == "cap"), key=lambda r: (r.limit_kw, -RULE_SOURCES[r.source], r.rule_id)
        )
        pauses = sorted(
            (r for r in applicable if r.action == "pause"), key=lambda r: (-RULE_SOURCES[r.source], r.rule_id)
        )
        device = device_cap(rec)
        ruled = min(device, caps[0].limit_kw) if caps else device
        min_kw = _default_floor(rec)
        s.paused_by = pauses[0].rule_id if pauses else None
        need = needs.get(rec.session_id)
        planned_kw = 0.0
        if need is not None:
            planned_kw, s.laxity_s = plan_cap(need, ruled)
        if override is not None:
            s.cap_kw = s.floor_kw = min(override.limit_kw, ruled)
            s.priority = OVERRIDE_PRIORITY
        elif need is not None:
            s.cap_kw = planned_kw
            s.weight = plan_weight(need, ruled, rec.weight)
            s.floor_kw = min(min_kw, s.cap_kw)
            s.priority = rec.priority
        else:
            mult = TARIFF_MULTIPLIERS.get(tiers.get(site_id, ""), 1.0) if rec.flexible else 1.0
            s.cap_kw = max(min(min_kw, ruled), ruled * mult)
            s.floor_kw = min(min_kw, s.cap_kw)
            s.priority = rec.priority
        at_risk = override is None and need is not None and plan_at_risk(need, ruled)
        s.reserve_kw = s.cap_kw if at_risk else s.floor_kw
        if override is not None and override.limit_kw <= ruled:
            s.cap_binding = override.rule_id
        elif s.cap_kw < ruled:
            s.cap_binding = "plan" if need is not None else "tariff"
        elif caps and caps[0].limit_kw <= device:
            s.cap_binding = caps[0].rule_id
        sessions.append(s)

    admitted = _admit(sessions, headroom, headroom_a)
    if any(n in headroom_a for s in admitted for n in s.path):
        _fill_levels(admitted, headroom, headroom_a, limited_by)
    else:
        _fill(admitted, headroom, limited_by)
    for s in sessions:
        node_of = topo[s.attach].parent_id if topo[s.attach].kind == "charger" else s.attach
        binding = s.binding if s in admitted else (s.paused_by or "paused")
        kw = s.allocated_kw if s in admitted else 0.0
        out[s.rec.session_id] = _setpoint(kw, s.rec, binding, node_of, s.site_id, headroom) | {
            "floor_kw": s.floor_kw,
            "cap_kw": s.cap_kw,
            "admitted": s in admitted,
            "path": s.path,
            "laxity_s": s.laxity_s,
            "a_per_kw": s.a_per_kw,
            "loads": s.loads,
        }
    out["__headroom__"] = headroom
    out["__headroom_a__"] = headroom_a
    out["__typical__"] = typical
    return out


def _setpoint(kw: float, rec, binding: str, node_id: str | None, site_id: str, headroom: dict[str, float]) -> dict:
    return {
        "setpoint_kw": math.floor(kw * 1000 + 1e-6) / 1000.0,
        "setpoint_a": math.floor(kw * 10000 / (ev_phases(rec) * rec.voltage_v) + 1e-6) / 10.0,
        "phases": ev_phases(rec),
        "binding": binding,
        "node_id": node_id,
        "node_limit_kw": headroom.get(node_id) if node_id else None,
        "site_limit_kw": headroom.get(site_id),
    }


def _admit(
    sessions: list[Session], headroom: dict[str, float], headroom_a: dict[str, dict[str, float]]
) -> list[Session]:
    """Bottom-up admission: at each depth, within each breaker, in priority, urgency (least laxity first,
    unplanned last), then arrival order, a session is admitted while its floor fits (in kW, and on a
    breaker with a per-phase rating in A on each grid phase the session loads) beside what the sessions
    before it hold: their floors, and in kW, for a session whose plan is not at risk, the caps of those
    before it whose plan is (``reserve_kw``: a session that cannot wait takes the headroom up to its cap
    before one that can is given a floor; among sessions at risk, floors, so none is paused for
    another's cap). Then a second round, in the same order, over what those leave (their reserves),
    among the sessions left out whose own floor fits in it. A session must be admitted at every breaker
    on its path."""
    ok = {id(s): s.paused_by is None for s in sessions}
    order = sorted(
        sessions,
        key=lambda s: (-s.priority, s.laxity_s is None, s.laxity_s or 0.0, s.rec.started_at, s.rec.session_id),
    )

    def fits(node: str, s: Session, kw: float, amps: dict[tuple[str, str], float]) -> bool:
        """Whether ``s``'s floor, added to ``kw`` held before it and the currents counted in ``amps``, fits
        at ``node``."""
        if kw + s.floor_kw > headroom[node] + EPS:
            return False
        return node not in headroom_a or all(
            amps[node, p] + s.floor_kw * s.a_per_kw <= headroom_a[node][p] + EPS for p in s.loads
        )

    for depth in range(MAX_DEPTH, -1, -1):
        at = [s for s in order if len(s.path) > depth]
        first: dict[int, bool] = {}
        floors: dict[str, float] = defaultdict(float)
        reserves: dict[str, float] = defaultdict(float)
        running_a: dict[tuple[str, str], float] = defaultdict(float)
        for s in at:  # the first round: a running sum over every session admitted below, in order
            node = s.path[depth]
            before = floors[node] if s.reserve_kw > s.floor_kw else reserves[node]
            first[id(s)] = ok[id(s)] and fits(node, s, before, running_a)
            if ok[id(s)]:
                floors[node] += s.floor_kw
                reserves[node] += s.reserve_kw
                for p in s.loads:
                    running_a[node, p] += s.floor_kw * s.a_per_kw
        held: dict[str, float] = defaultdict(float)
        held_a: dict[tuple[str, str], float] = defaultdict(float)
        for s in at:
            if first[id(s)]:
                held[s.path[depth]] += s.reserve_kw
                for p in s.loads:
                    held_a[s.path[depth], p] += s.floor_kw * s.a_per_kw
        second = {
            id(s): ok[id(s)] and not first[id(s)] and fits(s.path[depth], s, held[s.path[depth]], held_a) for s in at
        }
        more: dict[str, float] = defaultdict(float)
        more_a: dict[tuple[str, str], float] = defaultdict(float)
        for s in at:  # the second round: a running sum over those whose own floor fits in what is left
            node = s.path[depth]
            if second[id(s)]:
                more[node] += s.reserve_kw
                for p in s.loads:
                    more_a[node, p] += s.floor_kw * s.a_per_kw
            total = held[node] + more[node] - s.reserve_kw
            total_a = {(node, p): held_a[node, p] + more_a[node, p] - s.floor_kw * s.a_per_kw for p in GRID_PHASES}
            ok[id(s)] = first[id(s)] or (second[id(s)] and fits(node, s, total, total_a))
    return [s for s in sessions if ok[id(s)]]


def _water_level(members: list[tuple[float, float, float]], spare: float) -> float | None:
    """The level ``lam`` at which ``sum(k * min(extra, w * lam))`` over ``members`` ``(k, w, extra)``
    reaches ``spare``, or ``None`` when every member fits at its extra. Iterative: share what is left
    among the unsaturated members by ``k * w``, set aside the members it saturates, repeat."""
    if sum(k * e for k, _, e in members) <= spare + EPS:
        return None
    active, used = list(members), 0.0
    while active:
        lam = (spare - used) / sum(k * w for k, w, _ in active)
        done = [m for m in active if m[2] <= m[1] * lam]
        if not done:
            return lam
        used += sum(k * e for k, _, e in done)
        active = [m for m in active if m[2] > m[1] * lam]
    return None


def _fill_levels(
    admitted: list[Session],
    headroom: dict[str, float],
    headroom_a: dict[str, dict[str, float]],
    limited_by: dict[str, str],
) -> None:
    """Water-filling breaker by breaker where per-phase limits make the constraints non-laminar, as the
    SQL does: from the deepest breakers up, each breaker fills the extras ``min(cap - floor, weight * lam)``
    the breakers below it left, in passes until no session can rise (the SQL runs three, which this
    shows enough). A pass takes every limit of the breaker side by side over the sessions not yet frozen
    (each grid phase a water level over the sessions loading it, their kW counted at ``a_per_kw`` A, the
    kW limit one over all; both in kW per weight), after what the frozen sessions hold; a session rises
    to the lowest of its limits' levels, and is frozen once it reaches its extra or a limit it is on
    is full. A session ends at ``floor + min(cap - floor, weight * lam)``, ``lam`` the lowest level on its
    way. Safe: each level holds its limit for the sessions it saw, the frozen ones at what they hold."""
    lam: dict[int, float | None] = {id(s): None for s in admitted}
    bind = {id(s): s.cap_binding for s in admitted}

    def extra(s: Session) -> float:
        e, cur = s.cap_kw - s.floor_kw, lam[id(s)]
        return e if cur is None else min(e, s.weight * cur)

    for depth in range(MAX_DEPTH, -1, -1):
        under: dict[str, list[Session]] = defaultdict(list)
        for s in admitted:
            if len(s.path) > depth:
                under[s.path[depth]].append(s)
        for node, group in under.items():
            room = {id(s): extra(s) for s in group}
            # each limit: (label, its spare after the floors, the sessions on it, a session's load per kW)
            limits: list[tuple[str, float, list[Session], Any]] = []
            if node in headroom_a:
                for p in GRID_PHASES:
                    on = [s for s in group if p in s.loads]
                    spare = headroom_a[node][p] - sum(s.a_per_kw * s.floor_kw for s in on)
                    limits.append((node, spare, on, lambda s: s.a_per_kw))
            limits.append((limited_by[node], headroom[node] - sum(s.floor_kw for s in group), group, lambda s: 1.0))
            grant = dict(room)
            level: dict[int, tuple[float | None, str]] = {id(s): (None, "") for s in group}
            frozen: set[int] = set()
            while len(frozen) < len(group):
                per_kw: dict[int, list[tuple[float, str]]] = defaultdict(list)
                for label, spare, on, load in limits:
                    live = [s for s in on if id(s) not in frozen]
                    held = sum(load(s) * grant[id(s)] for s in on if id(s) in frozen)
                    lvl = _water_level([(load(s), s.weight, room[id(s)]) for s in live], spare - held)
                    if lvl is not None:
                        for s in live:
                            per_kw[id(s)].append((lvl, label))
                for s in group:
                    if id(s) in frozen:
                        continue
                    lowest = min(per_kw[id(s)], key=lambda v: v[0], default=None)
                    grant[id(s)] = room[id(s)] if lowest is None else min(room[id(s)], s.weight * lowest[0])
                    level[id(s)] = lowest if lowest is not None else (None, "")
                full = {
                    id(s)
                    for _, spare, on, load in limits
                    if sum(load(m) * grant[id(m)] for m in on) >= spare - 1e-6
                    for s in on
                }
                now = full | {id(s) for s in group if grant[id(s)] >= room[id(s)] - 1e-6}
                if now <= frozen:
                    break
                frozen |= now
            for s in group:
                cur, (mine, label) = lam[id(s)], level[id(s)]
                if mine is not None and (cur is None or mine < cur):
                    lam[id(s)], bind[id(s)] = mine, label
    for s in admitted:
        e, cur = s.cap_kw - s.floor_kw, lam[id(s)]
        s.allocated_kw = s.floor_kw + (e if cur is None else min(e, s.weight * cur))
        s.binding = s.cap_binding if cur is None or s.weight * cur >= e - EPS else bind[id(s)]


def _fill(admitted: list[Session], headroom: dict[str, float], limited_by: dict[str, str]) -> None:
    """Progressive filling: raise every unfrozen session at the rate of its weight; freeze a session at
    its cap, and every session under a breaker when that breaker's spare headroom is used up."""
    spare: dict[str, float] = defaultdict(float)
    for node, h in headroom.items():
        spare[node] = h
    for s in admitted:
        s.allocated_kw = s.floor_kw
        for node in s.path:
            spare[node] -= s.floor_kw
    active = {id(s): s for s in admitted}
    for s in admitted:
        s.binding = s.cap_binding
        if s.cap_kw - s.floor_kw <= EPS:
            del active[id(s)]
    while active:
        rate: dict[str, float] = defaultdict(float)
        for s in active.values():
            for node in s.path:
                rate[node] += s.weight
        step = math.inf
        for s in active.values():
            step = min(step, (s.cap_kw - s.allocated_kw) / s.weight)
        for node, r in rate.items():
            step = min(step, max(spare[node], 0.0) / r)
        for s in active.values():
            s.allocated_kw += s.weight * step
            for node in s.path:
                spare[node] -= s.weight * step
        saturated = [n for n in rate if spare[n] <= EPS * max(1.0, headroom[n])]
        for key, s in list(active.items()):
            full = [n for n in s.path if n in saturated]
            if s.cap_kw - s.allocated_kw <= EPS * max(1.0, s.cap_kw):
                s.allocated_kw = s.cap_kw
                del active[key]
            elif full:
                s.binding = limited_by[full[-1]]
                del active[key]
