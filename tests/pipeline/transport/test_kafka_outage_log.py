"""aiokafka's connection errors during a broker outage: one line going away, one coming back, summaries
between (the filter is fed log records here; tests/kafka has the same against a real broker)."""

from __future__ import annotations

import logging

import pytest

from pipeline.transport import kafka_logs
from pipeline.transport.kafka_logs import BrokerOutageLog


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.levelname, record.getMessage()))


@pytest.fixture
def setup():
    """A fresh filter on aiokafka's loggers, a collecting handler on the root, a hand-moved clock. The
    process's shared filter (installed by any KafkaTransport an earlier test made, perhaps mid-outage)
    is set aside meanwhile."""
    shared = kafka_logs._SHARED
    if shared is not None:
        shared.uninstall()
    # one-shot commands quiet the client's loggers (pipeline.cli.transport.quiet_client_logs): undo it here
    levels = {
        name: logging.getLogger(name).level
        for name in list(logging.Logger.manager.loggerDict)
        if name.startswith("aiokafka") or name == "pipeline.transport.kafka"
    }
    for name in levels:
        logging.getLogger(name).setLevel(logging.NOTSET)
    now = [0.0]
    outage = BrokerOutageLog(summary_every_s=60.0, monotonic=lambda: now[0]).install()
    handler = Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield outage, handler.lines, now
    root.removeHandler(handler)
    root.setLevel(old_level)
    outage.uninstall()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    if shared is not None:
        shared.install()


def connection_errors(n: int) -> None:
    client = logging.getLogger("aiokafka")
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    for i in range(n):
        if i % 2:
            client.error(
                "Unable connect to node with id %s: %s", 1, "[Errno 111] Connect call failed ('127.0.0.1', 9092)"
            )
        else:
            fetcher.error(
                "Failed fetch messages from %s: %s",
                1,
                "NodeNotReadyError: Attempt to send a request to node which is not ready (node id 1).",
            )


def test_an_outage_is_one_line_then_summaries_then_one_line_back(setup):
    outage, lines, now = setup
    connection_errors(2400)  # what aiokafka writes in seconds with a producer and a consumer
    assert len(lines) == 1 and outage.away
    name, level, text = lines[0]
    assert (name, level) == ("aiokafka.consumer.fetcher", "ERROR")
    assert text.startswith("kafka brokers unreachable: Failed fetch messages from 1: NodeNotReadyError")

    now[0] = 61.0
    connection_errors(2400)
    assert len(lines) == 2
    assert lines[1][1] == "WARNING"
    assert lines[1][2].startswith("kafka brokers still unreachable after 61s: 2399 connection errors suppressed")
    assert "(last: Failed fetch messages" in lines[1][2]

    now[0] = 90.0
    connection_errors(10)
    outage.reachable()
    assert len(lines) == 3 and not outage.away
    assert lines[2] == (
        "pipeline.transport.kafka",
        "WARNING",
        "kafka brokers reachable again after 90s (4808 connection errors suppressed)",
    )
    outage.reachable()  # no outage, no line
    assert len(lines) == 3


def test_other_records_pass_untouched_outside_an_outage(setup):
    outage, lines, _ = setup
    logging.getLogger("aiokafka.conn").warning("Sending username and password in the clear")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Discovered coordinator %s for group %s", 1, "g")
    assert [t for _, _, t in lines] == [
        "Sending username and password in the clear",
        "Discovered coordinator 1 for group g",
    ]
    assert not outage.away


def test_during_an_outage_every_aiokafka_warning_is_counted(setup):
    outage, lines, now = setup
    connection_errors(1)
    logging.getLogger("aiokafka.producer.sender").warning(
        "Got error produce response on topic-partition %s, retrying. Error: %s", "acks-0", "NotLeaderForPartition"
    )
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Discovered coordinator %s for group %s", 1, "g")
    assert [level for _, level, _ in lines] == ["ERROR", "INFO"]
    assert outage.suppressed_total == 1


def test_the_transports_own_retries_share_the_outage(setup):
    outage, lines, now = setup
    for _ in range(50):
        outage.failure("kafka at 127.0.0.1:9092: sending to acks failed (KafkaConnectionError); retrying")
    connection_errors(50)
    assert [(n, lvl) for n, lvl, _ in lines] == [("pipeline.transport.kafka", "ERROR")]
    now[0] = 120.0
    outage.failure("kafka at 127.0.0.1:9092: sending to acks failed (KafkaConnectionError); retrying")
    assert lines[-1][2].startswith("kafka brokers still unreachable after 120s: 99 connection errors suppressed")
    outage.reachable()
    assert lines[-1][2] == "kafka brokers reachable again after 120s (99 connection errors suppressed)"


def test_the_aftermath_of_an_outage_is_counted_then_warnings_pass_again(setup):
    outage, lines, now = setup
    connection_errors(3)
    now[0] = 10.0
    outage.reachable()
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.error("Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError")
    connection_errors(1)  # a stale connection found closed
    assert len(lines) == 2 and outage.settling_suppressed == 2
    outage.failure("kafka at 127.0.0.1:9092: sending to acks failed (KafkaConnectionError)")  # a real one
    assert len(lines) == 3 and lines[-1][2].startswith("kafka brokers unreachable")
    now[0] = 20.0
    outage.reachable()
    now[0] = 51.0
    coordinator.error("Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError")
    assert lines[-1] == (
        "aiokafka.consumer.group_coordinator",
        "ERROR",
        "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
    )


def test_a_traceback_is_not_repeated_on_the_first_line(setup):
    _, lines, _ = setup
    try:
        raise ConnectionRefusedError(111, "Connect call failed")
    except OSError:
        logging.getLogger("aiokafka").exception("Unexpected error in sender routine")
    assert len(lines) == 1 and lines[0][2].startswith("kafka brokers unreachable: Unexpected error in sender")
