"""sql/ on a real RisingWave (single node) beside a real Apache Kafka, both in Docker via testcontainers:
``pipeline migrate apply`` creates the tables, sources, views and sinks with the broker address and topic
prefix injected, then records published through :class:`KafkaTransport` come back as a setpoint on
``ocpp.setpoint.commands`` with the executor's contract (key = session_id, JSON that decodes).

Skipped, with the reason, where no Docker daemon answers (no registry here ships RisingWave).
``RISINGWAVE_IMAGE`` overrides the image.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.append(str(Path(__file__).resolve().parent.parent))  # tests/kafka_broker.py

from kafka_broker import STARTED, docker_available, kafka_container  # noqa: E402

from pipeline.cli import main  # noqa: E402
from pipeline.settings import KafkaSettings  # noqa: E402
from pipeline.topics import ActiveSession, SetpointCommand, SiteDemand, TopologyNode  # noqa: E402
from pipeline.transport import decode_or_dead_letter, publish  # noqa: E402
from pipeline.transport.kafka import KafkaTransport  # noqa: E402

pytestmark = pytest.mark.risingwave

RISINGWAVE_IMAGE = os.environ.get("RISINGWAVE_IMAGE", "risingwavelabs/risingwave:v2.8.0")


@pytest.fixture(scope="module")
def stack():
    """``(kafka_host_bootstrap, risingwave_dsn)``: Kafka reachable from here as localhost:PORT and from
    RisingWave as kafka:19092 on a shared Docker network."""
    if not docker_available():
        pytest.skip("RisingWave runs only in Docker and no Docker daemon answers here "
                    "(a docker client alone is not enough); the embedded engine runs sql/ instead")
    import psycopg
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    network = Network()
    network.create()
    kafka = kafka_container(network=network, alias="kafka")
    risingwave = (DockerContainer(RISINGWAVE_IMAGE).with_command("single_node").with_exposed_ports(4566)
                  .with_network(network))
    try:
        kafka.start()
        risingwave.start()
        deadline = time.monotonic() + 180
        while STARTED not in b"".join(kafka.get_logs()).decode(errors="replace"):
            assert time.monotonic() < deadline, "Kafka did not start"
            time.sleep(0.5)
        dsn = f"postgresql://root@{risingwave.get_container_host_ip()}:{risingwave.get_exposed_port(4566)}/dev"
        while True:
            try:
                with psycopg.connect(dsn, connect_timeout=3) as con:
                    con.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "RisingWave did not accept connections"
                time.sleep(1)
        yield f"localhost:{kafka.kafka_port}", dsn
    finally:
        risingwave.stop()
        kafka.stop()
        network.remove()


def test_sql_applied_to_risingwave_turns_a_session_into_a_setpoint(stack):
    bootstrap, dsn = stack
    prefix = f"rw-{uuid.uuid4().hex[:8]}."
    settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    asyncio.run(KafkaTransport(settings).ensure_topics())  # sources need their topics to exist

    result = CliRunner().invoke(main, ["migrate", "apply", "--target", dsn, "--yes",
                                       "--kafka-bootstrap", "kafka:19092", "--topic-prefix", prefix])
    assert result.exit_code == 0, result.output

    now = datetime.now(timezone.utc).replace(microsecond=0)
    setpoint = asyncio.run(_drive(settings, now))
    assert setpoint.session_id == "CP1-1" and setpoint.charge_point_id == "CP1"
    assert setpoint.setpoint_kw == pytest.approx(22.0)  # a single session gets min(cap, headroom)
    assert setpoint.computed_at >= now - timedelta(minutes=1)


async def _drive(settings: KafkaSettings, now: datetime) -> SetpointCommand:
    transport = KafkaTransport(settings)
    try:
        for node in (TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=100),
                     TopologyNode(node_id="CP1", site_id="s1", parent_id="s1", kind="charger", limit_kw=22)):
            await publish(transport, "site.topology", node)
        await publish(transport, "bems.site.demand", SiteDemand(
            site_id="s1", current_demand_kw=30, ev_load_kw=0, measured_at=now))
        await publish(transport, "ocpp.active.sessions", ActiveSession(
            session_id="CP1-1", charge_point_id="CP1", connector_id=1, transaction_id="1", site_id="s1",
            node_id="s1", rated_power_kw=22, started_at=now - timedelta(minutes=5), sampled_at=now))
        consumer = await transport.consumer(["ocpp.setpoint.commands"], "rw-test")
        try:
            deadline = asyncio.get_running_loop().time() + 120
            while asyncio.get_running_loop().time() < deadline:
                for record in await consumer.getmany(timeout_s=1.0):
                    ok, value = await decode_or_dead_letter(transport, record)
                    assert ok, f"RisingWave wrote a record the executor cannot read: key={record.key!r}"
                    if value is not None:
                        return value
            raise AssertionError("no setpoint from RisingWave within 120 s")
        finally:
            await consumer.close()
    finally:
        await transport.close()
