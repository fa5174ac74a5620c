"""The contracts added for history and tunables: ``ocpp.transaction.events`` and per-parameter bounds.

Every parameter has bounds of its own (a kW margin is not a share), the topic's ``name`` Literal lists
exactly :data:`pipeline.contracts.topics.PARAMETERS`, and a transaction event's id and end are consistent.
"""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.contracts.topics import (
    PARAMETERS,
    PARAMS,
    TOPICS,
    TRANSACTION_EVENTS,
    ParameterName,
    RecordError,
    TransactionEvent,
    decode,
)

T = datetime(2024, 6, 3, 12, tzinfo=UTC)


def _param(name: str, value: float) -> bytes:
    return json.dumps({"name": name, "value": value, "updated_at": T.isoformat()}).encode()


def test_the_name_literal_is_the_parameter_table():
    assert set(typing.get_args(ParameterName)) == set(PARAMETERS)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_each_parameter_takes_its_bounds_and_refuses_past_them(name):
    default, low, high = PARAMETERS[name]
    assert low <= default <= high
    for value in (low, default, high):
        assert decode(PARAMS, name, _param(name, value)).value == value
    for value in (low - 0.5, high + 0.5):
        with pytest.raises(RecordError, match=f"between {low:g} and {high:g}|than or equal"):
            decode(PARAMS, name, _param(name, value))


def test_a_margin_in_kw_is_not_held_to_a_share():
    assert decode(PARAMS, None, _param("alert.node_over_limit.margin_kw", 5.0)).value == 5.0
    assert decode(PARAMS, None, _param("alert.clock_skew.threshold_s", 300.0)).value == 300.0
    with pytest.raises(RecordError, match="between 0 and 1"):
        decode(PARAMS, None, _param("tariff.multiplier.ON_PEAK", 5.0))


def _event(**changes) -> dict:
    value = dict(
        event_id="CP1-7:started",
        event_type="started",
        session_id="CP1-7",
        charge_point_id="CP1",
        connector_id=1,
        transaction_id="7",
        started_at=T.isoformat(),
        meter_start_kwh=1200.0,
        recorded_at=T.isoformat(),
    )
    return value | changes


def test_transaction_events_are_an_append_topic_keyed_by_session():
    spec = TOPICS[TRANSACTION_EVENTS]
    assert (spec.kind, spec.key, spec.model) == ("append", "session_id", TransactionEvent)
    record = decode(TRANSACTION_EVENTS, "CP1-7", json.dumps(_event()).encode())
    assert isinstance(record, TransactionEvent) and record.meter_start_kwh == 1200.0
    with pytest.raises(RecordError, match="tombstone"):
        decode(TRANSACTION_EVENTS, "CP1-7", None)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        (dict(event_id="CP1-7:ended"), "event_id"),
        (dict(event_type="ended", event_id="CP1-7:ended"), "ended_at is required"),
        (dict(ended_at=(T + timedelta(hours=1)).isoformat()), "not allowed for a started"),
        (dict(meter_start_kwh=-1.0), "greater than or equal"),
        (dict(reason="x" * 65), "at most 64"),
    ],
)
def test_inconsistent_transaction_events_are_refused(changes, error):
    with pytest.raises(RecordError, match=error):
        decode(TRANSACTION_EVENTS, None, json.dumps(_event(**changes)).encode())
