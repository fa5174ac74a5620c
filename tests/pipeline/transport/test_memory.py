"""The memory transport keeps the topic contract: keys, JSON values, tombstones, consumer groups."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.contracts.topics import SiteDemand, TopologyNode, decode
from pipeline.transport import MemoryTransport, decode_or_dead_letter, publish, publish_tombstone

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)


async def test_records_are_keyed_by_the_entity_id_and_carry_json():
    t = MemoryTransport()
    await publish(t, "bems.site.demand", SiteDemand(site_id="s1", current_demand_kw=5, measured_at=NOW))
    (rec,) = t.log("bems.site.demand")
    assert rec.key == "s1"
    assert rec.value == (
        b'{"site_id":"s1","demand_limit_kw":null,"current_demand_kw":5.0,"ev_load_kw":0.0,'
        b'"measured_at":"2024-06-03T12:00:00Z"}'
    )
    assert decode("bems.site.demand", rec.key, rec.value) == SiteDemand(
        site_id="s1", current_demand_kw=5, measured_at=NOW
    )


async def test_tombstones_delete_keys_of_upsert_topics_only():
    t = MemoryTransport()
    node = TopologyNode(node_id="n1", site_id="s1", kind="site", limit_kw=10)
    await publish(t, "site.topology", node)
    await publish_tombstone(t, "site.topology", "n1")
    assert t.latest("site.topology") == {}
    assert t.log("site.topology")[-1].value is None
    with pytest.raises(ValueError):
        await publish_tombstone(t, "bems.site.demand", "s1")


async def test_a_record_without_a_key_has_no_place_in_the_compacted_view():
    t = MemoryTransport()
    await t.send("site.topology", "n1", b"{}")
    await t.send("site.topology", None, b"{}")
    assert t.latest("site.topology") == {"n1": b"{}"}
    assert len(t.log("site.topology")) == 2


async def test_a_group_resumes_from_its_committed_offset():
    t = MemoryTransport()
    for kw in (1, 2, 3):
        await publish(t, "bems.site.demand", SiteDemand(site_id="s1", current_demand_kw=kw, measured_at=NOW))
    c = await t.consumer(["bems.site.demand"], "g")
    first = await c.getmany(max_records=2)
    await c.commit()
    await c.close()
    c2 = await t.consumer(["bems.site.demand"], "g")
    rest = await c2.getmany(timeout_s=0.1)
    assert [r.offset for r in first] == [0, 1]
    assert [r.offset for r in rest] == [2]
    assert t.lag() == 1  # c2 has not committed yet
    await c2.commit()
    assert t.lag() == 0


async def test_read_to_end_and_waiting_for_new_records():
    t = MemoryTransport()
    c = await t.consumer(["site.topology"], "g")
    assert await c.read_to_end() == []
    assert await c.getmany(timeout_s=0.05) == []
    await publish(t, "site.topology", TopologyNode(node_id="n", site_id="s", kind="site", limit_kw=1))
    assert len(await c.getmany(timeout_s=1)) == 1


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"site_id": "s1", "current_demand_kw": -1, "measured_at": "2024-06-03T12:00:00Z"}', "current_demand_kw"),
        (b'{"site_id": "s2", "current_demand_kw": 1, "measured_at": "2024-06-03T12:00:00Z"}', "does not match"),
    ],
)
async def test_bad_records_go_to_the_dead_letter_topic_unchanged(value, error):
    t = MemoryTransport()
    await t.send("bems.site.demand", "s1", value)
    (rec,) = t.log("bems.site.demand")
    ok, model = await decode_or_dead_letter(t, rec)
    assert (ok, model) == (False, None)
    (dead,) = t.log("bems.site.demand.dlq")
    assert dead.value == value and dead.key == "s1"
    headers = dict(dead.headers)
    assert error in headers["error"].decode()
    assert headers["source.topic"] == b"bems.site.demand"
