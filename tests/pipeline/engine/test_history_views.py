"""session_history, charger_daily_energy and the alerts' tunables, on the embedded engine.

The history views read ``ocpp.transaction.events`` (and ``tariff.price.signals`` for the cost); the alert
thresholds come from ``pipeline.params`` through ``pipeline_settings``, and a ``clock_skew`` alert compares
a session's ``sampled_at`` (the executor's receipt) with ``charger_sampled_at`` (the charger's clock).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.contracts.topics import Parameter, PriceSignal, TopologyNode, TransactionEvent
from pipeline.engine.embedded import EmbeddedEngine
from tests.pipeline.engine.test_embedded import session

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)
SITE = TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=30)


def event(kind: str, sid: str = "CP1-7", **kw) -> TransactionEvent:
    started = kw.pop("started_at", NOW - timedelta(hours=2))
    values = dict(
        event_id=f"{sid}:{kind}",
        event_type=kind,
        session_id=sid,
        charge_point_id=sid.split("-")[0],
        connector_id=1,
        transaction_id=sid.split("-")[1],
        site_id="s1",
        started_at=started,
        meter_start_kwh=100.0,
        recorded_at=NOW,
    )
    return TransactionEvent(**(values | kw))


def price(start_h: int, end_h: int, per_kwh: float, tier: str = "ON_PEAK") -> PriceSignal:
    return PriceSignal(
        site_id="s1",
        price_per_kwh=per_kwh,
        price_tier=tier,
        valid_from=NOW + timedelta(hours=start_h),
        valid_to=NOW + timedelta(hours=end_h),
    )


def rows(engine: EmbeddedEngine, sql: str) -> list[dict]:
    cols, data = engine.query(sql)
    return [dict(zip(cols, r, strict=True)) for r in data]


def test_a_session_gets_energy_duration_peak_reason_and_cost_from_the_slots_it_spans():
    e = EmbeddedEngine()
    ended = dict(
        ended_at=NOW,
        meter_stop_kwh=120.0,
        energy_kwh=20.0,
        peak_power_kw=11.0,
        reason="EVDisconnected",
        binding="cap",
    )
    e.apply(
        [
            ("site.topology", "s1", SITE),
            ("tariff.price.signals", "s1", price(-3, -1, 0.20)),  # the first half of the session
            ("tariff.price.signals", "s1", price(-1, 1, 0.40)),  # the second half
            ("ocpp.transaction.events", "CP1-7", event("started")),
            ("ocpp.transaction.events", "CP1-7", event("ended", **ended)),
            ("ocpp.transaction.events", "CP1-7", event("ended", **ended)),  # delivered twice: no change
            ("ocpp.transaction.events", "CP2-8", event("started", "CP2-8", started_at=NOW - timedelta(minutes=5))),
        ]
    )
    e.evaluate(NOW)
    history = {r["session_id"]: r for r in rows(e, "SELECT * FROM session_history")}
    done = history["CP1-7"]
    assert (done["charge_point_id"], done["site_id"], done["duration_s"]) == ("CP1", "s1", 7200)
    assert (done["energy_kwh"], done["peak_power_kw"], done["stop_reason"], done["binding"]) == (
        20.0,
        11.0,
        "EVDisconnected",
        "cap",
    )
    assert done["cost"] == pytest.approx(10 * 0.20 + 10 * 0.40)
    assert (done["currency"], done["priced_share"]) == ("EUR", pytest.approx(1.0))
    running = history["CP2-8"]
    assert [running[k] for k in ("ended_at", "duration_s", "energy_kwh", "cost")] == [None] * 4
    daily = rows(e, "SELECT * FROM charger_daily_energy")
    assert [(r["charge_point_id"], str(r["day_utc"]), r["sessions"], r["energy_kwh"]) for r in daily] == [
        ("CP1", "2024-06-03", 1, 20.0)
    ]
    e.close()


def test_a_later_starting_slot_is_in_force_from_its_start_and_unpriced_time_counts_nothing():
    e = EmbeddedEngine()
    e.apply(
        [
            ("tariff.price.signals", "s1", price(-4, 4, 0.10)),  # a long slot ...
            ("tariff.price.signals", "s1", price(-1, 0, 0.50)),  # ... overridden for the last hour
            ("ocpp.transaction.events", "CP1-7", event("ended", ended_at=NOW, energy_kwh=10.0)),
        ]
    )
    e.evaluate(NOW)
    [row] = rows(e, "SELECT cost, priced_share FROM session_history")
    assert row["cost"] == pytest.approx(5 * 0.10 + 5 * 0.50)
    e.close()


def alerts(changes) -> dict[str, dict]:
    return {c.key: json.loads(c.value) for c in changes if c.topic == "pipeline.alerts" and c.value is not None}


def param(name: str, value: float) -> tuple[str, str, Parameter]:
    return ("pipeline.params", name, Parameter(name=name, value=value, updated_at=NOW))


def test_clock_skew_alert_fires_past_its_parameter_threshold():
    e = EmbeddedEngine()
    skewed = session("a", charger_sampled_at=NOW - timedelta(seconds=90))
    fine = session("b", charger_sampled_at=NOW - timedelta(seconds=2))
    e.apply([("site.topology", "s1", SITE), ("ocpp.active.sessions", "a", skewed), ("ocpp.active.sessions", "b", fine)])
    found = alerts(e.evaluate(NOW))
    assert "clock_skew:CP-a" in found and "clock_skew:CP-b" not in found
    assert (found["clock_skew:CP-a"]["severity"], found["clock_skew:CP-a"]["subject_id"]) == ("warning", "CP-a")
    e.apply([param("alert.clock_skew.threshold_s", 120)])
    out = e.evaluate(NOW + timedelta(seconds=1))
    assert ("pipeline.alerts", "clock_skew:CP-a", None) in [(c.topic, c.key, c.value) for c in out]
    e.close()


def test_alert_margins_are_parameters():
    e = EmbeddedEngine()
    # 30 kW site, one session set to 22 kW (its rating) drawing 23.5 kW: 1.5 kW over, 6.8 % over.
    drawing = session("a", current_power_kw=23.5, sampled_at=NOW + timedelta(minutes=2))
    e.apply([("site.topology", "s1", SITE), ("ocpp.active.sessions", "a", session("a"))])
    e.evaluate(NOW)
    e.apply([("ocpp.active.sessions", "a", drawing)])
    assert "setpoint_deviation:a" not in alerts(e.evaluate(NOW + timedelta(minutes=2)))  # needs > 10 %
    e.apply([param("alert.setpoint_deviation.margin_share", 0.05)])
    assert "setpoint_deviation:a" in alerts(e.evaluate(NOW + timedelta(minutes=2, seconds=1)))
    e.apply([param("alert.setpoint_deviation.margin_kw", 2.0)])
    out = e.evaluate(NOW + timedelta(minutes=2, seconds=2))
    assert ("setpoint_deviation:a", None) in [(c.key, c.value) for c in out]
    # The breaker: 23.5 kW under a 30 kW site is fine until the margin is negative ... which it cannot be;
    # a 20 kW limit with a 5 kW margin is not over, with the default 0.5 kW it is.
    e.apply([("site.topology", "s1", TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=20))])
    assert "node_over_limit:s1" in alerts(e.evaluate(NOW + timedelta(minutes=2, seconds=3)))
    e.apply([param("alert.node_over_limit.margin_kw", 5.0)])
    out = e.evaluate(NOW + timedelta(minutes=2, seconds=4))
    assert ("node_over_limit:s1", None) in [(c.key, c.value) for c in out]
    e.close()


def test_the_deviation_delay_is_a_parameter():
    e = EmbeddedEngine()
    fresh = session("a").model_copy(update={"started_at": NOW})  # its setpoint is computed at NOW
    e.apply([("site.topology", "s1", SITE), ("ocpp.active.sessions", "a", fresh)])
    e.evaluate(NOW)
    # 30 s after the setpoint, 5 kW over: not yet a deviation with the default 60 s delay
    drawing = fresh.model_copy(update={"current_power_kw": 27.0, "sampled_at": NOW + timedelta(seconds=30)})
    e.apply([("ocpp.active.sessions", "a", drawing)])
    assert "setpoint_deviation:a" not in alerts(e.evaluate(NOW + timedelta(seconds=30)))
    e.apply([param("alert.setpoint_deviation.delay_s", 20)])
    assert "setpoint_deviation:a" in alerts(e.evaluate(NOW + timedelta(seconds=31)))
    e.close()
