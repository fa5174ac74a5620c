"""Fleet plans on random breaker trees: the SQL views against the reference allocator.

The trees of ``test_allocation_properties`` get plans from every source (the EV's own departure and
need, session and charger plans on ``session.plans``, the site file's defaults on ``site.topology``), a
day-ahead price curve with gaps and ties, delivered energy and SoC. The embedded engine's setpoints must
equal the reference allocator's, the invariants of docs/architecture.md ("Allocation") must hold, and the
planning rules (docs/architecture.md, "Plans") too: a planned session is at 0 or charges at its cap's
share, and when floors do not all fit, no admitted session under a breaker is less urgent than a paused
one of the same priority.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.allocation import reference
from pipeline.contracts.topics import PriceSignal, SessionPlan, SiteDemand, plan_key
from tests.pipeline.allocation.test_allocation_properties import (
    NOW,
    TOL,
    check_invariants,
    engine,  # noqa: F401 (the module fixture)
    run_engine,
    sites,
)

SLOT = timedelta(minutes=30)


@st.composite
def planned_sites(draw, max_sessions: int = 60):
    records = [r for r in draw(sites(max_sessions=max_sessions)) if r[0] != "tariff.price.signals"]
    out = []
    for topic, key, rec in records:
        if topic == "site.topology" and rec.kind in ("site", "charger") and draw(st.booleans()):
            rec = rec.model_copy(
                update={
                    "default_departure_min": draw(st.one_of(st.none(), st.integers(0, 1439))),
                    "default_energy_kwh": draw(st.one_of(st.none(), st.floats(0, 80))),
                }
            )
        if topic == "ocpp.active.sessions":
            update: dict = {
                "energy_kwh": draw(st.one_of(st.none(), st.floats(0, 40))),
                "soc_pct": draw(st.one_of(st.none(), st.floats(0, 100))),
            }
            if draw(st.booleans()):
                update["departure_at"] = NOW + timedelta(minutes=draw(st.integers(-30, 600)))
            if draw(st.booleans()):
                update["energy_needed_kwh"] = draw(st.floats(0, 80))
            rec = rec.model_copy(update=update)
            for scope in ("session", "charger"):
                if draw(st.integers(0, 3)) == 0:
                    ids = (rec.session_id, None) if scope == "session" else (None, rec.charge_point_id)
                    soc = draw(st.booleans())
                    plan = SessionPlan(
                        plan_id=plan_key(*ids),
                        session_id=ids[0],
                        charge_point_id=ids[1],
                        departure_at=NOW + timedelta(minutes=draw(st.integers(-600, 900))),
                        energy_needed_kwh=None if soc else draw(st.floats(0, 80)),
                        target_soc_pct=draw(st.floats(0, 100)) if soc else None,
                        # an energy plan may give the battery too (the taper is then timed)
                        battery_kwh=draw(st.floats(10, 100)) if soc or draw(st.booleans()) else None,
                        updated_at=NOW - timedelta(hours=12),
                    )
                    out.append(("session.plans", plan.plan_id, plan))
        out.append((topic, key, rec))
    # Older site meter readings, some more than a day old: the building's mean over the last 24 hours sets the
    # headroom a plan leaving in hours or days counts on (site_building_mean.sql).
    for _ in range(draw(st.integers(0, 3))):
        building, ev = draw(st.floats(0, 200)), draw(st.floats(0, 100))
        reading = SiteDemand(
            site_id="S",
            current_demand_kw=building + ev,
            ev_load_kw=ev,
            measured_at=NOW - timedelta(minutes=draw(st.integers(60, 1800))),
        )
        out.append(("bems.site.demand", "S", reading))
    # A day-ahead curve in 30-minute slots around now: prices with ties, and gaps where nothing is published.
    first = NOW - timedelta(minutes=draw(st.sampled_from([10, 40])))
    for i in range(draw(st.integers(0, 24))):
        if draw(st.integers(0, 5)) == 0:
            continue
        start = first + i * SLOT
        out.append(
            (
                "tariff.price.signals",
                "S",
                PriceSignal(
                    site_id="S",
                    price_per_kwh=draw(st.sampled_from([0.05, 0.1, 0.1, 0.2, 0.3, -0.01])),
                    price_tier=draw(st.sampled_from(["OFF_PEAK", "ON_PEAK"])),
                    valid_from=start,
                    valid_to=start + SLOT * draw(st.sampled_from([1, 1, 2])),
                ),
            )
        )
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=planned_sites())
def test_plans_match_the_reference_and_hold_every_breaker(engine, records):  # noqa: F811
    got = run_engine(engine, records)
    expected = reference.allocate(records, NOW)
    assert set(got) == set(expected) - {"__headroom__", "__headroom_a__", "__typical__"}
    for sid, rec in got.items():
        assert rec["setpoint_kw"] == pytest.approx(expected[sid]["setpoint_kw"], abs=TOL), sid
        for kind in ("plan", "paused", "stale"):
            assert (rec["binding"] == kind) == (expected[sid]["binding"] == kind), sid
    check_invariants(expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=planned_sites(max_sessions=40))
def test_the_slots_and_needs_views_match_the_reference(engine, records):  # noqa: F811
    run_engine(engine, records)
    _, rows = engine.query(
        "SELECT session_id, remaining_kwh, left_s, cheaper_s, price_now, share_kw, urgent FROM session_plan_needs"
    )
    state = reference.State.from_records(records)
    placed = [(rec, "S") for rec in state.sessions.values() if rec.charge_point_id in state.topology]
    expected = reference.allocate(records, NOW)
    needs = reference.plan_needs(
        state, placed, NOW, expected["__headroom__"], reference.device_cap, expected["__typical__"]
    )
    assert {r[0] for r in rows} == set(needs)
    for sid, remaining, left_s, cheaper_s, price_now, share_kw, urgent in rows:
        need = needs[sid]
        assert remaining == pytest.approx(need.remaining_kwh, abs=1e-6), sid
        assert left_s == pytest.approx(need.left_s, abs=1e-3), sid
        assert cheaper_s == pytest.approx(need.cheaper_s, abs=1e-3), sid
        assert price_now == need.price_now, sid
        assert (share_kw is None) == (need.share_kw is None), sid
        if share_kw is not None:
            assert share_kw == pytest.approx(need.share_kw, abs=1e-6), sid
        assert urgent == need.urgent, sid
