"""A real Apache Kafka broker for the ``kafka`` tests, found or made in this order (docs/architecture.md, "Tests"):

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set: a broker someone else runs (it cannot be restarted by the tests).
2. testcontainers, where a Docker daemon answers: the ``apache/kafka`` image, KRaft, one node.
3. Apache Kafka from Maven Central: ``org.apache.kafka:kafka_2.13`` and its runtime dependencies are copied
   by the machine's ``mvn`` (``dependency:copy-dependencies`` on a generated pom) into
   ``.cache/kafka/kafka-<version>/libs`` (reused on later runs), the storage is formatted with Kafka's own
   storage tool, and ``kafka.Kafka`` runs as a single KRaft node (broker and controller) with the machine's
   ``java`` on free loopback ports, until the session ends.

``KAFKA_VERSION`` picks another release (default :data:`KAFKA_VERSION`). Nothing is downloaded from
anywhere but Maven Central. Errors are :class:`BrokerUnavailable` with the reason (and the broker log's
tail), so the fixture can fail the run with it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.3.1")
SCALA_VERSION = "2.13"
LOG4J2_VERSION = "2.25.4"  # Kafka 4.x logs through log4j2; pinned so the slf4j binding matches log4j-core
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KAFKA_CACHE_DIR") or ROOT / ".cache" / "kafka")
STARTED = "Kafka Server started"


class BrokerUnavailable(RuntimeError):
    """No broker could be found or started; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """Run ``command`` under ``setpriv --pdeathsig TERM`` where util-linux has it, so the broker gets
    SIGTERM when the test process dies, even by SIGKILL (no ``preexec_fn``: it can deadlock a forked child
    of a process with threads)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *command] if setpriv else command


def _major(version: str) -> int:
    return int(version.split(".")[0])


# -- provisioning from Maven Central --------------------------------------------------------------------


def _pom(version: str) -> str:
    if _major(version) >= 4:
        logging_deps = f"""
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J2_VERSION}</version></dependency>"""
        managed = "".join(
            f"""
      <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>{a}</artifactId>
        <version>{LOG4J2_VERSION}</version></dependency>"""
            for a in ("log4j-api", "log4j-core")
        )
    else:  # 3.x logs through reload4j
        logging_deps = """
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>"""
        managed = ""
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.tests</groupId><artifactId>kafka-broker</artifactId><version>{version}</version>
  <packaging>pom</packaging>
  <dependencyManagement><dependencies>{managed}
  </dependencies></dependencyManagement>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{version}</version></dependency>{logging_deps}
  </dependencies>
</project>
"""


