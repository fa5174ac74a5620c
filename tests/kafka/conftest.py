"""Fixtures for the ``kafka`` tests: one real Apache Kafka broker per session, one topic prefix per test.

The broker comes from :mod:`tests.kits.kafka_broker` (``KAFKA_BOOTSTRAP_SERVERS``, else Docker, else Apache Kafka
from Maven Central). If none can be had the tests fail with the reason when ``CI=true`` or when ``java``
and ``mvn`` are present (provisioning should have worked); only on a machine with neither, outside CI,
are they skipped. The broker in use is printed when it starts and again in the terminal summary.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from pipeline.transport.config import KafkaSettings
from pipeline.transport.kafka import KafkaTransport
from tests.kits.kafka_broker import Broker, BrokerUnavailable, local_broker, session_broker, settings_for

_USED: list[str] = []


def _must_run() -> bool:
    import shutil

    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or bool(
        shutil.which("java") and shutil.which("mvn")
    )


def _unavailable(reason: str):
    if _must_run():
        pytest.fail(f"no Kafka broker for the kafka tests: {reason}", pytrace=False)
    pytest.skip(f"no Kafka broker (no KAFKA_BOOTSTRAP_SERVERS, Docker daemon, or java+mvn): {reason}")


def _announce(config: pytest.Config, line: str) -> None:
    _USED.append(line)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"\nkafka broker: {line}")


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Broker:
    """The session's broker; stopped after the session."""
    try:
        broker = session_broker(tmp_path_factory.mktemp("kafka-broker"))
    except BrokerUnavailable as exc:
        _unavailable(str(exc))
    _announce(request.config, broker.description)
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def restartable_broker(request, kafka_broker: Broker, tmp_path_factory) -> Broker:
    """A broker the test may stop and start: the session's own if it can, else a dedicated local one."""
    if kafka_broker.restartable:
        yield kafka_broker
        return
    try:
        broker = local_broker(tmp_path_factory.mktemp("kafka-restartable"))
    except BrokerUnavailable as exc:
        _unavailable(f"the external broker cannot be restarted and a local one failed: {exc}")
    _announce(request.config, f"{broker.description} (for restart tests)")
    yield broker
    broker.close()


@pytest.fixture
def kafka_settings(kafka_broker: Broker) -> KafkaSettings:
    return settings_for(kafka_broker)


@pytest.fixture
async def kafka_transport(kafka_settings: KafkaSettings):
    transport = KafkaTransport(kafka_settings)
    await transport.start()
    yield transport
    await transport.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for line in _USED:
        terminalreporter.write_line(f"kafka broker: {line}")


@pytest.fixture(autouse=True)
def fresh_outage_log():
    """The process's one broker-outage log (aiokafka's loggers are process-wide) starts each test fresh:
    an outage or its aftermath left by the test before must not swallow this test's lines."""
    from pipeline.transport import kafka_logs

    for previous in (kafka_logs._SHARED,):
        if previous is not None:
            previous.uninstall()
    kafka_logs._SHARED = None
    yield
    if kafka_logs._SHARED is not None:
        kafka_logs._SHARED.uninstall()
    kafka_logs._SHARED = None
