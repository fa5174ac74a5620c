"""The compose stack's Kafka start script (deploy/kafka/start.sh) run for real, on loopback, with Apache
Kafka from the same Maven cache as the other kafka tests standing in for the image's /opt/kafka/bin:

the storage is formatted with the SCRAM users from the secret files, the pipeline logs in with
SASL/SCRAM-SHA-512 taking its password from PIPELINE_KAFKA__SASL_PASSWORD_FILE (creates its topics, sends
and reads back), and a wrong password or a client without SASL gets nothing. The script refuses a
password it could not put into JAAS unquoted, before starting anything."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from pipeline.app.settings import load_settings
from pipeline.transport.kafka import KafkaTransport, KafkaTransportError
from tests.kits.kafka_broker import _LOG4J2, STARTED, BrokerUnavailable, _with_parent_death_signal, free_port, provision

pytestmark = pytest.mark.kafka

START = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "start.sh"
PIPELINE_PASSWORD = "pipeline-" + uuid.uuid4().hex


def _home(tmp: Path, libs: Path) -> Path:
    """A stand-in for the image's /opt/kafka: bin/kafka-storage.sh and bin/kafka-server-start.sh running
    the Maven jars with the machine's java."""
    home = tmp / "kafka"
    (home / "bin").mkdir(parents=True)
    (home / "config").mkdir()
    (home / "log4j2.properties").write_text(_LOG4J2)
    java = (
        f"exec java -Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "
        f'-Dlog4j2.configurationFile={home / "log4j2.properties"} -cp "{libs}/*"'
    )
    for name, main in (("kafka-storage.sh", "kafka.tools.StorageTool"), ("kafka-server-start.sh", "kafka.Kafka")):
        (home / "bin" / name).write_text(f'#!/bin/sh\n{java} {main} "$@"\n')
        (home / "bin" / name).chmod(0o755)
    return home


def _secrets(tmp: Path, admin: str, pipeline: str) -> Path:
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "kafka_admin_password").write_text(admin + "\n")
    (secrets / "kafka_pipeline_password").write_text(pipeline + "\n")
    return secrets


@pytest.fixture(scope="module")
def compose_broker(tmp_path_factory):
    """The script's broker on free loopback ports; yields ``(bootstrap, workdir)``."""
    try:
        libs, _ = provision()
    except BrokerUnavailable as exc:
        pytest.skip(f"no Apache Kafka jars (java and mvn from Maven Central): {exc}")
    tmp = tmp_path_factory.mktemp("compose-kafka")
    home = _home(tmp, libs)
    internal, external = free_port(), free_port()
    env = {
        **os.environ,
        "BROKER_HOME": str(home),
        "BROKER_DATA_DIR": str(tmp / "data"),
        "BROKER_SECRETS_DIR": str(_secrets(tmp, "admin-" + uuid.uuid4().hex, PIPELINE_PASSWORD)),
        "BROKER_LISTEN_ADDRESS": "127.0.0.1",
        "BROKER_INTERNAL_HOST": "127.0.0.1",
        "BROKER_INTERNAL_PORT": str(internal),
        "BROKER_EXTERNAL_PORT": str(external),
        "BROKER_CONTROLLER_PORT": str(free_port()),
        "BROKER_EXTERNAL_ADDRESS": f"127.0.0.1:{external}",
        "BROKER_CLUSTER_ID": "4L6g3nShT-eMCtK--X86sw",
    }
    log_path = tmp / "broker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _with_parent_death_signal(["sh", str(START)]),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while STARTED not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"deploy/kafka/start.sh did not start Kafka: {log_path.read_text()[-2000:]}")
        time.sleep(0.2)
    yield f"127.0.0.1:{external}", home
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _sasl_env(monkeypatch, bootstrap: str, password_file: Path) -> None:
    for name in [n for n in os.environ if n.startswith("PIPELINE_")]:
        monkeypatch.delenv(name)
    for name, value in {
        "BOOTSTRAP_SERVERS": bootstrap,
        "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SASL_MECHANISM": "SCRAM-SHA-512",
        "SASL_USERNAME": "pipeline",
        "SASL_PASSWORD_FILE": str(password_file),
        "TOPIC_PREFIX": f"c{uuid.uuid4().hex[:8]}.",
        "RETRY_S": "0",
        "REQUEST_TIMEOUT_S": "10",
    }.items():
        monkeypatch.setenv(f"PIPELINE_KAFKA__{name}", value)