def provision(version: str = KAFKA_VERSION, cache: Path = CACHE) -> tuple[Path, bool]:
    """The folder of jars for Kafka ``version``, copied from Maven Central on first use.

    Returns ``(libs_dir, fresh)``; ``fresh`` is False when the cache was reused. Raises
    :class:`BrokerUnavailable` if ``mvn`` or ``java`` is missing or Maven fails (its last lines included).
    """
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise BrokerUnavailable(f"no `{tool}` on PATH to provision Apache Kafka {version} from Maven Central")
    home = cache / f"kafka-{version}"
    libs, ready = home / "libs", home / ".complete"
    if ready.exists():
        return libs, False
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be provisioning the same version
        if ready.exists():
            return libs, False
        shutil.rmtree(libs, ignore_errors=True)
        home.mkdir(parents=True, exist_ok=True)
        (home / "pom.xml").write_text(_pom(version))
        command = [
            "mvn",
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(home / "pom.xml"),
            f"-Dmaven.repo.local={cache / 'm2'}",
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise BrokerUnavailable(f"mvn did not fetch Apache Kafka {version} within 600 s") from None
        if done.returncode != 0 or not any(libs.glob(f"kafka_{SCALA_VERSION}-{version}.jar")):
            lines = [
                re.sub(r"\x1b\[[0-9;]*m|\[0m", "", line).strip() for line in (done.stdout + done.stderr).splitlines()
            ]
            errors = [line for line in lines if line.startswith("[ERROR]") and len(line) > 8]
            reason = errors[0] if errors else " | ".join(line for line in lines[-3:] if line)
            raise BrokerUnavailable(f"mvn could not fetch Apache Kafka {version} from Maven Central: {reason}")
        ready.write_text(f"{version}\n")
    return libs, True


# -- brokers ----------------------------------------------------------------------------------------------


@dataclass
class Broker:
    """A reachable broker: ``bootstrap_servers`` and what it is (for the test log)."""

    bootstrap_servers: str
    description: str
    version: str | None = None

    @property
    def restartable(self) -> bool:
        return False

    def stop(self) -> None:
        """Stop the broker process (keeps its data)."""

    def start(self) -> None:
        """Start it again on the same port and data."""

    def restart(self) -> None:
        self.stop()
        self.start()

    async def astop(self) -> None:
        """:meth:`stop` from a running event loop, without blocking it."""
        await asyncio.to_thread(self.stop)

    async def astart(self) -> None:
        """:meth:`start` from a running event loop, without blocking it."""
        await asyncio.to_thread(self.start)

    def close(self) -> None:
        """Stop for good and clean up."""


_LOG4J2 = """status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d{ISO8601}] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = INFO
"""
_LOG4J1 = """log4j.rootLogger=WARN, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=INFO
"""


@dataclass
class LocalBroker(Broker):
    """Apache Kafka from the Maven cache, run by ``java`` as one KRaft node on loopback."""

    libs: Path = Path()
    workdir: Path = Path()
    port: int = 0
    controller_port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def restartable(self) -> bool:
        return True

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    def _java(self, main: str, *args: str) -> list[str]:
        if _major(self.version or KAFKA_VERSION) >= 4:
            logging_flag = f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}"
        else:
            logging_flag = f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}"
        return [
            "java",
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            logging_flag,
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def configure(self) -> None:
        """Write server.properties and the logging config, and format the storage (once)."""
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        (self.workdir / "log4j.properties").write_text(_LOG4J1)
        (self.workdir / "server.properties").write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid: a leading '-' reads as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        done = subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.workdir / "server.properties")
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise BrokerUnavailable(f"kafka-storage format failed: {tail}")

    def _tail(self, lines: int = 8) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        return "(no broker log)"

    def _spawn(self) -> int:
        """Start ``kafka.Kafka``; returns the log offset to watch from. Call it on a thread that lives as
        long as the broker should: the broker is told to exit when that thread dies (so a killed test run
        leaves none behind)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                _with_parent_death_signal(self._java("kafka.Kafka", str(self.workdir / "server.properties"))),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return offset

    def _started(self, offset: int, deadline: float, timeout_s: float) -> bool:
        """True once the log says "Kafka Server started"; raises if the broker died or the time is up."""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        if STARTED in text:
            for line in text.splitlines():
                if "Kafka version:" in line:
                    self.version = line.split("Kafka version:")[1].split()[0]
            return True
        if self.process.poll() is not None:
            raise BrokerUnavailable(f"Apache Kafka exited with status {self.process.returncode}: {self._tail()}")
        if time.monotonic() > deadline:
            self.stop()
            raise BrokerUnavailable(f"Apache Kafka did not start within {timeout_s:g}s: {self._tail()}")
        return False

    def start(self, timeout_s: float = 90.0) -> None:
        """Start ``kafka.Kafka`` and wait for "Kafka Server started" (the broker is then unfenced and
        serving); raises :class:`BrokerUnavailable` with the log's tail."""
        if self.process is not None and self.process.poll() is None:
            return
        offset, deadline = self._spawn(), time.monotonic() + timeout_s
        while not self._started(offset, deadline, timeout_s):
            time.sleep(0.1)

    async def astart(self, timeout_s: float = 90.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        offset, deadline = self._spawn(), time.monotonic() + timeout_s  # spawned on the loop's thread
        while not self._started(offset, deadline, timeout_s):
            await asyncio.sleep(0.1)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), SIGKILL after ``timeout_s``; the data directory stays."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def close(self) -> None:
        self.stop()


def local_broker(workdir: Path, version: str = KAFKA_VERSION) -> LocalBroker:
    """Provision (or reuse) Apache Kafka ``version`` and start it; raises :class:`BrokerUnavailable`."""
    started = time.monotonic()
    libs, fresh = provision(version)
    provisioned_s = time.monotonic() - started
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    broker = LocalBroker(
        bootstrap_servers=f"127.0.0.1:{port}",
        description="",
        version=version,
        libs=libs,
        workdir=workdir,
        port=port,
        controller_port=controller_port,
    )
    broker.configure()
    broker.start()
    how = f"provisioned from Maven Central in {provisioned_s:.1f}s" if fresh else f"cached in {libs.parent}"
    broker.description = (
        f"Apache Kafka {broker.version} (KRaft, single node, {how}; "
        f"started in {time.monotonic() - started:.1f}s) at {broker.bootstrap_servers}"
    )
    return broker


