"""Charging-profile rules of the simulated charge point, as pure functions of time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.sim.profiles import CP_MAX, TX, TX_DEFAULT, Period, Profile, ProfileStore, period_kw
from pipeline.sim.v16 import parse_profile

T = datetime(2024, 6, 3, 0, 0, tzinfo=UTC)


def mk(
    pid=1,
    *,
    connector=1,
    stack=0,
    purpose=TX_DEFAULT,
    kind="Absolute",
    periods=((0, 16),),
    unit="A",
    start=None,
    duration=None,
    recurrency=None,
    valid_to=None,
    tx=None,
) -> Profile:
    raw = {
        "charging_profile_id": pid,
        "stack_level": stack,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": kind,
        "recurrency_kind": recurrency,
        "transaction_id": tx,
        "valid_to": valid_to.isoformat() if valid_to else None,
        "charging_schedule": {
            "charging_rate_unit": unit,
            "duration": duration,
            "start_schedule": start.isoformat().replace("+00:00", "Z") if start else None,
            "charging_schedule_period": [{"start_period": s, "limit": lim} for s, lim in periods],
        },
    }
    return parse_profile(connector, raw, received_at=T)


def test_absolute_periods_duration_and_next_change():
    p = mk(periods=((0, 16), (3600, 8)), start=T + timedelta(hours=1), duration=7200)
    assert p.period_at(T, None) is None  # not started
    assert p.period_at(T + timedelta(hours=1), None).limit == 16
    assert p.period_at(T + timedelta(hours=2, minutes=1), None).limit == 8
    assert p.period_at(T + timedelta(hours=3), None) is None  # duration over
    assert p.next_change(T, None) == T + timedelta(hours=1)
    assert p.next_change(T + timedelta(hours=1), None) == T + timedelta(hours=2)
    assert p.next_change(T + timedelta(hours=2), None) == T + timedelta(hours=3)
    assert p.next_change(T + timedelta(hours=3), None) is None


def test_relative_follows_transaction_start_and_recurring_repeats():
    rel = mk(kind="Relative", periods=((0, 6), (1800, 32)))
    tx_start = T + timedelta(hours=5)
    assert rel.period_at(tx_start + timedelta(minutes=10), tx_start).limit == 6
    assert rel.period_at(tx_start + timedelta(minutes=40), tx_start).limit == 32
    daily = mk(kind="Recurring", recurrency="Daily", start=T, periods=((0, 10), (18 * 3600, 6)))
    later = T + timedelta(days=3, hours=19)
    assert daily.period_at(later, None).limit == 6
    assert daily.next_change(later, None) == T + timedelta(days=4)


def test_store_stacking_replacement_and_clear():
    store = ProfileStore()
    store.install(mk(1, connector=0, stack=0, periods=((0, 32),)))
    store.install(mk(2, connector=1, stack=0, periods=((0, 16),)))
    assert store.connector_limit(1, T, None)[1].limit == 16  # connector default beats connector 0's
    assert store.connector_limit(2, T, None)[1].limit == 32
    store.install(mk(3, connector=1, stack=1, periods=((0, 10),), valid_to=T + timedelta(hours=1)))
    assert store.connector_limit(1, T, None)[1].limit == 10  # higher stack level wins while valid
    assert store.connector_limit(1, T + timedelta(hours=2), None)[1].limit == 16
    store.install(mk(4, connector=1, stack=1, periods=((0, 12),)))  # same purpose+stack: replaces id 3
    assert sorted(p.profile_id for p in store.profiles) == [1, 2, 4]
    store.install(mk(5, connector=1, stack=3, purpose=TX, periods=((0, 20),), tx=7))
    assert store.connector_limit(1, T, None)[1].limit == 20  # TxProfile over any default
    store.drop_tx(1, keep_transaction_id=8)
    assert store.in_force(TX, 1, T, None) is None
    assert store.clear(purpose=TX_DEFAULT, connector_id=1) == 2
    assert store.clear(profile_id=99) == 0
    assert store.in_force(CP_MAX, 0, T, None) is None


def test_period_kw():
    assert period_kw(Period(0, 16), "A", 3, 230) == 16 * 3 * 230 / 1000
    assert period_kw(Period(0, 16, 1), "A", 3, 230) == 16 * 230 / 1000
    assert period_kw(Period(0, 7400), "W", 3, 230) == 7.4
