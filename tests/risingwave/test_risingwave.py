"""sql/ on a real RisingWave (single node, the version sql/ is written for) beside a real Apache Kafka,
both in Docker via testcontainers:

* ``pipeline migrate apply`` creates every table, source, view and sink (broker address and topic prefix
  injected), and ``migrate status --check`` finds them in sync;
* a session published through :class:`KafkaTransport` lands in ``ocpp_active_sessions`` keyed by its
  plain-text id (the ``INCLUDE KEY AS message_key`` column holds the key's bytes);
* a setpoint for it appears on ``ocpp.setpoint.commands`` with the plain session id as its key and JSON the
  executor's contract decodes;
* its tombstone deletes its row (the other session's row stays), and its setpoint is tombstoned.

Skipped, with the reason, only where no Docker daemon answers (no registry here ships RisingWave); where
one does, every step is asserted. ``RISINGWAVE_IMAGE`` overrides the image.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.contracts.topics import ActiveSession, SetpointCommand, SiteDemand, TopologyNode
from pipeline.transport import decode_or_dead_letter, publish, publish_tombstone
from pipeline.transport.config import KafkaSettings
from pipeline.transport.kafka import KafkaTransport
from tests.kits.kafka_broker import STARTED, docker_available, kafka_container

pytestmark = pytest.mark.risingwave

RISINGWAVE_IMAGE = os.environ.get("RISINGWAVE_IMAGE", "risingwavelabs/risingwave:v2.8.0")


@pytest.fixture(scope="module")
def stack():
    """``(kafka_host_bootstrap, risingwave_dsn)``: Kafka reachable from here as localhost:PORT and from
    RisingWave as kafka:19092 on a shared Docker network."""
    if not docker_available():
        pytest.skip(
            "RisingWave runs only in Docker and no Docker daemon answers here "
            "(a docker client alone is not enough); the embedded engine runs sql/ instead"
        )
    import psycopg
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    network = Network()
    network.create()
    kafka = kafka_container(network=network, alias="kafka")
    risingwave = (
        DockerContainer(RISINGWAVE_IMAGE).with_command("single_node").with_exposed_ports(4566).with_network(network)
    )
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


SITE = "s1"
DEADLINE_S = 180


def test_sql_on_risingwave_keys_sessions_by_the_message_key_and_emits_setpoints(stack):
    bootstrap, dsn = stack
    prefix = f"rw-{uuid.uuid4().hex[:8]}."
    settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    asyncio.run(KafkaTransport(settings).ensure_topics())  # sources need their topics to exist

    result = CliRunner().invoke(
        main,
        ["migrate", "apply", "--target", dsn, "--yes", "--kafka-bootstrap", "kafka:19092", "--topic-prefix", prefix],
    )
    assert result.exit_code == 0, result.output
    status = CliRunner().invoke(main, ["migrate", "status", "--target", dsn, "--check"])
    assert status.exit_code == 0, status.output

    now = datetime.now(UTC).replace(microsecond=0)
    asyncio.run(_drive(settings, dsn, now))


def _rows(dsn: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


async def _until(what: str, check) -> None:
    """Poll ``check()`` (blocking, run on a thread) until it is true, for at most ``DEADLINE_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not await asyncio.to_thread(check):
        assert loop.time() < deadline, f"RisingWave: {what} within {DEADLINE_S} s"
        await asyncio.sleep(1)


def _session(n: int, now: datetime) -> ActiveSession:
    return ActiveSession(
        session_id=f"CP{n}-1",
        charge_point_id=f"CP{n}",
        connector_id=1,
        transaction_id=str(n),
        site_id=SITE,
        node_id=SITE,
        rated_power_kw=22,
        started_at=now - timedelta(minutes=5),
        sampled_at=now,
    )


async def _drive(settings: KafkaSettings, dsn: str, now: datetime) -> None:
    transport = KafkaTransport(settings)
    consumer = None
    try:
        consumer = await transport.consumer(["ocpp.setpoint.commands"], f"rw-test-{uuid.uuid4().hex[:6]}")
        for node in (
            TopologyNode(node_id=SITE, site_id=SITE, kind="site", limit_kw=100),
            TopologyNode(node_id="CP1", site_id=SITE, parent_id=SITE, kind="charger", limit_kw=22),
            TopologyNode(node_id="CP2", site_id=SITE, parent_id=SITE, kind="charger", limit_kw=22),
        ):
            await publish(transport, "site.topology", node)
        await publish(
            transport, "bems.site.demand", SiteDemand(site_id=SITE, current_demand_kw=30, ev_load_kw=0, measured_at=now)
        )
        for n in (1, 2):
            await publish(transport, "ocpp.active.sessions", _session(n, now))

        keyed = "SELECT session_id, encode(message_key, 'escape') FROM ocpp_active_sessions ORDER BY session_id"
        await _until(
            "both sessions keyed by their plain-text id",
            lambda: _rows(dsn, keyed) == [("CP1-1", "CP1-1"), ("CP2-1", "CP2-1")],
        )

        latest = await _read_setpoints(transport, consumer, lambda got: {"CP1-1", "CP2-1"} <= got.keys())
        for sid in ("CP1-1", "CP2-1"):  # 70 kW of headroom: each gets min(cap, share) = its 22 kW rating
            assert latest[sid].session_id == sid and latest[sid].charge_point_id == sid.split("-")[0]
            assert latest[sid].setpoint_kw == pytest.approx(22.0)
            assert latest[sid].computed_at >= now - timedelta(minutes=1)

        await publish_tombstone(transport, "ocpp.active.sessions", "CP1-1")
        await _until(
            "the tombstoned session's row deleted, the other kept", lambda: _rows(dsn, keyed) == [("CP2-1", "CP2-1")]
        )
        latest = await _read_setpoints(transport, consumer, lambda got: "CP1-1" in got and got["CP1-1"] is None)
        assert latest.get("CP2-1", "untouched") is not None  # the other session's setpoint is not tombstoned
    finally:
        if consumer is not None:
            await consumer.close()
        await transport.close()


async def _read_setpoints(transport, consumer, done) -> dict[str, SetpointCommand | None]:
    """Read ``ocpp.setpoint.commands`` until ``done(latest)``; ``latest`` maps each key read to its latest
    value (``None`` = tombstone). Every key must be a plain session id and every value must decode."""
    latest: dict[str, SetpointCommand | None] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not done(latest):
        assert loop.time() < deadline, f"RisingWave: setpoints within {DEADLINE_S} s, got {latest}"
        for record in await consumer.getmany(timeout_s=1.0):
            ok, value = await decode_or_dead_letter(transport, record)
            assert ok, f"RisingWave wrote a record the executor cannot read: key={record.key!r}"
            assert record.key in ("CP1-1", "CP2-1"), f"not a plain session id as key: {record.key!r}"
            latest[record.key] = value
    return latest
