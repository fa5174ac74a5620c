"""Allocation on hand-made cases, through the `pipeline allocate` command (docs/architecture.md, "Allocation")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from pipeline.cli.main import main

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def site(limit_kw: float, site_id: str = "s1") -> dict:
    return {"node_id": site_id, "site_id": site_id, "kind": "site", "limit_kw": limit_kw}


def session(
    sid: str,
    *,
    cap: float = 22.0,
    ev: float | None = None,
    priority: int = 0,
    minutes_ago: float = 60,
    weight: float = 1.0,
    site_id: str = "s1",
    min_kw: float | None = None,
) -> dict:
    rec = {
        "session_id": sid,
        "charge_point_id": f"CP-{sid}",
        "connector_id": 1,
        "transaction_id": sid,
        "site_id": site_id,
        "node_id": site_id,
        "rated_power_kw": cap,
        "priority": priority,
        "weight": weight,
        "started_at": iso(NOW - timedelta(minutes=minutes_ago)),
    }
    if ev is not None:
        rec["ev_max_power_kw"] = ev
    if min_kw is not None:
        rec["min_power_kw"] = min_kw
    return rec


def demand(total: float, ev: float, site_id: str = "s1", limit: float | None = None) -> dict:
    rec = {
        "site_id": site_id,
        "current_demand_kw": total,
        "ev_load_kw": ev,
        "measured_at": iso(NOW - timedelta(minutes=1)),
    }
    if limit is not None:
        rec["demand_limit_kw"] = limit
    return rec


def allocate(snapshot: dict, now: datetime = NOW) -> dict[str, dict]:
    """Run `pipeline allocate`; sessions without a meter time are taken as sampled 30 s before ``now``."""
    snapshot = snapshot | {
        "ocpp.active.sessions": [
            {"sampled_at": iso(now - timedelta(seconds=30))} | s for s in snapshot.get("ocpp.active.sessions", [])
        ]
    }
    result = CliRunner().invoke(main, ["allocate", "--input", "-", "--now", iso(now)], input=json.dumps(snapshot))
    assert result.exit_code == 0, result.output
    return {r["session_id"]: r for r in json.loads(result.output)}


FLOOR_3PH = 6 * 3 * 230 / 1000  # 4.14 kW


@pytest.mark.parametrize(("cap", "headroom", "expected"), [(22.0, 30.0, 22.0), (22.0, 10.0, 10.0), (11.0, 11.0, 11.0)])
def test_a_single_session_gets_min_of_cap_and_headroom(cap, headroom, expected):
    out = allocate({"site.topology": [site(headroom)], "ocpp.active.sessions": [session("a", cap=cap)]})
    assert out["a"]["setpoint_kw"] == pytest.approx(expected, abs=0.001)
    assert out["a"]["binding"] == ("cap" if cap <= headroom else "s1")
    assert out["a"]["setpoint_a"] == pytest.approx(int(expected * 1000 / 690 * 10) / 10)


def test_ev_acceptance_caps_the_session():
    out = allocate({"site.topology": [site(50)], "ocpp.active.sessions": [session("a", cap=22, ev=7.4)]})
    assert out["a"]["setpoint_kw"] == pytest.approx(7.4)
    assert out["a"]["binding"] == "cap"


def test_floors_that_do_not_fit_pause_the_lowest_priority_then_the_newest():
    sessions = [
        session("low", priority=0, minutes_ago=120),
        session("high", priority=5, minutes_ago=10),
        session("old", priority=1, minutes_ago=90),
        session("new", priority=1, minutes_ago=30),
    ]
    out = allocate({"site.topology": [site(10.0)], "ocpp.active.sessions": sessions})
    paused = {sid for sid, r in out.items() if r["setpoint_kw"] == 0}
    assert paused == {"low", "new"}
    assert all(r["binding"] == "paused" for sid, r in out.items() if sid in paused)
    admitted = [r["setpoint_kw"] for sid, r in out.items() if sid not in paused]
    assert sum(admitted) <= 10.0 + 1e-9
    assert all(kw >= FLOOR_3PH - 0.001 for kw in admitted), "admitted sessions are never below their floor"


def test_no_one_is_set_between_zero_and_the_floor_even_when_nothing_fits():
    out = allocate({"site.topology": [site(3.0)], "ocpp.active.sessions": [session("a"), session("b")]})
    assert {r["setpoint_kw"] for r in out.values()} == {0.0}


def test_no_headroom_is_left_unused_while_an_admitted_session_is_below_its_cap():
    sessions = [session("a", ev=3.7), session("b", ev=11), session("c"), session("d")]
    out = allocate({"site.topology": [site(40.0)], "ocpp.active.sessions": sessions})
    kw = {sid: r["setpoint_kw"] for sid, r in out.items()}
    assert sum(kw.values()) == pytest.approx(40.0, abs=0.01)
    assert kw["a"] == pytest.approx(3.7) and kw["b"] == pytest.approx(11.0)
    assert kw["c"] == pytest.approx(kw["d"]) == pytest.approx((40 - 3.7 - 11) / 2, abs=0.001)


def test_spare_headroom_is_shared_by_weight():
    sessions = [session("a", weight=1), session("b", weight=3)]
    out = allocate({"site.topology": [site(4 * FLOOR_3PH / 2 + 8)], "ocpp.active.sessions": sessions})
    extra_a = out["a"]["setpoint_kw"] - FLOOR_3PH
    extra_b = out["b"]["setpoint_kw"] - FLOOR_3PH
    assert extra_b == pytest.approx(3 * extra_a, rel=1e-3)


def test_building_load_is_total_demand_minus_ev_load_not_counted_twice():
    snapshot = {
        "site.topology": [site(100.0)],
        "ocpp.active.sessions": [session(s) for s in "abcd"],
        "bems.site.demand": [demand(total=60.0, ev=40.0)],
    }
    out = allocate(snapshot)
    # building = 60 - 40 = 20 kW, so the EVs share 80 kW (not 100 - 60 = 40 kW).
    assert out["a"]["node_limit_kw"] == pytest.approx(80.0)
    assert sum(r["setpoint_kw"] for r in out.values()) == pytest.approx(80.0, abs=0.01)


def test_latest_meter_reading_and_contracted_limit_apply():
    older = demand(total=90, ev=0) | {"measured_at": iso(NOW - timedelta(minutes=30))}
    snapshot = {
        "site.topology": [site(100.0)],
        "ocpp.active.sessions": [session("a"), session("b")],
        "bems.site.demand": [older, demand(total=10, ev=0, limit=50)],
    }
    out = allocate(snapshot)
    assert out["a"]["node_limit_kw"] == pytest.approx(40.0)  # min(100, 50) - 10


def test_dr_event_applies_only_inside_its_window():
    snapshot = {
        "site.topology": [site(50.0)],
        "ocpp.active.sessions": [session(s) for s in "abc"],
        "utility.dr.signals": [
            {
                "site_id": "s1",
                "dr_event_id": "e1",
                "curtailment_pct": 40.0,
                "event_start": iso(NOW + timedelta(hours=1)),
                "event_end": iso(NOW + timedelta(hours=2)),
                "signal_at": iso(NOW),
            }
        ],
    }
    before = allocate(snapshot, NOW + timedelta(minutes=59))
    during = allocate(snapshot, NOW + timedelta(minutes=61))
    after = allocate(snapshot, NOW + timedelta(hours=2))
    assert sum(r["setpoint_kw"] for r in before.values()) == pytest.approx(50.0, abs=0.01)
    assert sum(r["setpoint_kw"] for r in during.values()) == pytest.approx(30.0, abs=0.01)
    assert {r["binding"] for r in during.values()} == {"dr"}
    assert sum(r["setpoint_kw"] for r in after.values()) == pytest.approx(50.0, abs=0.01)
    # computed_at never moves backwards across the DR boundaries.
    assert before["a"]["computed_at"] <= during["a"]["computed_at"] <= after["a"]["computed_at"]


def test_dr_limit_kw_and_a_cancelled_event():
    event = {
        "site_id": "s1",
        "dr_event_id": "e1",
        "limit_kw": 12.0,
        "event_start": iso(NOW - timedelta(hours=1)),
        "event_end": iso(NOW + timedelta(hours=1)),
        "signal_at": iso(NOW - timedelta(hours=2)),
    }
    snapshot = {
        "site.topology": [site(50.0)],
        "ocpp.active.sessions": [session("a"), session("b")],
        "utility.dr.signals": [event],
    }
    assert sum(r["setpoint_kw"] for r in allocate(snapshot).values()) == pytest.approx(12.0, abs=0.01)
    cancel = event | {"event_end": iso(NOW - timedelta(minutes=1)), "signal_at": iso(NOW - timedelta(minutes=1))}
    snapshot["utility.dr.signals"].append(cancel)
    assert sum(r["setpoint_kw"] for r in allocate(snapshot).values()) == pytest.approx(44.0, abs=0.01)


def test_price_tier_in_force_is_carried_on_the_setpoint():
    prices = [
        {
            "site_id": "s1",
            "price_per_kwh": 0.1,
            "price_tier": "OFF_PEAK",
            "valid_from": iso(NOW - timedelta(hours=1)),
            "valid_to": iso(NOW),
        },
        {
            "site_id": "s1",
            "price_per_kwh": 0.4,
            "price_tier": "CRITICAL_PEAK",
            "valid_from": iso(NOW),
            "valid_to": iso(NOW + timedelta(hours=1)),
        },
    ]
    out = allocate(
        {"site.topology": [site(50)], "ocpp.active.sessions": [session("a")], "tariff.price.signals": prices}
    )
    assert out["a"]["price_tier"] == "CRITICAL_PEAK"


def test_a_tariff_multiplier_set_as_a_parameter_shapes_flexible_sessions_without_a_migration():
    on_peak = [
        {
            "site_id": "s1",
            "price_per_kwh": 0.4,
            "price_tier": "ON_PEAK",
            "valid_from": iso(NOW - timedelta(hours=1)),
            "valid_to": iso(NOW + timedelta(hours=1)),
        }
    ]
    snapshot = {
        "site.topology": [site(50)],
        "ocpp.active.sessions": [session("a") | {"flexible": True}, session("b")],
        "tariff.price.signals": on_peak,
    }
    out = allocate(snapshot)
    assert (out["a"]["setpoint_kw"], out["a"]["binding"]) == (pytest.approx(11.0), "tariff")  # default 0.5 of 22
    param = {"name": "tariff.multiplier.ON_PEAK", "value": 0.25, "updated_at": iso(NOW)}
    out = allocate(snapshot | {"pipeline.params": [param]})
    assert out["a"]["setpoint_kw"] == pytest.approx(5.5) and out["b"]["setpoint_kw"] == pytest.approx(22.0)


def test_the_parameter_defaults_in_sql_are_the_contracts():
    from pipeline.contracts.topics import PARAMETERS
    from pipeline.engine.embedded import EmbeddedEngine

    engine = EmbeddedEngine()
    engine.evaluate(NOW)
    _, rows = engine.query("SELECT name, value, source, default_value, min_value, max_value FROM pipeline_settings")
    _, tiers = engine.query("SELECT price_tier, multiplier, source FROM tariff_multipliers")
    engine.close()
    assert {name: tuple(rest) for name, *rest in rows} == {
        name: (default, "default", default, low, high) for name, (default, low, high) in PARAMETERS.items()
    }
    assert {f"tariff.multiplier.{tier}": (value, source) for tier, value, source in tiers} == {
        name: (default, "default") for name, (default, _, _) in PARAMETERS.items() if name.startswith("tariff.")
    }


def test_sites_are_allocated_independently_and_unplaced_sessions_get_nothing():
    snapshot = {
        "site.topology": [site(10.0, "s1"), site(30.0, "s2")],
        "ocpp.active.sessions": [
            session("a", site_id="s1"),
            session("b", site_id="s2"),
            session("c", site_id="s2"),
            session("x", site_id="nowhere"),
        ],
    }
    out = allocate(snapshot)
    assert out["a"]["setpoint_kw"] == pytest.approx(10.0)
    assert out["b"]["setpoint_kw"] + out["c"]["setpoint_kw"] == pytest.approx(30.0, abs=0.01)
    assert "x" not in out


def test_setpoints_do_not_depend_on_the_evs_own_draw():
    base = {"site.topology": [site(30.0)], "ocpp.active.sessions": [session("a"), session("b")]}
    drawing = {
        "site.topology": base["site.topology"],
        "ocpp.active.sessions": [
            s | {"current_power_kw": kw, "sampled_at": iso(NOW)}
            for s, kw in zip(base["ocpp.active.sessions"], (0.0, 21.0), strict=False)
        ],
    }
    assert allocate(base) == allocate(drawing)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("not json", "not JSON"),
        ('{"nope.topic": []}', "unknown topic"),
        ('{"site.topology": [{"node_id": "s", "site_id": "s", "kind": "site", "limit_kw": -1}]}', "limit_kw"),
        ("{}", "the snapshot has no site.topology records"),
    ],
)
def test_bad_snapshots_get_a_one_line_error(stdin, message):
    result = CliRunner().invoke(main, ["allocate", "--input", "-"], input=stdin)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
