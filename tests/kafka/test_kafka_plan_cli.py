"""``pipeline plan set|clear --transport kafka``: straight to the broker, checked against site.topology."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.contracts.topics import SESSION_PLANS, SITE_TOPOLOGY, TopologyNode
from pipeline.transport.base import publish

pytestmark = pytest.mark.kafka


async def test_plan_set_and_clear_publish_straight_to_kafka(kafka_settings, kafka_transport):
    await publish(kafka_transport, SITE_TOPOLOGY, TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=30))
    await publish(
        kafka_transport,
        SITE_TOPOLOGY,
        TopologyNode(node_id="CP1", site_id="s1", parent_id="s1", kind="charger", limit_kw=22),
    )
    env = {
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "PIPELINE_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
    }

    def cli(*args: str):
        return CliRunner().invoke(main, ["plan", *args, "--transport", "kafka"], env=env)

    depart = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    done = await asyncio.to_thread(cli, "set", "--charger", "CP1", "--depart", depart.isoformat(), "--energy-kwh", "30")
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"published plan charger:CP1: leaves {depart.isoformat()} needing 30 kWh on kafka")
    refused = await asyncio.to_thread(cli, "set", "--charger", "CP9", "--depart", "07:30", "--energy-kwh", "5")
    assert refused.exit_code == 1 and "unknown charger 'CP9' (known: " in refused.output
    cleared = await asyncio.to_thread(cli, "clear", "--charger", "CP1")
    assert cleared.exit_code == 0 and cleared.output == "cleared plan charger:CP1\n"

    consumer = await kafka_transport.consumer([SESSION_PLANS], f"t-{uuid.uuid4().hex[:8]}", from_beginning=True)
    try:
        records = await consumer.read_to_end()
    finally:
        await consumer.close()
    assert [(r.key, r.value is None) for r in records] == [("charger:CP1", False), ("charger:CP1", True)]
    assert json.loads(records[0].value)["energy_needed_kwh"] == 30
