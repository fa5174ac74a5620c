"""Every topic's decoder, fed anything: a valid record or a dead letter, never an exception.

A record that fails to decode for any reason (not JSON, a 5000-digit number past Python's int-string
limit, nesting past the recursion limit, NaN, infinities, numbers past their physical bounds, a wrong
shape) must become a :class:`~pipeline.contracts.topics.RecordError`, so the transports dead-letter it and handle
the rest of the batch.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.contracts.topics import TOPICS, RecordError, decode, dlq_topic
from pipeline.transport import MemoryTransport
from pipeline.transport.base import Record, decode_or_dead_letter

TOPIC_NAMES = sorted(TOPICS)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)

# Values shaped like the topics' records, with any field swapped for an arbitrary value: exercises the
# models' validators, not only the JSON parser.
FIELD_NAMES = sorted({name for spec in TOPICS.values() for name in spec.model.model_fields})
objects = st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=12)

# Raw texts that are known to break json.loads or int() in ways other than JSONDecodeError.
HOSTILE = [
    b'{"limit_kw": ' + b"9" * 5000 + b"}",  # ValueError: exceeds the limit for integer string conversion
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError
    b'{"limit_kw": 1e999}',
    b'{"limit_kw": NaN}',
    b'{"limit_kw": -Infinity}',
    b"\xff\xfe\x00",
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    b"",
]


def _check(topic: str, key: str | None, value: bytes | None) -> None:
    try:
        record = decode(topic, key, value)
    except RecordError:
        return
    assert record is None or isinstance(record, TOPICS[topic].model)


@pytest.mark.parametrize("topic", TOPIC_NAMES)
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_are_record_errors(topic, value):
    with pytest.raises(RecordError):
        decode(topic, "k", value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPIC_NAMES), key=st.none() | st.text(max_size=10), value=st.none() | st.binary())
def test_arbitrary_bytes_decode_or_raise_record_error(topic, key, value):
    _check(topic, key, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPIC_NAMES), key=st.none() | st.text(max_size=10), data=json_values | objects)
def test_arbitrary_json_decodes_or_raises_record_error(topic, key, data):
    _check(topic, key, json.dumps(data).encode())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPIC_NAMES), value=st.binary() | objects.map(lambda d: json.dumps(d).encode()))
def test_the_transport_path_returns_a_record_or_a_dead_letter(topic, value):
    async def run() -> None:
        transport = MemoryTransport()
        ok, _ = await decode_or_dead_letter(transport, Record(topic, "k", value, 7, 0))
        dead = transport.log(dlq_topic(topic))
        if ok:
            assert dead == []
        else:
            assert [(r.key, r.value) for r in dead] == [("k", value)]
            headers = dict(dead[0].headers)
            assert headers["error"] and headers["source.offset"] == b"7"

    asyncio.run(run())


@pytest.mark.parametrize("value", HOSTILE[:2], ids=["huge-int", "deep-nesting"])
async def test_hostile_values_are_dead_lettered_not_raised(value):
    transport = MemoryTransport()
    ok, model = await decode_or_dead_letter(transport, Record("bems.site.demand", "s1", value, 0, 0))
    assert (ok, model) == (False, None)
    assert [r.value for r in transport.log("bems.site.demand.dlq")] == [value]
