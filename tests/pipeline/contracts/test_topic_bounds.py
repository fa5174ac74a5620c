"""Numbers on every topic are finite and within a documented physical range.

``limit_kw: 1e999`` used to decode as infinity; the engine then published ``node_limit_kw: null`` and the
executor stopped limiting that breaker. NaN and infinities are refused on every numeric field of every
topic, and powers, currents, voltages, percentages, energies, prices and durations past their bounds
(:data:`pipeline.contracts.topics.BOUNDS`) are refused with the bound in the error.
"""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.contracts.topics import BOUNDS, TOPICS, RecordError, decode

T = datetime(2024, 6, 3, 12, tzinfo=UTC)


def iso(when: datetime) -> str:
    return when.isoformat()


VALID: dict[str, dict] = {
    "ocpp.active.sessions": dict(
        session_id="s",
        charge_point_id="CP1",
        connector_id=1,
        transaction_id="1",
        site_id="site",
        node_id="p",
        rated_power_kw=22.0,
        ev_max_power_kw=11.0,
        min_power_kw=1.4,
        phases=3,
        voltage_v=230.0,
        priority=0,
        weight=1.0,
        started_at=iso(T),
        current_power_kw=10.0,
        energy_kwh=3.0,
        soc_pct=50.0,
        sampled_at=iso(T),
    ),
    "bems.site.demand": dict(
        site_id="site", demand_limit_kw=100.0, current_demand_kw=40.0, ev_load_kw=10.0, measured_at=iso(T)
    ),
    "tariff.price.signals": dict(
        site_id="site", price_per_kwh=0.3, price_tier="ON_PEAK", valid_from=iso(T), valid_to=iso(T + timedelta(hours=1))
    ),
    "utility.dr.signals": dict(
        site_id="site",
        dr_event_id="e",
        limit_kw=50.0,
        event_start=iso(T),
        event_end=iso(T + timedelta(hours=2)),
        signal_at=iso(T),
    ),
    "site.topology": dict(
        node_id="site", site_id="site", kind="site", limit_kw=100.0, phases=3, voltage_v=230.0, connectors=1
    ),
    "control.rules": dict(
        rule_id="operator:charger:CP1",
        source="operator",
        scope="charger",
        scope_id="CP1",
        action="cap",
        limit_kw=7.0,
        created_at=iso(T),
    ),
    "ocpp.setpoint.commands": dict(
        session_id="s",
        charge_point_id="CP1",
        connector_id=1,
        transaction_id="1",
        site_id="site",
        node_id="p",
        setpoint_kw=11.0,
        setpoint_a=15.9,
        phases=3,
        voltage_v=230.0,
        node_limit_kw=40.0,
        site_limit_kw=80.0,
        binding="cap",
        computed_at=iso(T),
        next_change_at=iso(T + timedelta(minutes=30)),
        next_setpoint_kw=5.0,
        next_setpoint_a=7.2,
    ),
    "ocpp.setpoint.acks": dict(
        charge_point_id="CP1",
        connector_id=1,
        setpoint_kw=11.0,
        limit=16.0,
        charging_rate_unit="A",
        status="Accepted",
        sent_at=iso(T),
    ),
    "pipeline.params": dict(name="tariff.multiplier.ON_PEAK", value=0.3, updated_at=iso(T)),
    "session.plans": dict(
        plan_id="session:s",
        session_id="s",
        departure_at=iso(T + timedelta(hours=8)),
        energy_needed_kwh=30.0,
        source="operator",
        updated_at=iso(T),
    ),
    "ocpp.transaction.events": dict(
        event_id="s:ended",
        event_type="ended",
        session_id="s",
        charge_point_id="CP1",
        connector_id=1,
        transaction_id="1",
        site_id="site",
        started_at=iso(T),
        ended_at=iso(T + timedelta(hours=1)),
        meter_start_kwh=1200.0,
        meter_stop_kwh=1211.0,
        energy_kwh=11.0,
        peak_power_kw=11.0,
        reason="EVDisconnected",
        recorded_at=iso(T + timedelta(hours=1)),
    ),
    "pipeline.alerts": dict(
        alert_id="node_over_limit:p",
        kind="node_over_limit",
        severity="critical",
        subject_id="p",
        value_kw=55.0,
        limit_kw=50.0,
        message="over",
    ),
}


def _numeric_fields(topic: str) -> list[str]:
    model = TOPICS[topic].model
    out = []
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation) or (field.annotation,)
        if any(a in (int, float) for a in args) and name in VALID[topic]:
            out.append(name)
    return out


CASES = [(topic, name) for topic in sorted(TOPICS) for name in _numeric_fields(topic)]


