"""A broker outage under a running executor: chargers are answered throughout, aiokafka's connection errors
become one line going away and one coming back, and the session published meanwhile arrives afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import pytest
from ocpp.v16 import call

from executor import ExecutorConfig
from pipeline.app.loop import start_loop
from pipeline.contracts.topics import TopologyNode
from pipeline.transport import publish
from pipeline.transport.kafka import KafkaTransport
from tests.kits.kafka_broker import settings_for
from tests.kits.recording_charger import RecordingCharger

pytestmark = pytest.mark.kafka

NODES = [
    TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=100),
    TopologyNode(node_id="CP1", site_id="s1", parent_id="s1", kind="charger", limit_kw=22),
]


def meter(tx: int, wh: int) -> call.MeterValues:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return call.MeterValues(
        connector_id=1,
        transaction_id=tx,
        meter_value=[
            {"timestamp": now, "sampledValue": [{"value": str(wh), "measurand": "Energy.Active.Import.Register"}]}
        ],
    )


async def test_a_broker_outage_answers_chargers_and_logs_two_lines(restartable_broker, caplog):
    settings = settings_for(restartable_broker)
    probe = KafkaTransport(settings)
    for node in NODES:
        await publish(probe, "site.topology", node)
    # every reading published (the meter gate off): this is about the outbox riding out the outage
    process = await start_loop(
        KafkaTransport(settings), executor=ExecutorConfig(port=0, metrics=False, meter_heartbeat_s=0)
    )
    executor = process.executor
    charger = RecordingCharger("CP1")
    try:
        await charger.connect(executor.port)
        tx = await charger.start_transaction()
        assert await executor.outbox.flush(30)
        caplog.set_level(logging.WARNING)
        caplog.clear()

        await restartable_broker.astop()
        for wh in range(100, 1100, 100):  # answered at once (the charger would give up after 5 s)
            await charger._link.call(meter(tx, wh))
            await asyncio.sleep(0.3)
        # the first update hangs in the producer; the other nine wait in the outbox as one record
        assert executor.outbox.depth_of("ocpp.active.sessions") == 1
        await restartable_broker.astart()
        assert await executor.outbox.flush(90), "the session update was not delivered after the restart"
        await charger._link.call(meter(tx, 1200))  # a send after the restart proves the brokers are back
        assert await executor.outbox.flush(30)
    finally:
        await charger.disconnect()
        await process.stop()

    kafka_lines = [r for r in caplog.records if r.name.startswith(("aiokafka", "pipeline.transport.kafka"))]
    text = [r.getMessage() for r in kafka_lines]
    away = [t for t in text if t.startswith("kafka brokers unreachable")]
    back = [t for t in text if t.startswith("kafka brokers reachable again")]
    summaries = [t for t in text if t.startswith("kafka brokers still unreachable")]
    assert len(away) == 1 and len(back) == 1, text
    assert len(kafka_lines) == 2 + len(summaries), text
    assert text.index(away[0]) < text.index(back[0])

    consumer = await probe.consumer(["ocpp.active.sessions"], "probe-outage")
    records = await consumer.read_to_end()
    await consumer.close()
    await probe.close()
    latest = json.loads([r for r in records if r.key == f"CP1-{tx}"][-1].value)
    assert latest["energy_kwh"] == pytest.approx(1.2)