def test_the_pipeline_logs_in_with_scram_from_its_secret_file(compose_broker, tmp_path, monkeypatch):
    bootstrap, home = compose_broker
    secret = tmp_path / "kafka_pipeline_password"
    secret.write_text(PIPELINE_PASSWORD + "\n")
    _sasl_env(monkeypatch, bootstrap, secret)

    async def round_trip() -> list:
        transport = KafkaTransport(load_settings().kafka)
        await transport.start()  # creates the topics: the pipeline user may
        try:
            await transport.send("site.topology", "depot-1", b"{}")
            consumer = await transport.consumer(["site.topology"], group="compose-test")
            try:
                for _ in range(20):
                    records = await consumer.getmany(timeout_s=1.0)
                    if records:
                        return records
                return []
            finally:
                await consumer.close()
        finally:
            await transport.close()

    records = asyncio.run(round_trip())
    assert [r.key for r in records] == ["depot-1"]
    for name in ("compose-server.properties", "compose-admin.properties"):  # they hold the admin password
        assert (home / "config" / name).stat().st_mode & 0o077 == 0, name


@pytest.mark.parametrize("protocol, password", [("SASL_PLAINTEXT", "not-the-password-123"), ("PLAINTEXT", None)])
def test_a_wrong_password_or_no_sasl_gets_nothing(compose_broker, tmp_path, monkeypatch, protocol, password):
    bootstrap, _ = compose_broker
    secret = tmp_path / "wrong"
    secret.write_text(password or "unused")
    _sasl_env(monkeypatch, bootstrap, secret)
    if protocol == "PLAINTEXT":
        for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD_FILE"):
            monkeypatch.delenv(f"PIPELINE_KAFKA__{name}")
        monkeypatch.setenv("PIPELINE_KAFKA__REQUEST_TIMEOUT_S", "3")

    async def start() -> None:
        transport = KafkaTransport(load_settings().kafka)
        try:
            await transport.start()
        finally:
            await transport.close()

    with pytest.raises(KafkaTransportError):
        asyncio.run(asyncio.wait_for(start(), 60))


@pytest.mark.parametrize(
    "password, message",
    [
        ('with"quote-and-more', "use only letters, digits"),
        ("short", "at least 16 characters"),
    ],
)
def test_the_script_refuses_a_password_it_cannot_use_before_starting_anything(tmp_path, password, message):
    env = {
        **os.environ,
        "BROKER_HOME": str(tmp_path / "no-kafka-here"),
        "BROKER_CLUSTER_ID": "x",
        "BROKER_SECRETS_DIR": str(_secrets(tmp_path, password, PIPELINE_PASSWORD)),
    }
    done = subprocess.run(["sh", str(START)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and message in done.stderr and password not in done.stderr
    assert not (tmp_path / "no-kafka-here").exists()


def test_the_health_check_login_file_logs_in_as_admin(compose_broker):
    """compose-admin.properties is what the compose health check passes to kafka-broker-api-versions.sh
    (--command-config): its protocol, mechanism and JAAS login must get an authenticated session."""
    import re

    from aiokafka.admin import AIOKafkaAdminClient

    bootstrap, home = compose_broker
    props = dict(line.split("=", 1) for line in (home / "config" / "compose-admin.properties").read_text().splitlines())
    login = re.fullmatch(
        r"org\.apache\.kafka\.common\.security\.scram\.ScramLoginModule required "
        r'username="(\w+)" password="([^"]+)";',
        props["sasl.jaas.config"],
    )
    assert login and login.group(1) == "admin"

    async def describe() -> dict:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            security_protocol=props["security.protocol"],
            sasl_mechanism=props["sasl.mechanism"],
            sasl_plain_username=login.group(1),
            sasl_plain_password=login.group(2),
            request_timeout_ms=10_000,
        )
        await admin.start()
        try:
            return await admin.describe_cluster()
        finally:
            await admin.close()

    assert asyncio.run(asyncio.wait_for(describe(), 60))["brokers"]