def test_every_topic_has_a_valid_example():
    assert set(VALID) == set(TOPICS)
    for topic, value in VALID.items():
        assert decode(topic, None, json.dumps(value).encode()) is not None


@pytest.mark.parametrize(("topic", "name"), CASES, ids=[f"{t}.{n}" for t, n in CASES])
@pytest.mark.parametrize("text", ["1e999", "-1e999", "1e308000"])
def test_infinities_are_refused_on_every_numeric_field(topic, name, text):
    raw = json.dumps(VALID[topic]).replace(f'"{name}": {json.dumps(VALID[topic][name])}', f'"{name}": {text}')
    assert text in raw
    with pytest.raises(RecordError):
        decode(topic, None, raw.encode())


@pytest.mark.parametrize(("topic", "name"), CASES, ids=[f"{t}.{n}" for t, n in CASES])
def test_nan_and_infinity_are_refused_when_built_in_python_too(topic, name):
    model = TOPICS[topic].model
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            model.model_validate({**VALID[topic], name: bad})


@pytest.mark.parametrize(("topic", "name"), CASES, ids=[f"{t}.{n}" for t, n in CASES])
def test_every_numeric_field_has_a_finite_upper_bound(topic, name):
    with pytest.raises(RecordError, match="less than or equal"):
        decode(topic, None, json.dumps({**VALID[topic], name: 10**12}).encode())


@pytest.mark.parametrize(
    ("topic", "field", "value"),
    [
        ("site.topology", "limit_kw", BOUNDS["site_kw"] * 1.01),  # above 100 MW is a mistake, not a breaker
        ("ocpp.active.sessions", "rated_power_kw", BOUNDS["charger_kw"] * 1.01),
        ("ocpp.active.sessions", "voltage_v", BOUNDS["voltage_v"] * 1.01),
        ("ocpp.setpoint.commands", "setpoint_a", BOUNDS["current_a"] * 1.01),
        ("ocpp.active.sessions", "connector_id", 10**6),
    ],
)
def test_the_documented_bounds_hold(topic, field, value):
    with pytest.raises(RecordError, match=field):
        decode(topic, None, json.dumps({**VALID[topic], field: value}).encode())


@pytest.mark.parametrize(
    ("topic", "start", "end", "days"),
    [
        ("utility.dr.signals", "event_start", "event_end", BOUNDS["dr_event_days"]),
        ("tariff.price.signals", "valid_from", "valid_to", BOUNDS["price_slot_days"]),
        ("session.plans", "updated_at", "departure_at", BOUNDS["plan_days"]),
    ],
)
def test_windows_longer_than_their_bound_are_refused(topic, start, end, days):
    value = {**VALID[topic], start: iso(T), end: iso(T + timedelta(days=days, seconds=1))}
    with pytest.raises(RecordError, match="longer than"):
        decode(topic, None, json.dumps(value).encode())


def test_timestamps_outside_the_supported_years_are_refused():
    with pytest.raises(RecordError, match="year"):
        decode(
            "bems.site.demand",
            None,
            json.dumps({**VALID["bems.site.demand"], "measured_at": "9999-12-31T00:00:00Z"}).encode(),
        )


NEXT = {"next_change_at": iso(T + timedelta(minutes=30)), "next_setpoint_kw": 5.0, "next_setpoint_a": 7.2}


@pytest.mark.parametrize("missing", sorted(NEXT))
def test_a_setpoint_next_period_comes_whole_or_not_at_all(missing):
    value = {k: v for k, v in VALID["ocpp.setpoint.commands"].items() if k != missing}
    with pytest.raises(RecordError, match="set together"):
        decode("ocpp.setpoint.commands", None, json.dumps(value).encode())
    flat = {k: v for k, v in VALID["ocpp.setpoint.commands"].items() if k not in NEXT}
    command = decode("ocpp.setpoint.commands", None, json.dumps(flat).encode())
    assert (command.next_change_at, command.next_setpoint_kw, command.next_setpoint_a) == (None, None, None)


@pytest.mark.parametrize(("field", "value"), [("next_setpoint_kw", 11.5), ("next_setpoint_a", 16.0)])
def test_a_setpoint_next_period_is_only_ever_a_decrease(field, value):
    with pytest.raises(RecordError, match="only a decrease"):
        decode("ocpp.setpoint.commands", None, json.dumps({**VALID["ocpp.setpoint.commands"], field: value}).encode())


def test_a_setpoint_next_change_is_normalised_to_utc():
    value = {**VALID["ocpp.setpoint.commands"], "next_change_at": "2024-06-03T14:30:00+02:00"}
    command = decode("ocpp.setpoint.commands", None, json.dumps(value).encode())
    assert command.next_change_at == T + timedelta(minutes=30) and command.next_change_at.tzinfo == UTC