# -- Docker ------------------------------------------------------------------------------------------------


def docker_available() -> bool:
    """True when a Docker daemon answers (not just a docker client on PATH)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def kafka_container(version: str = KAFKA_VERSION, *, host_port: int | None = None, network=None, alias: str = "kafka"):
    """An unstarted ``apache/kafka`` testcontainer (KRaft, one node).

    Clients on this machine use ``localhost:{host_port}`` (the same port inside and outside, so the
    advertised address works and survives a container restart); containers on ``network`` use
    ``{alias}:19092``.
    """
    from testcontainers.core.container import DockerContainer

    port = host_port or free_port()
    listeners = [f"PLAINTEXT://0.0.0.0:{port}", "CONTROLLER://0.0.0.0:9093"]
    advertised = [f"PLAINTEXT://localhost:{port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if network is not None:
        listeners.append("INTERNAL://0.0.0.0:19092")
        advertised.append(f"INTERNAL://{alias}:19092")
        protocols.append("INTERNAL:PLAINTEXT")
    container = (
        DockerContainer(f"apache/kafka:{version}")
        .with_bind_ports(port, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENERS", ",".join(listeners))
        .with_env("KAFKA_ADVERTISED_LISTENERS", ",".join(advertised))
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", ",".join(protocols))
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    if network is not None:
        container = container.with_network(network).with_network_aliases(alias)
    container.kafka_port = port
    return container


def _wait_for_log(container, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out, err = container.get_logs()
        if text in (out + err).decode(errors="replace"):
            return
        time.sleep(0.2)
    raise BrokerUnavailable(f"{container.image} did not log {text!r} within {timeout_s:g}s")


@dataclass
class ContainerBroker(Broker):
    """``apache/kafka`` in Docker via testcontainers; restart = container stop/start (same port, data)."""

    container: object = None

    @property
    def restartable(self) -> bool:
        return True

    def stop(self) -> None:
        self.container.get_wrapped_container().stop(timeout=30)

    def start(self) -> None:
        wrapped = self.container.get_wrapped_container()
        wrapped.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.container.kafka_port), 1):
                return
            time.sleep(0.2)
        raise BrokerUnavailable("apache/kafka container did not come back after a restart")

    def close(self) -> None:
        self.container.stop()


def container_broker(version: str = KAFKA_VERSION) -> ContainerBroker:
    container = kafka_container(version)
    container.start()
    try:
        _wait_for_log(container, STARTED, 120)
    except BrokerUnavailable:
        container.stop()
        raise
    return ContainerBroker(
        bootstrap_servers=f"localhost:{container.kafka_port}",
        version=version,
        container=container,
        description=f"Apache Kafka {version} (KRaft, apache/kafka:{version} via testcontainers) "
        f"at localhost:{container.kafka_port}",
    )


def session_broker(workdir: Path) -> Broker:
    """The session's broker: external, Docker, or Maven Central (see the module docstring)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        version = os.environ.get("KAFKA_BROKER_VERSION")
        return Broker(
            external,
            f"external broker {version or '(version: set KAFKA_BROKER_VERSION)'} "
            f"at {external} (KAFKA_BOOTSTRAP_SERVERS)",
            version,
        )
    docker_error = None
    if docker_available():
        try:
            return container_broker()
        except Exception as exc:
            docker_error = (
                f"apache/kafka in Docker failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            )
    try:
        return local_broker(workdir)
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(f"{docker_error}; {exc}" if docker_error else str(exc)) from None


def settings_for(broker: Broker, **overrides):
    """:class:`pipeline.app.settings.KafkaSettings` for one test: its own topic prefix, short timeouts."""
    from pipeline.transport.config import KafkaSettings

    fields = dict(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t-{uuid.uuid4().hex[:10]}.",
        session_timeout_s=6.0,
        join_timeout_s=30.0,
        retry_s=60.0,
        request_timeout_s=15.0,
    )
    fields.update(overrides)
    return KafkaSettings(**fields)
