"""session_next_period on the embedded engine: the next known decrease rides on every setpoint command.

A DR event, a cap or pause rule, or a dearer tariff slot that starts within the horizon (3600 s) gives the
session's command ``next_change_at`` and a lower ``next_setpoint_kw`` / ``next_setpoint_a``, computed so
that the value is safe on its own; increases and changes past the horizon are not scheduled.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from pipeline.contracts.topics import ActiveSession, ControlRule, DRSignal, PriceSignal, SiteDemand, TopologyNode
from pipeline.engine.embedded import EmbeddedEngine

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)
T = NOW + timedelta(minutes=30)
SITE = TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=30)
PANEL = TopologyNode(node_id="p1", site_id="s1", parent_id="s1", kind="panel", limit_kw=30)


def session(sid: str, node: str = "s1", **kw) -> ActiveSession:
    return ActiveSession(
        session_id=sid,
        charge_point_id=f"CP-{sid}",
        connector_id=1,
        transaction_id=sid,
        site_id="s1",
        node_id=node,
        rated_power_kw=22,
        started_at=NOW - timedelta(hours=1),
        **({"sampled_at": NOW} | kw),
    )


def dr(start: datetime, end: datetime | None = None, **kw) -> DRSignal:
    return DRSignal(
        site_id="s1",
        dr_event_id=kw.pop("dr_event_id", "e1"),
        event_start=start,
        event_end=end or start + timedelta(hours=2),
        signal_at=NOW,
        **kw,
    )


def engine(*records) -> EmbeddedEngine:
    e = EmbeddedEngine()
    e.apply([("site.topology", "s1", SITE), *records])
    return e


def commands(e: EmbeddedEngine, at: datetime) -> dict[str, dict]:
    """Every session's setpoint and next period at ``at``, as the sink joins them."""
    e.evaluate(at)
    cols, sink = e.query(
        "SELECT s.session_id, s.setpoint_kw, s.setpoint_a, n.next_change_at, n.next_setpoint_kw, n.next_setpoint_a "
        "FROM session_setpoints AS s LEFT JOIN session_next_period AS n ON n.session_id = s.session_id"
    )
    return {r[0]: dict(zip(cols, r, strict=True)) for r in sink}


def nexts(e: EmbeddedEngine, at: datetime) -> dict[str, tuple]:
    out = {}
    for sid, row in sorted(commands(e, at).items()):
        when = row["next_change_at"]
        out[sid] = None if when is None else (when.astimezone(UTC), row["next_setpoint_kw"], row["next_setpoint_a"])
    return out


def test_a_dr_event_ahead_scales_every_session_of_the_site_and_rides_on_the_sink():
    e = engine(
        ("ocpp.active.sessions", "a", session("a")),
        ("ocpp.active.sessions", "b", session("b")),
        ("utility.dr.signals", "s1", dr(T, limit_kw=10)),
    )
    changes = [c for c in e.evaluate(NOW) if c.topic == "ocpp.setpoint.commands"]
    values = {c.key: json.loads(c.value) for c in changes}
    # 15 kW each now; at T the site may take 10 kW: both scaled by 10/30 to 5 kW (above the 4.14 kW floor)
    assert values["a"]["setpoint_kw"] == 15.0
    assert values["a"]["next_change_at"] == "2024-06-03T12:30:00Z"
    assert values["a"]["next_setpoint_kw"] == 5.0
    assert values["a"]["next_setpoint_a"] == 7.2  # 21.7 A x 5/15, rounded down
    assert values["b"]["next_setpoint_kw"] == 5.0
    # at T the event is in force: the exact allocation takes over and nothing more is ahead
    e.apply([("ocpp.active.sessions", s, session(s, sampled_at=T)) for s in "ab"])
    after = commands(e, T + timedelta(seconds=1))
    assert {s: (r["setpoint_kw"], r["next_change_at"]) for s, r in after.items()} == {
        "a": (5.0, None),
        "b": (5.0, None),
    }


def test_a_scaled_value_below_the_floor_is_zero_and_the_building_load_counts():
    e = engine(
        ("ocpp.active.sessions", "a", session("a")),
        ("ocpp.active.sessions", "b", session("b")),
        ("bems.site.demand", "s1", SiteDemand(site_id="s1", current_demand_kw=34, ev_load_kw=30, measured_at=NOW)),
        ("utility.dr.signals", "s1", dr(T, limit_kw=10)),
    )
    # now: 30 - 4 kW building = 26 kW, 13 kW each; at T: (10 - 4) / 26 x 13 = 3 kW, below the 4.14 kW floor
    assert nexts(e, NOW) == {"a": (T, 0.0, 0.0), "b": (T, 0.0, 0.0)}


def test_a_curtailment_ahead_applies_to_the_site_limit():
    e = engine(("ocpp.active.sessions", "a", session("a")), ("utility.dr.signals", "s1", dr(T, curtailment_pct=50)))
    # 22 kW (31.8 A) now, its rating; at T the site may take 15 kW: 31.8 A x 15/22, rounded down
    assert nexts(e, NOW) == {"a": (T, 15.0, 21.6)}


