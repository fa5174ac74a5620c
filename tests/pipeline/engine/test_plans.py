"""Fleet plans on hand-made cases through the embedded engine (docs/architecture.md, "Plans").

Each case is also run through the reference allocator (pipeline/allocation/reference.py), which must agree.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.allocation import reference
from pipeline.allocation.plans import taper_factor
from pipeline.contracts.topics import TOPICS, SessionPlan, plan_key
from pipeline.engine.embedded import EmbeddedEngine

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture(scope="module")
def engine():
    e = EmbeddedEngine()
    yield e
    e.close()


def rec(topic: str, **fields):
    return TOPICS[topic].model.model_validate(fields)


def site(limit_kw: float = 100.0, **defaults):
    return rec("site.topology", node_id="s1", site_id="s1", kind="site", limit_kw=limit_kw, **defaults)


def charger(cid: str, rating: float = 22.0, **defaults):
    return rec("site.topology", node_id=cid, site_id="s1", parent_id="s1", kind="charger", limit_kw=rating, **defaults)


def session(sid: str, cp: str, *, started: datetime = NOW - H, **fields):
    base = dict(
        session_id=sid,
        charge_point_id=cp,
        connector_id=1,
        transaction_id=sid,
        site_id="s1",
        rated_power_kw=22.0,
        started_at=started,
        sampled_at=NOW - timedelta(seconds=30),
        ev_rate_kw=22.0,  # the EV has shown it takes the charger's rating
    )
    return rec("ocpp.active.sessions", **(base | fields))


def plan(*, session_id=None, charge_point_id=None, depart: datetime, kwh=None, soc=None, battery=None, at=NOW - 2 * H):
    return SessionPlan(
        plan_id=plan_key(session_id, charge_point_id),
        session_id=session_id,
        charge_point_id=charge_point_id,
        departure_at=depart,
        energy_needed_kwh=kwh,
        target_soc_pct=soc,
        battery_kwh=battery,
        updated_at=at,
    )


def prices(*hourly: float, first: datetime = NOW):
    """One price per hour from ``first``."""
    return [
        rec(
            "tariff.price.signals",
            site_id="s1",
            price_per_kwh=p,
            price_tier="OFF_PEAK" if p < 0.2 else "ON_PEAK",
            valid_from=first + i * H,
            valid_to=first + (i + 1) * H,
        )
        for i, p in enumerate(hourly)
    ]


def records(*items):
    out = []
    for item in items:
        for r in item if isinstance(item, list) else [item]:
            topic = next(t for t, spec in TOPICS.items() if isinstance(r, spec.model))
            out.append((topic, str(getattr(r, TOPICS[topic].key)), r))
    return out


def run(engine, recs, now: datetime = NOW) -> dict[str, dict]:
    """Setpoints by session from the engine, checked against the reference allocator."""
    import json

    engine.reset()
    engine.apply(recs)
    got = {c.key: json.loads(c.value) for c in engine.evaluate(now) if c.value and c.topic == "ocpp.setpoint.commands"}
    expected = reference.allocate(recs, now)
    for sid, r in got.items():
        assert r["setpoint_kw"] == pytest.approx(expected[sid]["setpoint_kw"], abs=0.01), sid
        assert r["binding"] == expected[sid]["binding"], sid
    return got


def targets(engine) -> dict[str, dict]:
    cols, rows = engine.query("SELECT * FROM session_plan_targets")
    return {r[0]: dict(zip(cols, r, strict=True)) for r in rows}


def test_a_plan_charges_in_the_cheapest_slots_that_still_meet_it(engine):
    # 0.30 now, then 0.10 and 0.12: two cheap hours at 22 kW hold 44 kWh.
    curve = prices(0.30, 0.10, 0.12, 0.40)
    depart = NOW + 4 * H
    waits = session("a", "CP1", departure_at=depart, energy_needed_kwh=30, energy_kwh=5)  # 25 kWh left: waits
    now_too = session("b", "CP2", departure_at=depart, energy_needed_kwh=60)  # 60 > 44: charges now
    free = session("c", "CP3")  # no plan: as before
    out = run(engine, records(site(), charger("CP1"), charger("CP2"), charger("CP3"), waits, now_too, free, curve))
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (0.0, "plan")
    assert (out["b"]["setpoint_kw"], out["b"]["binding"]) == (22.0, "cap")
    assert (out["c"]["setpoint_kw"], out["c"]["binding"]) == (22.0, "cap")
    # in the cheap hour, a charges
    later = run(
        engine, records(site(), charger("CP1"), waits.model_copy(update={"sampled_at": NOW + H}), curve), NOW + H
    )
    assert later["a"]["setpoint_kw"] == 22.0


def test_a_need_that_ends_where_the_battery_tapers_starts_before_the_cheap_hour_that_would_hold_it_flat(engine):
    # 16 kWh by 2 h from now; 0.30 now, then a 0.10 hour that holds 22 kWh at a flat 22 kW: it waits for it.
    # But the EV reports 70 % of a 50 kWh battery: the need ends at 100 %, where its acceptance has tapered
    # to 15 % (CC-CV above 80 %), so those 16 kWh take 1.82 times as long as at the rate it takes now.
    curve = prices(0.30, 0.10, 0.40)
    depart = NOW + 2 * H
    a = session("a", "CP1", energy_kwh=4, soc_pct=70)
    blind = plan(session_id="a", depart=depart, kwh=20)
    knows = plan(session_id="a", depart=depart, kwh=20, battery=50)
    out = run(engine, records(site(), charger("CP1"), a, blind, curve))
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (0.0, "plan")
    assert targets(engine)["a"]["taper_factor"] == 1.0
    out = run(engine, records(site(), charger("CP1"), a, knows, curve))
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (22.0, "cap")
    factor = targets(engine)["a"]["taper_factor"]
    assert (
        factor
        == pytest.approx(taper_factor(70.0, 16.0, 50.0))
        == pytest.approx((10 + math.log(1 / 0.15) / 0.0425) / 30)
    )


def test_a_need_at_risk_charges_at_full_speed_whatever_the_price(engine):
    curve = prices(0.40, 0.05)
    # 22 kWh in 75 minutes at 22 kW: laxity 15 minutes (900 s), at risk; the cheap hour would hold it.
    a = session("a", "CP1", departure_at=NOW + timedelta(minutes=75) + timedelta(seconds=-30), energy_needed_kwh=22)
    out = run(engine, records(site(), charger("CP1"), a, curve))
    assert out["a"]["setpoint_kw"] == 22.0


def test_a_plan_counts_on_its_share_of_the_breaker_not_on_its_full_cap(engine):
    # Four sessions with the same need behind 44 kW: in the two cheap hours each gets 11 kW, not its 22 kW
    # cap, so 22 kWh there cannot hold the 25 kWh each needs: they charge now (at 22 kW each they would wait).
    curve = prices(0.30, 0.10, 0.12, 0.40)
    evs = [session(sid, f"CP{i}", departure_at=NOW + 4 * H, energy_needed_kwh=25) for i, sid in enumerate("abcd")]
    out = run(engine, records(site(44.0), *(charger(f"CP{i}") for i in range(4)), *evs, curve))
    for sid in "abcd":
        assert out[sid]["setpoint_kw"] == pytest.approx(11.0), sid
        assert out[sid]["binding"] != "plan", sid
    _, rows = engine.query("SELECT session_id, share_kw FROM session_plan_needs")
    assert {sid: kw for sid, kw in rows} == {sid: pytest.approx(11.0) for sid in "abcd"}


def test_a_plan_leaving_in_days_counts_on_what_the_building_leaves_over_a_day_not_at_its_peak(engine):
    # 44 kW; the building draws 39 kW now, its peak: 5 kW left. Its readings of the last day average 19.7 kW.
    # An EV leaving in two days needs 20 kWh: on the 5 kW of the moment the two cheap hours ahead hold 10 kWh,
    # so it would charge now; on what the day's mean leaves (24.3 kW) they hold it, so it waits for them.
    curve = prices(0.30, 0.10, 0.12, 0.40)
    a = session("a", "CP1", departure_at=NOW + 48 * H, energy_needed_kwh=20)

    def reading(building_kw: float, ago: timedelta):
        return rec(
            "bems.site.demand", site_id="s1", current_demand_kw=building_kw, ev_load_kw=0.0, measured_at=NOW - ago
        )

    peak = reading(39.0, timedelta(seconds=30))
    earlier = [reading(10.0, 20 * H), reading(10.0, 12 * H), reading(40.0, 26 * H)]  # the last is over a day old
    out = run(engine, records(site(44.0), charger("CP1"), a, peak, curve))
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (5.0, "s1")
    out = run(engine, records(site(44.0), charger("CP1"), a, peak, *earlier, curve))
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (0.0, "plan")
    _, rows = engine.query("SELECT building_mean_kw, readings FROM site_building_mean")
    assert rows == [(pytest.approx(59.0 / 3), 3)]
    # leaving in two hours instead, it counts on the headroom of the moment, nearly: it charges now
    soon = a.model_copy(update={"departure_at": NOW + 2 * H, "energy_needed_kwh": 10})
    out = run(engine, records(site(44.0), charger("CP1"), soon, peak, *earlier, curve))
    assert out["a"]["setpoint_kw"] == 5.0


def test_a_plan_counts_on_what_the_breaker_leaves_it_once_those_leaving_first_are_served(engine):
    """Earliest deadline first: on 22 kW, a (11 kWh by 1 h) and b (22 kWh by 10 h). Before b leaves the two
    need 33 kWh, 1.5 h of the breaker, so b counts on 22 x 22 / 33 kW; a, leaving first, on all 22 kW. An
    equal split (11 kW each) would call b's need twice as slow as it is, and charge it at the evening's
    prices while a needs the breaker."""
    curve = prices(0.30, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10)
    a = session("a", "CP1", departure_at=NOW + H, energy_needed_kwh=11)
    b = session("b", "CP2", departure_at=NOW + 10 * H, energy_needed_kwh=22)
    out = run(engine, records(site(22.0), charger("CP1"), charger("CP2"), a, b, curve))
    _, rows = engine.query("SELECT session_id, share_kw FROM session_plan_needs")
    assert dict(rows) == {"a": pytest.approx(22.0), "b": pytest.approx(22 * 22 / 33)}
    assert (out["b"]["setpoint_kw"], out["b"]["binding"]) == (0.0, "plan")  # it waits for the cheap hours


def test_an_ev_that_has_not_shown_its_rate_charges_until_it_does(engine):
    """A plan is timed at the rate the EV shows (ev_rate_kw): before it has drawn, the session charges at its
    cap (its phases are unknown too), then waits for the cheap hours like any plan."""
    curve = prices(0.30, 0.10, 0.12, 0.40)
    new = session("a", "CP1", departure_at=NOW + 4 * H, energy_needed_kwh=20, ev_rate_kw=None)
    out = run(engine, records(site(), charger("CP1"), new, curve))
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (22.0, "cap")
    shown = new.model_copy(update={"ev_rate_kw": 11.0})
    out = run(engine, records(site(), charger("CP1"), shown, curve))
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (0.0, "plan")


def test_a_need_that_cannot_be_met_takes_the_breaker_while_one_that_can_wait_waits(engine):
    """On 20 kW: a needs 30 kWh within the hour (it cannot be met: every minute below its cap is lost), b
    needs 12 kWh within 2.5 h. a takes the whole breaker, as least laxity first would, and b, which counts
    on what a leaves (nothing until a leaves, then 20 kW: 36 min of its 1.5 h), waits. With 30 kW, b's
    share is 8 kW (12 kWh take 1.5 h of its 2.5: a laxity of 1 h) and it takes what a leaves."""
    a = session("a", "CP1", departure_at=NOW + H, energy_needed_kwh=30)
    b = session("b", "CP2", departure_at=NOW + 2.5 * H, energy_needed_kwh=12)
    out = run(engine, records(site(20.0), charger("CP1"), charger("CP2"), a, b, prices(0.3, 0.3)))
    assert out["a"]["setpoint_kw"] == pytest.approx(20.0, abs=0.05)
    assert out["b"]["setpoint_kw"] == 0.0
    out = run(engine, records(site(30.0), charger("CP1"), charger("CP2"), a, b, prices(0.3, 0.3)))
    assert out["a"]["setpoint_kw"] == pytest.approx(22.0, abs=0.05)
    assert out["b"]["setpoint_kw"] == pytest.approx(8.0, abs=0.05)
    cols, rows = engine.query("SELECT session_id, share_kw FROM session_plan_needs")
    assert dict(rows)["b"] == pytest.approx(8.0, abs=0.01)


def test_sessions_at_risk_share_the_breaker_in_proportion_to_the_rates_they_need(engine):
    """On 24 kW: a needs 30 kWh within the hour (29.75 kW over the 3630 s from its reading: more than its 22
    kW, it cannot be met), b needs 8 kWh within 45 minutes (10.55 kW over 2730 s). Both are at risk: above
    their 4.14 kW floors they share the room as 29.75 : 10.55, so b, which can still be met, is not held at
    its floor while a takes the rest (as on the 60 kW replay's evening, where that made EV0013 miss). With
    room for both needs (33 kW), b gets more than its 10.55 kW."""
    a = session("a", "CP1", departure_at=NOW + H, energy_needed_kwh=30)
    b = session("b", "CP2", departure_at=NOW + 0.75 * H, energy_needed_kwh=8)
    out = run(engine, records(site(24.0), charger("CP1"), charger("CP2"), a, b, prices(0.3, 0.3)))
    need_a, need_b, above = 30 * 3600 / 3630, 8 * 3600 / 2730, 24.0 - 2 * 4.14
    assert out["a"]["setpoint_kw"] == pytest.approx(4.14 + above * need_a / (need_a + need_b), abs=0.05)  # 15.74
    assert out["b"]["setpoint_kw"] == pytest.approx(4.14 + above * need_b / (need_a + need_b), abs=0.05)  # 8.26
    out = run(engine, records(site(33.0), charger("CP1"), charger("CP2"), a, b, prices(0.3, 0.3)))
    assert out["a"]["setpoint_kw"] == pytest.approx(22.0, abs=0.05)
    assert out["b"]["setpoint_kw"] == pytest.approx(11.0, abs=0.05)


def test_urgency_counts_from_now_not_from_the_last_meter_reading(engine):
    # 5 kWh at 22 kW take 818 s, 1,227 s with the taper's allowance (x 1.5); the EV leaves 2,027 s from now,
    # 100 s less than that and the 900 s margin: urgent. Its last reading was 500 s ago, and from there its
    # laxity is 1,709 s, above 900 s and the allowance (1,309 s), where the cheap slot (1,427 s before it
    # leaves, 8.7 kWh at 22 kW) would hold it: it must charge now all the same.
    curve = prices(0.40, 0.05, first=NOW - timedelta(minutes=50))
    a = session(
        "a",
        "CP1",
        departure_at=NOW + timedelta(seconds=2027),
        energy_needed_kwh=5,
        sampled_at=NOW - timedelta(seconds=500),
    )
    out = run(engine, records(site(), charger("CP1"), a, curve))
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (22.0, "cap")
    _, rows = engine.query("SELECT urgent FROM session_plan_needs WHERE session_id = 'a'")
    assert rows == [(True,)]
    # 160 s earlier, on the same reading, it is not yet urgent (from 100 s before now): it waits for the cheap slot
    early = run(engine, records(site(), charger("CP1"), a, curve), NOW - timedelta(seconds=160))
    assert (early["a"]["setpoint_kw"], early["a"]["binding"]) == (0.0, "plan")


def test_a_met_plan_stops_and_an_unplanned_flexible_session_is_still_shaped_by_the_tariff(engine):
    curve = prices(0.30)
    met = session("a", "CP1", departure_at=NOW + 5 * H, energy_needed_kwh=10, energy_kwh=12)
    flexible = session("b", "CP2", flexible=True)
    out = run(engine, records(site(), charger("CP1"), charger("CP2"), met, flexible, curve))
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (0.0, "plan")
    assert (out["b"]["setpoint_kw"], out["b"]["binding"]) == (11.0, "tariff")  # ON_PEAK: 0.5 of 22 kW


def test_without_a_price_in_force_a_plan_waits_only_for_known_cheaper_slots(engine):
    later = prices(0.10, first=NOW + H)
    a = session("a", "CP1", departure_at=NOW + 3 * H, energy_needed_kwh=20)  # the next hour holds 22 kWh
    b = session("b", "CP2", departure_at=NOW + 3 * H, energy_needed_kwh=30)  # it does not hold 30
    out = run(engine, records(site(), charger("CP1"), charger("CP2"), a, b, later))
    assert out["a"]["setpoint_kw"] == 0.0 and out["b"]["setpoint_kw"] == 22.0
    no_prices = run(engine, records(site(), charger("CP1"), a))
    assert no_prices["a"]["setpoint_kw"] == 22.0  # no price known at all: as fast as allowed


def test_the_least_laxity_is_admitted_first_when_floors_do_not_all_fit(engine):
    # 5 kW fit one 4.14 kW floor; the newer session is the more urgent one.
    relaxed = session("old", "CP1", started=NOW - 2 * H, departure_at=NOW + 9 * H, energy_needed_kwh=40)
    urgent = session("new", "CP2", started=NOW - 0.5 * H, departure_at=NOW + 2 * H, energy_needed_kwh=40)
    unplanned = session("first", "CP3", started=NOW - 3 * H)
    out = run(engine, records(site(5.0), charger("CP1"), charger("CP2"), charger("CP3"), relaxed, urgent, unplanned))
    assert out["new"]["setpoint_kw"] == 5.0 and out["old"]["setpoint_kw"] == 0.0 and out["first"]["setpoint_kw"] == 0.0
    # without plans, arrival order: the first to arrive
    plain = [s.model_copy(update={"departure_at": None, "energy_needed_kwh": None}) for s in (relaxed, urgent)]
    out = run(engine, records(site(5.0), charger("CP1"), charger("CP2"), charger("CP3"), *plain, unplanned))
    assert out["first"]["setpoint_kw"] == 5.0


def test_trust_the_ev_then_a_session_plan_then_a_charger_plan_then_the_site_file(engine):
    sp = plan(session_id="a", depart=NOW + 5 * H, kwh=25)
    cp = plan(charge_point_id="CP1", depart=NOW + 6 * H, kwh=35)
    stale_cp = plan(charge_point_id="CP3", depart=NOW - 2 * H, kwh=35, at=NOW - 5 * H)  # left before c came
    topo = [site(default_departure_min=17 * 60, default_energy_kwh=20), charger("CP1"), charger("CP2")]
    topo += [charger("CP3", default_departure_min=6 * 60 + 30), charger("CP4")]
    ev_own = session("a", "CP1", departure_at=NOW + 3 * H)  # its departure; the need from its session plan
    on_cp1 = session("b", "CP1", connector_id=2)  # the charger plan
    defaults = session("c", "CP3")  # the charger's default departure (06:30 next), the site's energy
    site_only = session("d", "CP4", started=NOW - 14 * H)  # started 22:00 the day before: 17:00 today
    run(engine, records(*topo, sp, cp, stale_cp, ev_own, on_cp1, defaults, site_only))
    t = targets(engine)
    assert (t["a"]["departure_from"], t["a"]["need_from"], t["a"]["energy_needed_kwh"]) == ("ev", "operator", 25)
    assert t["a"]["departure_at"].astimezone(UTC) == NOW + 3 * H
    assert (t["b"]["departure_at"].astimezone(UTC), t["b"]["energy_needed_kwh"]) == (NOW + 6 * H, 35)
    assert t["c"]["departure_at"].astimezone(UTC) == datetime(2024, 6, 4, 6, 30, tzinfo=UTC)
    assert (t["c"]["departure_from"], t["c"]["energy_needed_kwh"]) == ("site", 20)
    assert t["d"]["departure_at"].astimezone(UTC) == datetime(2024, 6, 3, 17, tzinfo=UTC)


def test_a_target_soc_needs_its_share_of_the_battery(engine):
    p = plan(session_id="a", depart=NOW + 8 * H, soc=80, battery=60)
    a = session("a", "CP1", soc_pct=50, energy_kwh=4)
    run(engine, records(site(), charger("CP1"), p, a))
    t = targets(engine)["a"]
    assert t["remaining_kwh"] == pytest.approx(18.0) and t["energy_needed_kwh"] == pytest.approx(22.0)


def test_a_plan_that_cannot_be_met_charges_at_its_cap_and_raises_plan_at_risk(engine):
    a = session("a", "CP1", departure_at=NOW + H, energy_needed_kwh=50, energy_kwh=6)  # 44 kWh in 1 h at 22 kW
    out = run(engine, records(site(), charger("CP1"), a, prices(0.4, 0.01)))
    assert out["a"]["setpoint_kw"] == 22.0
    _, rows = engine.query("SELECT kind, subject_id, value_kw, limit_kw FROM alerts WHERE kind = 'plan_at_risk'")
    # the power it would need: 44 kWh over the 3630 s from its meter reading (30 s ago) to departure
    assert rows == [("plan_at_risk", "a", pytest.approx(44 * 3600 / 3630), 22.0)]


def test_a_plan_at_risk_takes_the_breaker_first_and_the_sessions_that_can_wait_share_the_rest(engine):
    """30 kW for two 22 kW sessions: one must have 20 kWh within the hour (urgent), the other stays all
    day. Equal shares (15 kW each) would leave the first 5 kWh short; the urgent one gets its 22 kW."""
    urgent = session("u", "CP1", departure_at=NOW + H, energy_needed_kwh=20)
    stays = session("w", "CP2")
    out = run(engine, records(site(30.0), charger("CP1"), charger("CP2"), urgent, stays))
    assert out["u"]["setpoint_kw"] == pytest.approx(22.0, abs=0.05)
    assert out["w"]["setpoint_kw"] == pytest.approx(8.0, abs=0.05)
    # without the plan, the two share the breaker equally
    plain = run(engine, records(site(30.0), charger("CP1"), charger("CP2"), session("u", "CP1"), stays))
    assert plain["u"]["setpoint_kw"] == pytest.approx(15.0) and plain["w"]["setpoint_kw"] == pytest.approx(15.0)


def test_a_need_that_cannot_be_met_is_not_held_below_its_cap_by_the_floor_of_one_that_can_wait(engine):
    """On 24 kW: a needs 30 kWh within the hour (it cannot be met at its 22 kW: every minute below its cap
    is lost), w has no plan. Admitting w at its 4.14 kW floor would hold a at 19.86 kW; a reserves its cap
    in admission, so w waits (the 2 kW a cannot take are left: less than w's floor)."""
    a = session("a", "CP1", departure_at=NOW + H, energy_needed_kwh=30)
    w = session("w", "CP2", started=NOW - 3 * H)
    out = run(engine, records(site(24.0), charger("CP1"), charger("CP2"), a, w, prices(0.3, 0.3)))
    assert out["a"]["setpoint_kw"] == pytest.approx(22.0, abs=0.05)
    assert out["w"]["setpoint_kw"] == 0.0 and out["w"]["binding"] == "paused"
    # with room for both, w takes what a leaves
    out = run(engine, records(site(30.0), charger("CP1"), charger("CP2"), a, w, prices(0.3, 0.3)))
    assert out["a"]["setpoint_kw"] == pytest.approx(22.0, abs=0.05)
    assert out["w"]["setpoint_kw"] == pytest.approx(8.0, abs=0.05)
