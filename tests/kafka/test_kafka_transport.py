"""The Kafka transport keeps the memory transport's contract on a real broker: keys, compaction, tombstones,
consumer groups that commit only what was handled, read_to_end, dead letters and the topic prefix."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.contracts.topics import TOPICS, SiteDemand, TopologyNode, dlq_topic
from pipeline.transport import decode_or_dead_letter, publish, publish_tombstone
from pipeline.transport.kafka import KafkaTransport
from tests.kits.kafka_broker import settings_for

pytestmark = pytest.mark.kafka

T0 = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def node(node_id: str, limit_kw: float = 22.0) -> TopologyNode:
    return TopologyNode(node_id=node_id, site_id="s1", parent_id="s1", kind="charger", limit_kw=limit_kw)


async def drain(consumer, want: int, timeout_s: float = 20.0):
    out = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(out) < want:
        assert asyncio.get_running_loop().time() < deadline, f"got {len(out)} of {want} records"
        out.extend(await consumer.getmany(timeout_s=0.5))
    return out


async def test_topics_are_created_prefixed_with_partitions_and_upsert_topics_compacted(kafka_broker):
    settings = settings_for(kafka_broker, partitions=3)
    transport = KafkaTransport(settings)
    await transport.start()
    try:
        assert await transport.ensure_topics() == []  # a second start creates nothing
        admin = AIOKafkaAdminClient(**settings.client_options())
        await admin.start()
        try:
            mine = {t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)}
            expected = {settings.topic_prefix + t for t in TOPICS} | {
                settings.topic_prefix + dlq_topic(t) for t in TOPICS
            }
            assert mine == expected
            described = await admin.describe_topics(sorted(expected))
            assert {d["topic"]: len(d["partitions"]) for d in described} == {t: 3 for t in expected}
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(expected)]
            )
            policies = {
                res[3]: dict((e[0], e[1]) for e in res[4])["cleanup.policy"] for r in responses for res in r.resources
            }
        finally:
            await admin.close()
        for topic, spec in TOPICS.items():
            assert policies[settings.topic_prefix + topic] == ("compact" if spec.kind == "upsert" else "delete")
            assert policies[settings.topic_prefix + dlq_topic(topic)] == "delete"
    finally:
        await transport.close()


async def test_keys_values_headers_and_tombstones_round_trip_under_logical_names(kafka_transport):
    await publish(kafka_transport, "site.topology", node("CP1"))
    await publish_tombstone(kafka_transport, "site.topology", "CP1")
    await kafka_transport.send("site.topology", "CP2", b"raw", headers=[("error", b"why")])
    consumer = await kafka_transport.consumer(["site.topology"], "g")
    try:
        records = await drain(consumer, 3)
    finally:
        await consumer.close()
    assert [(r.topic, r.key, r.offset) for r in records] == [
        ("site.topology", k, i) for i, k in enumerate(["CP1", "CP1", "CP2"])
    ]
    assert TopologyNode.model_validate_json(records[0].value) == node("CP1")
    assert records[1].value is None  # tombstone: null value
    assert records[2].headers == (("error", b"why"),)
    assert records[0].timestamp_ms > 0


async def test_a_key_always_lands_on_one_partition_in_order(kafka_broker):
    transport = KafkaTransport(settings_for(kafka_broker, partitions=3))
    await transport.start()
    try:
        for i in range(5):
            for site in ("s1", "s2", "s3", "s4"):
                await publish(
                    transport, "bems.site.demand", SiteDemand(site_id=site, current_demand_kw=float(i), measured_at=T0)
                )
        consumer = await transport.consumer(["bems.site.demand"], "g")
        records = await consumer.read_to_end()
        await consumer.close()
    finally:
        await transport.close()
    assert len(records) == 20
    by_key: dict[str, list] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(r)
    for site, recs in by_key.items():
        assert len({r.partition for r in recs}) == 1, site
        assert [SiteDemand.model_validate_json(r.value).current_demand_kw for r in recs] == [0, 1, 2, 3, 4]
    assert len({recs[0].partition for recs in by_key.values()}) > 1  # keys spread over partitions


async def test_group_resumes_after_its_last_commit_and_redelivers_the_rest(kafka_transport):
    for i in range(5):
        await publish(kafka_transport, "site.topology", node(f"CP{i}"))
    first = await kafka_transport.consumer(["site.topology"], "executor")
    got = await drain(first, 5)
    assert [r.key for r in got] == [f"CP{i}" for i in range(5)]
    assert first.positions() == {("site.topology", 0): 5}
    assert await first.end_offsets() == {("site.topology", 0): 5}
    await first.commit()
    for i in range(5, 8):
        await publish(kafka_transport, "site.topology", node(f"CP{i}"))
    assert [r.key for r in await drain(first, 3)] == ["CP5", "CP6", "CP7"]
    await first.close()  # crashed before handling CP5..CP7: no commit

    second = await kafka_transport.consumer(["site.topology"], "executor")
    assert second.positions() == {("site.topology", 0): 5}
    assert [r.key for r in await drain(second, 3)] == ["CP5", "CP6", "CP7"]
    await second.commit()
    await second.close()
    third = await kafka_transport.consumer(["site.topology"], "executor")
    assert third.positions() == {("site.topology", 0): 8}
    assert await third.getmany(timeout_s=0.5) == []
    await third.close()

    other = await kafka_transport.consumer(["site.topology"], "another-group")
    assert len(await other.read_to_end()) == 8  # a new group starts at the beginning
    await other.close()
    late = await kafka_transport.consumer(["site.topology"], "late", from_beginning=False)
    assert late.positions() == {("site.topology", 0): 8}
    await publish(kafka_transport, "site.topology", node("CP8"))
    assert [r.key for r in await drain(late, 1)] == ["CP8"]
    await late.close()


async def test_read_to_end_reads_exactly_to_the_end_offsets_seen_at_the_call(kafka_transport):
    for i in range(50):
        await publish(kafka_transport, "site.topology", node(f"CP{i % 7}", limit_kw=float(i + 1)))
    consumer = await kafka_transport.consumer(["site.topology", "ocpp.setpoint.commands"], "rebuild")
    try:
        records = await consumer.read_to_end(timeout_s=20)
        assert len(records) == 50
        assert (
            consumer.positions()
            == await consumer.end_offsets()
            == {("site.topology", 0): 50, ("ocpp.setpoint.commands", 0): 0}
        )
        assert await consumer.read_to_end() == []  # already at the end
    finally:
        await consumer.close()


async def test_malformed_record_is_dead_lettered_with_its_error_and_consumption_goes_on(kafka_transport):
    await kafka_transport.send("site.topology", "bad", b"{not json")
    await publish(kafka_transport, "site.topology", node("CP1"))
    consumer = await kafka_transport.consumer(["site.topology"], "g")
    handled = []
    for record in await drain(consumer, 2):
        ok, value = await decode_or_dead_letter(kafka_transport, record)
        if ok:
            handled.append(value)
    await consumer.commit()
    await consumer.close()
    assert handled == [node("CP1")]
    dlq = await kafka_transport.consumer([dlq_topic("site.topology")], "inspect")
    (dead,) = await dlq.read_to_end()
    await dlq.close()
    assert (dead.topic, dead.key, dead.value) == ("site.topology.dlq", "bad", b"{not json")
    headers = dict(dead.headers)
    assert headers["error"].startswith(b"not JSON") and headers["source.offset"] == b"0"


async def test_topic_prefixes_isolate_deployments_on_one_cluster(kafka_broker):
    a, b = KafkaTransport(settings_for(kafka_broker)), KafkaTransport(settings_for(kafka_broker))
    try:
        await publish(a, "site.topology", node("CP-A"))
        await publish(b, "site.topology", node("CP-B"))
        for transport, key in ((a, "CP-A"), (b, "CP-B")):
            consumer = await transport.consumer(["site.topology"], "executor")  # same logical group name
            assert [r.key for r in await consumer.read_to_end()] == [key]
            await consumer.close()
    finally:
        await a.close()
        await b.close()