def test_only_the_horizon_is_scheduled_and_a_dr_event_enters_it_on_time():
    far = NOW + timedelta(hours=2)
    e = engine(("ocpp.active.sessions", "a", session("a")), ("utility.dr.signals", "s1", dr(far, limit_kw=10)))
    assert nexts(e, NOW) == {"a": None}
    assert e.next_boundary() is not None and e.next_boundary() <= far - timedelta(hours=1) + timedelta(seconds=1)
    e.apply([("ocpp.active.sessions", "a", session("a", sampled_at=far - timedelta(minutes=59)))])
    assert nexts(e, far - timedelta(minutes=59)) == {"a": (far, 10.0, 14.4)}


def test_no_increase_is_scheduled():
    e = engine(
        ("ocpp.active.sessions", "a", session("a")),
        ("utility.dr.signals", "s1", dr(NOW - timedelta(minutes=5), T, limit_kw=10)),  # ends at T: a raise
        ("utility.dr.signals", "s1", dr(T + timedelta(minutes=10), dr_event_id="e2", limit_kw=20)),  # above 10
    )
    assert commands(e, NOW)["a"]["setpoint_kw"] == 10.0
    assert nexts(e, NOW) == {"a": None}


def test_the_earliest_decrease_wins_and_rules_apply_to_their_scope():
    e = engine(
        ("site.topology", "p1", PANEL),
        ("ocpp.active.sessions", "a", session("a", node="p1")),
        ("ocpp.active.sessions", "b", session("b")),
        (
            "control.rules",
            "operator:session:a",
            ControlRule(
                rule_id="operator:session:a",
                source="operator",
                scope="session",
                scope_id="a",
                action="cap",
                limit_kw=8,
                valid_from=T,
                created_at=NOW,
            ),
        ),
        (
            "control.rules",
            "operator:node:p1",
            ControlRule(
                rule_id="operator:node:p1",
                source="operator",
                scope="node",
                scope_id="p1",
                action="pause",
                valid_from=T + timedelta(minutes=5),
                created_at=NOW,
            ),
        ),
        (
            "control.rules",
            "utility:site:s1",
            ControlRule(
                rule_id="utility:site:s1",
                source="utility",
                scope="site",
                scope_id="s1",
                action="cap",
                limit_kw=20,
                valid_from=T + timedelta(minutes=10),
                created_at=NOW,
            ),
        ),
    )
    # a: the session cap at T comes before the panel's pause; b: the site cap (30 -> 20 kW) scales it
    assert nexts(e, NOW) == {"a": (T, 8.0, 11.5), "b": (T + timedelta(minutes=10), 10.0, 14.4)}


def test_a_dearer_tariff_slot_ahead_scales_flexible_sessions_only():
    slot = PriceSignal(site_id="s1", price_per_kwh=0.1, price_tier="OFF_PEAK", valid_from=NOW, valid_to=T)
    peak = PriceSignal(
        site_id="s1", price_per_kwh=0.4, price_tier="ON_PEAK", valid_from=T, valid_to=T + timedelta(hours=1)
    )
    e = engine(
        ("ocpp.active.sessions", "a", session("a", flexible=True)),
        ("ocpp.active.sessions", "b", session("b")),
        ("tariff.price.signals", "s1", slot),
        ("tariff.price.signals", "s1", peak),
    )
    # a: cap 22 kW now (OFF_PEAK 1.0); ON_PEAK 0.5 makes it 11 kW; b is not flexible
    assert nexts(e, NOW) == {"a": (T, 11.0, 15.9), "b": None}


def override(sid: str, kw: float) -> tuple:
    rule = ControlRule(
        rule_id=f"operator:session:{sid}",
        source="operator",
        scope="session",
        scope_id=sid,
        action="override",
        limit_kw=kw,
        created_at=NOW,
    )
    return ("control.rules", rule.rule_id, rule)


def test_sessions_an_override_runs_keep_their_share_first_as_admission_would():
    e = engine(
        ("ocpp.active.sessions", "a", session("a")),
        ("ocpp.active.sessions", "b", session("b")),
        override("a", 11),
        ("utility.dr.signals", "s1", dr(T, limit_kw=12)),
        ("utility.dr.signals", "s1", dr(T + timedelta(minutes=5), dr_event_id="e2", limit_kw=8)),
    )
    now = commands(e, NOW)
    assert (now["a"]["setpoint_kw"], now["b"]["setpoint_kw"]) == (11.0, 19.0)
    # at T 12 kW: a keeps its 11 kW, b gets the 1 kW left, below its floor: 0 (the allocation at T)
    assert nexts(e, NOW) == {"a": (T + timedelta(minutes=5), 0.0, 0.0), "b": (T, 0.0, 0.0)}
    e.apply([("ocpp.active.sessions", s, session(s, sampled_at=T)) for s in "ab"])
    at_t = commands(e, T + timedelta(seconds=1))
    assert (at_t["a"]["setpoint_kw"], at_t["b"]["setpoint_kw"]) == (11.0, 0.0)  # the engine agrees at T
