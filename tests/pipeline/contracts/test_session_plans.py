"""``session.plans``: a plan names one session or one charger, one need, and a departure after it was set."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.contracts.topics import SESSION_PLANS, RecordError, SessionPlan, decode, encode, plan_key

T = datetime(2024, 6, 3, 18, tzinfo=UTC)
BASE = {
    "plan_id": "charger:CP1",
    "charge_point_id": "CP1",
    "departure_at": (T + timedelta(hours=13)).isoformat(),
    "energy_needed_kwh": 30.0,
    "updated_at": T.isoformat(),
}


def _decode(value: dict, key: str | None = None):
    return decode(SESSION_PLANS, key, json.dumps(value).encode())


def test_a_charger_plan_and_a_session_plan_round_trip_under_their_keys():
    plan = _decode(BASE, "charger:CP1")
    assert isinstance(plan, SessionPlan) and plan.source == "operator"
    assert decode(SESSION_PLANS, "charger:CP1", encode(plan)) == plan
    soc = {
        "plan_id": "session:CP1-7",
        "session_id": "CP1-7",
        "departure_at": BASE["departure_at"],
        "target_soc_pct": 80,
        "battery_kwh": 60,
        "source": "driver",
        "updated_at": BASE["updated_at"],
    }
    assert _decode(soc, "session:CP1-7").target_soc_pct == 80
    assert plan_key("CP1-7", None) == "session:CP1-7" and plan_key(None, "CP1") == "charger:CP1"


def test_an_energy_plan_may_give_the_battery_so_the_plan_can_time_the_taper():
    assert _decode(BASE | {"battery_kwh": 60}).battery_kwh == 60


def test_a_tombstone_withdraws_a_plan():
    assert decode(SESSION_PLANS, "charger:CP1", None) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"session_id": "s1"}, "exactly one of session_id and charge_point_id"),
        ({"charge_point_id": None}, "exactly one of session_id and charge_point_id"),
        ({"plan_id": "CP1"}, "plan_id must be"),
        ({"plan_id": "session:CP1"}, "plan_id must be"),
        ({"target_soc_pct": 80, "battery_kwh": 60}, "exactly one of energy_needed_kwh and target_soc_pct"),
        ({"energy_needed_kwh": None}, "exactly one of energy_needed_kwh and target_soc_pct"),
        ({"energy_needed_kwh": None, "target_soc_pct": 80}, "target_soc_pct needs battery_kwh"),
        ({"departure_at": (T - timedelta(minutes=1)).isoformat()}, "the end must be after the start"),
        ({"departure_at": (T + timedelta(days=32)).isoformat()}, "longer than 31 days"),
        ({"energy_needed_kwh": -1}, "energy_needed_kwh"),
        ({"target_soc_pct": 101, "battery_kwh": 60, "energy_needed_kwh": None}, "target_soc_pct"),
        ({"source": "someone"}, "source"),
    ],
)
def test_a_bad_plan_is_a_record_error_naming_what_is_wrong(change, message):
    with pytest.raises(RecordError, match=message):
        _decode(BASE | change)


def test_the_key_must_match_the_plan_id():
    with pytest.raises(RecordError, match="does not match"):
        _decode(BASE, "charger:CP2")
