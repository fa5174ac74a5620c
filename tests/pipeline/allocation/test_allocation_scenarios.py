"""Hand-written allocation scenarios on the seed layouts, through `pipeline allocate`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.pipeline.engine.test_whatif import allocate, iso

T17 = datetime(2024, 6, 3, 15, 0, tzinfo=UTC)  # 17:00 in Amsterdam (CEST)


def node(node_id, limit, parent=None, kind="panel", **kw):
    return {"node_id": node_id, "site_id": "depot", "parent_id": parent, "kind": kind, "limit_kw": limit} | kw


def charger(cid, parent, rating=22.0, **kw):
    return node(cid, rating, parent, kind="charger", **kw)


def session(sid, cp, now, *, rated=22.0, minutes_ago=60, **kw):
    return {
        "session_id": sid,
        "charge_point_id": cp,
        "connector_id": 1,
        "transaction_id": sid,
        "site_id": "depot",
        "rated_power_kw": rated,
        "started_at": iso(now - timedelta(minutes=minutes_ago)),
    } | kw


def depot(now, building_kw=60.0, vip_draw=(22.0, 11.0)):
    """250 kW site; panels A/B/C of 80/80/40 kW with four 22 kW chargers each; two VIP chargers on a
    dedicated line, left out of balancing."""
    topo = [
        node("depot", 250.0, kind="site"),
        node("A", 80.0, "depot"),
        node("B", 80.0, "depot"),
        node("C", 40.0, "depot"),
        node("VIP", 50.0, "depot"),
    ]
    sessions = []
    for panel in "ABC":
        for i in range(4):
            topo.append(charger(f"{panel}{i}", panel))
            sessions.append(session(f"{panel}{i}-s", f"{panel}{i}", now, minutes_ago=60 - i))
    for i, draw in enumerate(vip_draw):
        topo.append(charger(f"V{i}", "VIP", managed=False))
        sessions.append(session(f"V{i}-s", f"V{i}", now, current_power_kw=draw))
    ev = sum(vip_draw) + 80.0
    demand = [
        {
            "site_id": "depot",
            "current_demand_kw": building_kw + ev,
            "ev_load_kw": ev,
            "measured_at": iso(now - timedelta(minutes=1)),
        }
    ]
    return {"site.topology": topo, "ocpp.active.sessions": sessions, "bems.site.demand": demand}


def panel_sums(out):
    sums = {}
    for r in out.values():
        sums[r["node_id"]] = sums.get(r["node_id"], 0.0) + r["setpoint_kw"]
    return sums


def test_sub_panels_and_vip_chargers_on_a_dedicated_line():
    now = T17 - timedelta(hours=2)
    out = allocate(depot(now, building_kw=10.0), now)
    assert not any(sid.startswith("V") for sid in out), "VIP chargers are not balanced"
    sums = panel_sums(out)
    assert sums["A"] == pytest.approx(80.0, abs=0.01) and sums["B"] == pytest.approx(80.0, abs=0.01)
    assert sums["C"] == pytest.approx(40.0, abs=0.01)
    # Site: 250 - 10 building - 33 VIP draw = 207 kW of EV headroom, more than the panels allow.
    assert out["A0-s"]["site_limit_kw"] == pytest.approx(207.0)
    assert out["C0-s"]["binding"] == "C" and out["C0-s"]["setpoint_kw"] == pytest.approx(10.0, abs=0.01)


def test_the_site_binds_when_building_load_grows_and_vips_count_at_rating_when_stale():
    now = T17 - timedelta(hours=2)
    snapshot = depot(now, building_kw=120.0)
    snapshot["ocpp.active.sessions"][-1] |= {"sampled_at": iso(now - timedelta(hours=1))}  # V1 meter stale
    out = allocate(snapshot, now)
    # 250 - 120 building - 22 (V0 measured) - 22 (V1 stale: its rating) = 86 kW for all three panels.
    assert sum(r["setpoint_kw"] for r in out.values()) == pytest.approx(86.0, abs=0.02)
    assert {r["binding"] for r in out.values()} <= {"depot", "C"}
    assert all(v <= limit + 1e-6 for v, limit in zip(panel_sums(out).values(), (80, 80, 40), strict=False))


def test_dr_event_of_20_percent_from_17_to_19():
    event = [
        {
            "site_id": "depot",
            "dr_event_id": "evening",
            "curtailment_pct": 20.0,
            "event_start": iso(T17),
            "event_end": iso(T17 + timedelta(hours=2)),
            "signal_at": iso(T17 - timedelta(hours=20)),
        }
    ]
    totals = {}
    for label, now in (
        ("16:59", T17 - timedelta(minutes=1)),
        ("17:00", T17),
        ("18:59", T17 + timedelta(minutes=119)),
        ("19:00", T17 + timedelta(hours=2)),
    ):
        out = allocate(depot(now, building_kw=100.0) | {"utility.dr.signals": event}, now)
        totals[label] = round(sum(r["setpoint_kw"] for r in out.values()), 2)
        if label in ("17:00", "18:59"):
            assert {r["binding"] for r in out.values()} == {"dr"}
    # 250 -> 200 kW: 250 - 100 - 33 = 117 kW before and after, 200 - 100 - 33 = 67 kW during.
    assert totals == {"16:59": 117.0, "17:00": 67.0, "18:59": 67.0, "19:00": 117.0}


def rule(source, scope, scope_id, action, limit=None, now=T17, **kw):
    return {
        "rule_id": f"{source}:{scope}:{scope_id}",
        "source": source,
        "scope": scope,
        "scope_id": scope_id,
        "action": action,
        "limit_kw": limit,
        "created_at": iso(now),
    } | kw


def test_a_safety_cap_overrides_an_operator_override():
    now = T17 - timedelta(hours=3)
    snapshot = depot(now, building_kw=10.0)
    snapshot["control.rules"] = [rule("operator", "charger", "C0", "override", 22.0, now)]
    out = allocate(snapshot, now)
    assert out["C0-s"]["setpoint_kw"] == pytest.approx(22.0)
    assert out["C0-s"]["binding"] == "operator:charger:C0"
    assert panel_sums(out)["C"] == pytest.approx(40.0, abs=0.01), "the panel still holds"
    snapshot["control.rules"].append(rule("safety", "charger", "C0", "cap", 6.0, now))
    out = allocate(snapshot, now)
    assert out["C0-s"]["setpoint_kw"] == pytest.approx(6.0)
    assert out["C0-s"]["binding"] == "safety:charger:C0"


def test_an_override_beats_caps_and_pauses_of_lower_precedence_only():
    now = T17 - timedelta(hours=3)
    snapshot = depot(now)
    snapshot["control.rules"] = [
        rule("partner", "session", "A0-s", "override", 11.0, now),
        rule("operator", "node", "A", "pause", now=now),
        rule("utility", "charger", "A1", "cap", 5.0, now),
    ]
    out = allocate(snapshot, now)
    assert out["A0-s"]["setpoint_kw"] == pytest.approx(11.0)
    assert out["A1-s"]["setpoint_kw"] == 0.0 and out["A1-s"]["binding"] == "operator:node:A"
    assert out["A2-s"]["binding"] == "operator:node:A"
    snapshot["control.rules"].append(rule("safety", "node", "A", "pause", now=now))
    assert allocate(snapshot, now)["A0-s"]["setpoint_kw"] == 0.0


def test_node_cap_rules_lower_the_breaker_and_scheduled_rules_fire_on_time():
    now = T17 - timedelta(hours=3)
    rules = [
        rule(
            "operator",
            "node",
            "B",
            "cap",
            30.0,
            now,
            valid_from=iso(now + timedelta(minutes=30)),
            valid_to=iso(now + timedelta(hours=1)),
        )
    ]

    def at(t):
        return allocate(depot(t, building_kw=10.0) | {"control.rules": rules}, t)

    assert panel_sums(at(now))["B"] == pytest.approx(80.0, abs=0.01)
    during = at(now + timedelta(minutes=30))
    assert panel_sums(during)["B"] == pytest.approx(30.0, abs=0.01)
    assert {during[f"B{i}-s"]["binding"] for i in range(4)} == {"operator:node:B"}
    assert panel_sums(at(now + timedelta(hours=1)))["B"] == pytest.approx(80.0, abs=0.01)


def test_reserve_holds_headroom_for_an_idle_charger_only():
    now = T17 - timedelta(hours=3)
    snapshot = depot(now, building_kw=10.0)
    snapshot["site.topology"].append(charger("C9", "C"))
    snapshot["control.rules"] = [rule("operator", "charger", "C9", "reserve", 16.0, now)]
    assert panel_sums(allocate(snapshot, now))["C"] == pytest.approx(24.0, abs=0.01)
    snapshot["ocpp.active.sessions"].append(session("C9-s", "C9", now, minutes_ago=1))
    assert panel_sums(allocate(snapshot, now))["C"] == pytest.approx(40.0, abs=0.01)


def test_tariff_shaping_slows_flexible_sessions_never_below_their_floor():
    now = T17 - timedelta(hours=3)
    snapshot = {
        "site.topology": [node("depot", 100.0, kind="site")],
        "ocpp.active.sessions": [session("flex", "X1", now, flexible=True), session("firm", "X2", now)],
    }
    for tier, flex_kw in (("OFF_PEAK", 22.0), ("ON_PEAK", 11.0), ("CRITICAL_PEAK", 4.14)):
        snapshot["tariff.price.signals"] = [
            {
                "site_id": "depot",
                "price_per_kwh": 0.3,
                "price_tier": tier,
                "valid_from": iso(now - timedelta(minutes=5)),
                "valid_to": iso(now + timedelta(minutes=55)),
            }
        ]
        out = allocate(snapshot, now)
        assert out["flex"]["setpoint_kw"] == pytest.approx(flex_kw, abs=0.001), tier
        assert out["firm"]["setpoint_kw"] == pytest.approx(22.0)
        assert out["flex"]["binding"] == ("cap" if tier == "OFF_PEAK" else "tariff")


def test_stale_session_is_held_at_its_last_accepted_setpoint_and_counted():
    now = T17 - timedelta(hours=3)
    snapshot = {
        "site.topology": [node("depot", 30.0, kind="site")],
        "ocpp.active.sessions": [
            session("quiet", "X1", now, sampled_at=iso(now - timedelta(minutes=15))),
            session("live", "X2", now),
        ],
        "ocpp.setpoint.acks": [
            {
                "charge_point_id": "X1",
                "connector_id": 1,
                "session_id": "quiet",
                "purpose": "Tx",
                "setpoint_kw": 9.5,
                "limit": 13.7,
                "charging_rate_unit": "A",
                "status": "Accepted",
                "sent_at": iso(now - timedelta(minutes=20)),
                "answered_at": iso(now - timedelta(minutes=20)),
            }
        ],
    }
    out = allocate(snapshot, now)
    assert out["quiet"]["setpoint_kw"] == pytest.approx(9.5) and out["quiet"]["binding"] == "stale"
    assert out["live"]["setpoint_kw"] == pytest.approx(20.5, abs=0.001)


def test_a_stale_building_meter_counts_its_last_value_plus_a_margin():
    now = T17 - timedelta(hours=3)
    snapshot = {
        "site.topology": [node("depot", 100.0, kind="site")],
        "ocpp.active.sessions": [session(s, f"X{s}", now) for s in "abcde"],
        "bems.site.demand": [
            {
                "site_id": "depot",
                "current_demand_kw": 40.0,
                "ev_load_kw": 0.0,
                "measured_at": iso(now - timedelta(hours=1)),
            }
        ],
    }
    out = allocate(snapshot, now)
    assert out["a"]["site_limit_kw"] == pytest.approx(100 - 40 - 10)


def test_alerts_for_over_limit_deviation_and_stale_meters():
    from pipeline.engine.embedded import EmbeddedEngine
    from pipeline.engine.whatif import load_snapshot

    now = T17 - timedelta(hours=3)
    snapshot = {
        "site.topology": [
            node("depot", 30.0, kind="site"),
            node("P", 10.0, "depot"),
            charger("X1", "P"),
            charger("X2", "depot"),
        ],
        "ocpp.active.sessions": [
            session("hog", "X1", now, minutes_ago=0, current_power_kw=15.0, sampled_at=iso(now)),
            session("quiet", "X2", now, sampled_at=iso(now - timedelta(minutes=20))),
        ],
        "bems.site.demand": [
            {
                "site_id": "depot",
                "current_demand_kw": 5.0,
                "ev_load_kw": 0.0,
                "measured_at": iso(now - timedelta(hours=1)),
            }
        ],
    }
    engine = EmbeddedEngine()
    engine.apply(load_snapshot(snapshot))
    changes = engine.evaluate(now)
    alerts = {c.key for c in changes if c.topic == "pipeline.alerts" and c.value}
    assert alerts == {"node_over_limit:P", "stale_session_meter:quiet", "stale_site_meter:depot"}
    # A minute later the hog's meter still shows it above its 10 kW setpoint: a deviation.
    engine.apply(
        load_snapshot(
            {
                "ocpp.active.sessions": [
                    session(
                        "hog",
                        "X1",
                        now,
                        minutes_ago=0,
                        current_power_kw=15.0,
                        sampled_at=iso(now + timedelta(minutes=2)),
                    )
                ]
            }
        )
    )
    later = {c.key: c.value for c in engine.evaluate(now + timedelta(minutes=2)) if c.topic == "pipeline.alerts"}
    assert "setpoint_deviation:hog" in later and later["setpoint_deviation:hog"] is not None
    engine.close()
