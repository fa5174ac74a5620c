"""Phases in the allocation, through `pipeline allocate` (the SQL) and the reference allocator: the 6 A
floor on the EV's phases (IEC 61851-1), the device cap of a 1- or 2-phase EV, setpoint_a and numberPhases
on the EV's phases, and per-phase breaker limits (limit_a) on the grid phases the charger's wiring loads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pipeline.allocation import reference
from pipeline.contracts.topics import ActiveSession, SiteDemand, TopologyNode
from tests.pipeline.engine.test_whatif import NOW, allocate, iso


def topo(*nodes: dict) -> list[dict]:
    return list(nodes)


def site(limit_kw: float = 500.0, **kw) -> dict:
    return {"node_id": "S", "site_id": "S", "kind": "site", "limit_kw": limit_kw} | kw


def charger(cid: str, parent: str = "S", rating: float = 22.0, **kw) -> dict:
    return {"node_id": cid, "site_id": "S", "parent_id": parent, "kind": "charger", "limit_kw": rating} | kw


def session(sid: str, cp: str, rated: float = 22.0, minutes_ago: float = 60, **kw) -> dict:
    return {
        "session_id": sid,
        "charge_point_id": cp,
        "connector_id": 1,
        "transaction_id": sid,
        "site_id": "S",
        "rated_power_kw": rated,
        "started_at": iso(NOW - timedelta(minutes=minutes_ago)),
    } | kw


def both(snapshot: dict) -> tuple[dict[str, dict], dict]:
    """The SQL's setpoints (`pipeline allocate`) and the reference's, for the same snapshot."""
    got = allocate(snapshot)
    records: list[tuple[str, str, Any]] = []
    for node in snapshot.get("site.topology", []):
        records.append(("site.topology", node["node_id"], TopologyNode.model_validate(node)))
    for rec in snapshot.get("ocpp.active.sessions", []):
        rec = {"sampled_at": iso(NOW - timedelta(seconds=30))} | rec
        records.append(("ocpp.active.sessions", rec["session_id"], ActiveSession.model_validate(rec)))
    for rec in snapshot.get("bems.site.demand", []):
        records.append(("bems.site.demand", rec["site_id"], SiteDemand.model_validate(rec)))
    return got, reference.allocate(records, NOW)


def test_a_one_phase_ev_has_a_floor_of_6_a_on_one_phase_1_38_kw_at_230_v():
    # 1.3 kW of headroom: below the 1-phase floor (1.38 kW), so the session is paused; at 1.4 kW it runs.
    for limit, expected in [(1.3, 0.0), (1.4, 1.4)]:
        snap = {
            "site.topology": topo(site(limit), charger("C1")),
            "ocpp.active.sessions": [session("s1", "C1", phases=3, ev_phases=1)],
        }
        got, ref = both(snap)
        assert ref["s1"]["floor_kw"] == pytest.approx(1.38)
        assert got["s1"]["setpoint_kw"] == pytest.approx(expected) == ref["s1"]["setpoint_kw"]


def test_the_floor_of_a_three_phase_ev_stays_6_a_on_three_phases_and_min_power_kw_overrides_it():
    snap = {
        "site.topology": topo(site(), charger("C1"), charger("C2")),
        "ocpp.active.sessions": [session("s1", "C1"), session("s2", "C2", ev_phases=1, min_power_kw=2.0)],
    }
    _, ref = both(snap)
    assert ref["s1"]["floor_kw"] == pytest.approx(4.14)
    assert ref["s2"]["floor_kw"] == pytest.approx(2.0)


def test_a_one_phase_ev_on_a_three_phase_charger_is_capped_at_the_per_phase_rating_and_converted_on_one_phase():
    snap = {
        "site.topology": topo(site(), charger("C1", rating=22.0)),
        "ocpp.active.sessions": [session("s1", "C1", phases=3, ev_phases=1)],
    }
    got, ref = both(snap)
    # 22 kW on three phases is 32 A per phase: 7.36 kW on one phase.
    assert ref["s1"]["cap_kw"] == pytest.approx(22.0 / 3)
    assert got["s1"]["setpoint_kw"] == pytest.approx(7.333, abs=0.001)
    assert got["s1"]["setpoint_a"] == pytest.approx(31.8)  # 7333 W / 230 V, rounded down to 0.1 A
    assert got["s1"]["phases"] == 1 == ref["s1"]["phases"]


def test_a_two_phase_ev_is_converted_on_two_phases_and_ev_phases_never_exceeds_the_chargers():
    snap = {
        "site.topology": topo(site(), charger("C1", rating=11.0), charger("C2", rating=7.4, phases=1)),
        "ocpp.active.sessions": [
            session("s1", "C1", rated=11.0, ev_phases=2),
            session("s2", "C2", rated=7.4, phases=1, ev_phases=3),
        ],
    }
    got, ref = both(snap)
    assert got["s1"]["phases"] == 2 and got["s1"]["setpoint_kw"] == pytest.approx(11.0 * 2 / 3, abs=0.001)
    assert got["s1"]["setpoint_a"] == pytest.approx(15.9)  # 7333 W / (2 x 230 V)
    assert got["s2"]["phases"] == 1 and got["s2"]["setpoint_kw"] == pytest.approx(7.4)
    assert got["s2"]["setpoint_a"] == pytest.approx(32.1)
    assert ref["s2"]["phases"] == 1


def test_the_learned_cap_limits_the_session():
    snap = {
        "site.topology": topo(site(), charger("C1")),
        "ocpp.active.sessions": [session("s1", "C1", learned_cap_kw=6.5, ev_max_power_kw=11.0)],
    }
    got, ref = both(snap)
    assert got["s1"]["setpoint_kw"] == pytest.approx(6.5) == ref["s1"]["setpoint_kw"]
    assert got["s1"]["binding"] == "cap"


def one_phase_evs(rotations: list[str]) -> list[dict]:
    return [session(f"s{i}", f"C{i}", phases=3, ev_phases=1, phase_rotation=r) for i, r in enumerate(rotations)]


def test_a_panel_with_a_per_phase_rating_holds_each_grid_phase_of_its_one_phase_evs():
    # Panel P: 16 A per phase, kW limit generous. Two 1-phase EVs on grid phase R (RST and RTS wiring put
    # the charger's L1 on R), one on S (SRT), one on T (TSR): R's 16 A are shared, S and T have 16 A each.
    rotations = ["RST", "RTS", "SRT", "TSR"]
    snap = {
        "site.topology": topo(
            site(),
            {"node_id": "P", "site_id": "S", "parent_id": "S", "kind": "panel", "limit_kw": 100.0, "limit_a": 16.0},
            *(charger(f"C{i}", "P", phase_rotation=r) for i, r in enumerate(rotations)),
        ),
        "ocpp.active.sessions": one_phase_evs(rotations),
    }
    got, ref = both(snap)
    for sid, amps in [("s0", 8.0), ("s1", 8.0), ("s2", 16.0), ("s3", 16.0)]:
        assert got[sid]["setpoint_a"] == pytest.approx(amps, abs=0.1), sid
        assert got[sid]["setpoint_kw"] == pytest.approx(ref[sid]["setpoint_kw"], abs=0.01), sid
        assert got[sid]["binding"] == "P"
    assert ref["__headroom_a__"]["P"] == {"R": 16.0, "S": 16.0, "T": 16.0}


def test_current_a_phase_keeps_after_another_phase_binds_goes_to_the_evs_on_it():
    # 20 A per phase. A 3-phase EV (s0) shares R with two 1-phase EVs (s1, s2) and S with one (s3). R binds
    # first: s0, s1, s2 end near their 6 A floors. S's level counted on s0 rising to it, so a fill that
    # stops there leaves some 1.7 A on S unused while s3 is below its cap; s3 takes what s0 left on S.
    snap = {
        "site.topology": topo(
            site(limit_a=20.0),
            charger("C0"),
            charger("C1"),
            charger("C2", phase_rotation="RTS"),
            charger("C3", phase_rotation="SRT"),
        ),
        "ocpp.active.sessions": [
            session("s0", "C0", phases=3),
            *(
                session(f"s{i}", f"C{i}", phases=3, ev_phases=1, phase_rotation=r)
                for i, r in [(1, "RST"), (2, "RTS"), (3, "SRT")]
            ),
        ],
    }
    got, ref = both(snap)
    r_amps = got["s0"]["setpoint_a"] + got["s1"]["setpoint_a"] + got["s2"]["setpoint_a"]
    assert r_amps == pytest.approx(20.0, abs=0.3)  # each setpoint_a is floored to 0.1 A
    assert got["s0"]["setpoint_a"] + got["s3"]["setpoint_a"] == pytest.approx(20.0, abs=0.2)  # S full too
    assert got["s3"]["binding"] == "S"
    for sid in ("s0", "s1", "s2", "s3"):
        assert got[sid]["setpoint_kw"] == pytest.approx(ref[sid]["setpoint_kw"], abs=0.01), sid


def test_a_floor_too_large_for_what_is_left_does_not_pause_a_later_session_whose_floor_fits():
    # 5.6 kW: s0's 3-phase floor (4.14 kW) fits, s1's (4.14 kW more) does not; s2, a 1-phase EV that came
    # later, has a floor of 1.38 kW, which fits in the 1.46 kW s0 leaves: it is admitted, s1 paused, and
    # the 0.08 kW left over is shared.
    snap = {
        "site.topology": topo(site(limit_kw=5.6), *(charger(f"C{i}") for i in range(3))),
        "ocpp.active.sessions": [
            session("s0", "C0", phases=3, minutes_ago=30),
            session("s1", "C1", phases=3, minutes_ago=20),
            session("s2", "C2", phases=3, ev_phases=1, minutes_ago=10),
        ],
    }
    got, ref = both(snap)
    assert got["s1"]["binding"] == "paused" and not ref["s1"]["admitted"]
    assert got["s2"]["setpoint_kw"] == pytest.approx(1.42, abs=0.01) and ref["s2"]["admitted"]
    assert got["s0"]["setpoint_kw"] == pytest.approx(4.18, abs=0.01)


def test_a_two_phase_ev_loads_the_grid_phases_its_chargers_l1_and_l2_are_wired_to():
    # STR: L1 on S, L2 on T. A 1-phase EV on R (RST) then has R to itself.
    snap = {
        "site.topology": topo(
            site(limit_kw=100.0, limit_a=10.0),
            charger("C0", phase_rotation="STR"),
            charger("C1", phase_rotation="RST"),
        ),
        "ocpp.active.sessions": [
            session("s0", "C0", ev_phases=2, phase_rotation="STR"),
            session("s1", "C1", ev_phases=1, phase_rotation="RST"),
        ],
    }
    got, ref = both(snap)
    assert ref["s0"]["loads"] == "ST" and ref["s1"]["loads"] == "R"
    assert got["s0"]["setpoint_a"] == pytest.approx(10.0) and got["s0"]["phases"] == 2
    assert got["s1"]["setpoint_a"] == pytest.approx(10.0) and got["s1"]["phases"] == 1


def test_a_breaker_without_limit_a_keeps_its_kw_limit_alone():
    rotations = ["RST", "RST", "RST"]
    snap = {
        "site.topology": topo(site(limit_kw=6.0), *(charger(f"C{i}") for i in range(3))),
        "ocpp.active.sessions": one_phase_evs(rotations),
    }
    got, _ = both(snap)
    assert sum(r["setpoint_kw"] for r in got.values()) == pytest.approx(6.0, abs=0.01)
    assert all(r["setpoint_kw"] == pytest.approx(2.0, abs=0.01) for r in got.values())


def test_the_building_load_is_taken_as_balanced_on_the_sites_phases():
    # 6.9 kW of building load is 10 A on each phase: 22 A left of the site's 32 A.
    snap = {
        "site.topology": topo(site(limit_kw=100.0, limit_a=32.0), charger("C0")),
        "ocpp.active.sessions": [session("s0", "C0", ev_phases=1)],
        "bems.site.demand": [
            {
                "site_id": "S",
                "current_demand_kw": 6.9,
                "ev_load_kw": 0.0,
                "measured_at": iso(NOW - timedelta(minutes=1)),
            }
        ],
    }
    got, ref = both(snap)
    assert ref["__headroom_a__"]["S"]["R"] == pytest.approx(22.0)
    assert got["s0"]["setpoint_a"] == pytest.approx(22.0, abs=0.1)


def test_admission_pauses_the_ev_whose_floor_current_does_not_fit_on_its_phase():
    # 10 A on each phase: the first 1-phase EV on R takes its 6 A floor; the second (later) does not fit
    # on R and is paused although the kW limit has room; the one on S runs.
    snap = {
        "site.topology": topo(
            site(limit_kw=100.0, limit_a=10.0),
            *(charger(f"C{i}", phase_rotation=r) for i, r in enumerate(["RST", "RTS", "SRT"])),
        ),
        "ocpp.active.sessions": [
            session("s0", "C0", ev_phases=1, phase_rotation="RST", minutes_ago=90),
            session("s1", "C1", ev_phases=1, phase_rotation="RTS", minutes_ago=30),
            session("s2", "C2", ev_phases=1, phase_rotation="SRT"),
        ],
    }
    got, ref = both(snap)
    assert got["s1"]["setpoint_kw"] == 0.0 and got["s1"]["binding"] == "paused" and not ref["s1"]["admitted"]
    assert got["s0"]["setpoint_a"] == pytest.approx(10.0) and got["s2"]["setpoint_a"] == pytest.approx(10.0)
