"""The server side of the scale benchmark: the real executor, or a floor server, alone in its own process.

:mod:`benchmarks.scale` starts one of these with :func:`serve` in a fresh (spawned) process and measures
that process's CPU and resident memory with psutil, so the load generators' costs are not counted.

- ``executor``: :class:`executor.Executor` with its defaults (SystemClock, 10 s call timeout, Prometheus
  counters kept, no status port),
  on a :class:`DroppingTransport` that serves the site topology and counts, then drops, everything the
  executor publishes (``ocpp.active.sessions`` upserts, ``ocpp.setpoint.acks``). The memory transport
  keeps every record forever, so its log would grow with every MeterValues and inflate the RSS we
  measure; no engine runs, so no setpoint commands arrive.
- ``ocpp`` (the floor): a ``websockets`` server with the ``ocpp`` library's 1.6 ``ChargePoint`` answering
  BootNotification, StatusNotification, StartTransaction, Heartbeat and MeterValues and nothing else
  (schema validation included and configured as in the executor), on the same ``websockets`` defaults.
- ``raw`` (a lower floor): a ``websockets`` server that parses each frame and answers a canned CALLRESULT.

Pipe protocol with the parent: the child sends ``("ready", {"port", "pid"})`` once it is listening (the
executor after its rebuild), then serves until it receives ``"stop"``, answers ``("stats", {...})`` and exits.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

SUBPROTOCOL = "ocpp1.6"
PANELS_PER_SITE = 2


def charger_id(i: int) -> str:
    """The charge point id of charger ``i`` (0-based): ``CP00000``, ``CP00001``, ..."""
    return f"CP{i:05d}"


def topology_nodes(chargers: int, site_size: int) -> list:
    """``site.topology`` for ``chargers`` chargers: sites of ``site_size`` chargers, each site (400 kW) with
    two panels (200 kW) and 22 kW three-phase chargers alternating between the panels. Limits are generous,
    so the fail-safe shares are never below the 6 A floor."""
    from pipeline.contracts.topics import TopologyNode

    nodes = []
    for s in range((chargers + site_size - 1) // site_size):
        site = f"site-{s:04d}"
        nodes.append(TopologyNode(node_id=site, site_id=site, kind="site", limit_kw=400))
        for p in range(PANELS_PER_SITE):
            nodes.append(TopologyNode(node_id=f"{site}-p{p}", site_id=site, parent_id=site, kind="panel", limit_kw=200))
    for i in range(chargers):
        site = f"site-{i // site_size:04d}"
        nodes.append(
            TopologyNode(
                node_id=charger_id(i),
                site_id=site,
                parent_id=f"{site}-p{i % PANELS_PER_SITE}",
                kind="charger",
                limit_kw=22,
                phases=3,
                voltage_v=230,
            )
        )
    return nodes


def _dropping_transport(seed: Sequence[tuple[str, str, bytes]]):
    """A :class:`pipeline.transport.Transport` whose topics hold only ``seed`` (``(topic, key, value)``
    records, e.g. the topology); everything published is counted per topic in ``sent`` and dropped."""
    from pipeline.transport import Consumer, Record, Transport

    class _Consumer(Consumer):
        def __init__(self, logs: dict[str, list[Record]], topics: list[str]) -> None:
            self._logs, self._pos = logs, {t: 0 for t in topics}

        async def getmany(self, timeout_s: float = 1.0, max_records: int = 1000) -> list[Record]:
            out: list[Record] = []
            for topic, pos in self._pos.items():
                take = self._logs.get(topic, [])[pos : pos + max_records - len(out)]
                out.extend(take)
                self._pos[topic] += len(take)
            if not out:
                await asyncio.sleep(timeout_s)
            return out

        async def commit(self) -> None:
            pass

        async def end_offsets(self) -> dict[tuple[str, int], int]:
            return {(t, 0): len(self._logs.get(t, [])) for t in self._pos}

        def positions(self) -> dict[tuple[str, int], int]:
            return {(t, 0): p for t, p in self._pos.items()}

        async def close(self) -> None:
            pass

    class DroppingTransport(Transport):
        name = "dropping"

        def __init__(self) -> None:
            self.sent: dict[str, int] = {}
            self._logs: dict[str, list[Record]] = {}
            for topic, key, value in seed:
                log = self._logs.setdefault(topic, [])
                log.append(Record(topic, key, value, len(log), 0))

        async def send(
            self, topic: str, key: str | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
        ) -> None:
            self.sent[topic] = self.sent.get(topic, 0) + 1

        async def consumer(self, topics: Iterable[str], group: str, from_beginning: bool = True) -> Consumer:
            return _Consumer(self._logs, list(topics))

    return DroppingTransport()


class _GcPauses:
    """Cyclic-GC passes by generation (``gc.callbacks``): count, total and longest pause in ms."""

    def __init__(self) -> None:
        self.by_generation: dict[int, list[float]] = {}  # generation -> [count, total ms, max ms]
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._started) * 1000.0
        entry = self.by_generation.setdefault(info["generation"], [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += ms
        entry[2] = max(entry[2], ms)

    def summary(self) -> dict:
        return {
            f"gen{g}": {"count": int(n), "total_ms": round(total, 1), "max_ms": round(longest, 1)}
            for g, (n, total, longest) in sorted(self.by_generation.items())
        }


class _CountingHandler(logging.Handler):
    """Counts log records by level and prints the first few warnings (a flood of them would cost CPU)."""

    def __init__(self, echo: int = 5) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}
        self.first: list[str] = []
        self._echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] = self.counts.get(record.levelname, 0) + 1
        if len(self.first) < self._echo:
            self.first.append(f"{record.name}: {record.getMessage()}"[:300])


async def _wait_stop(conn) -> None:
    loop = asyncio.get_running_loop()
    while True:
        if await loop.run_in_executor(None, conn.recv) == "stop":
            return


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _run_executor(conn, chargers: int, site_size: int) -> dict:
    from executor import ExecutorConfig
    from pipeline.app.loop import start_loop
    from pipeline.contracts.topics import encode

    transport = _dropping_transport(
        [("site.topology", n.node_id, encode(n)) for n in topology_nodes(chargers, site_size)]
    )
    loop = await start_loop(transport, executor=ExecutorConfig(host="127.0.0.1", port=0, metrics=False))
    assert loop.executor is not None
    executor = loop.executor
    await asyncio.sleep(1.5)  # the live consumer re-reads the topology from the beginning
    gc.collect()
    conn.send(("ready", {"port": executor.port}))
    await _wait_stop(conn)
    stats = {
        "published": dict(transport.sent),
        "calls": {f"{a}:{r}": n for (a, r), n in executor.stats.calls.items()},
        "in_flight": executor.stats.in_flight,
        "failsafe": executor.stats.failsafe_activations,
    }
    await loop.stop()
    return stats


async def _run_floor(conn, kind: str) -> dict:
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    if kind == "ocpp":
        from ocpp.routing import on
        from ocpp.v16 import ChargePoint, call_result
        from ocpp.v16.datatypes import IdTagInfo
        from ocpp.v16.enums import Action

        tx_ids = iter(range(1, 10**9))

        class FloorChargePoint(ChargePoint):
            @on(Action.boot_notification)
            def _boot(self, **_: Any):
                return call_result.BootNotification(current_time=_now_iso(), interval=300, status="Accepted")

            @on(Action.status_notification)
            def _status(self, **_: Any):
                return call_result.StatusNotification()

            @on(Action.start_transaction)
            def _start(self, **_: Any):
                return call_result.StartTransaction(
                    transaction_id=next(tx_ids), id_tag_info=IdTagInfo(status="Accepted")
                )

            @on(Action.heartbeat)
            def _heartbeat(self, **_: Any):
                return call_result.Heartbeat(current_time=_now_iso())

            @on(Action.meter_values)
            def _meter_values(self, **_: Any):
                return call_result.MeterValues()

        async def handler(ws) -> None:
            cp = FloorChargePoint(ws.request.path.rsplit("/", 1)[-1], ws)
            try:
                await cp.start()
            except ConnectionClosed:
                pass
    elif kind == "raw":
        canned = {
            "BootNotification": None,
            "StatusNotification": "{}",
            "MeterValues": "{}",
            "Heartbeat": None,
            "StartTransaction": '{"transactionId": 1, "idTagInfo": {"status": "Accepted"}}',
        }

        async def handler(ws) -> None:
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    payload = canned.get(msg[2], "{}")
                    if payload is None:
                        payload = json.dumps({"currentTime": _now_iso(), "interval": 300, "status": "Accepted"})
                    await ws.send(f"[3,{json.dumps(msg[1])},{payload}]")
            except ConnectionClosed:
                pass
    else:
        raise ValueError(f"unknown floor {kind!r}")

    async with serve(handler, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL]) as server:  # type: ignore[list-item]
        gc.collect()
        conn.send(("ready", {"port": server.sockets[0].getsockname()[1]}))
        await _wait_stop(conn)
    return {}


def serve(conn, kind: str, chargers: int, site_size: int, async_validation: bool = False) -> None:
    """Process entry point: serve ``kind`` (``executor``, ``ocpp`` or ``raw``) until told to stop.

    The ``ocpp`` library validates payloads on the event loop, as :mod:`executor.ocpp.ocppj` configures it, in
    every server alike; ``async_validation`` restores the library's default (each payload handed to a
    thread pool), to measure what that costs.
    """
    if kind == "executor":
        import executor  # noqa: F401 - importing it configures the ocpp library

    import ocpp.messages

    ocpp.messages.ASYNC_VALIDATION = async_validation
    counter = _CountingHandler()
    logging.basicConfig(level=logging.WARNING, handlers=[counter])
    pauses = _GcPauses()
    gc.callbacks.append(pauses)
    if kind == "executor":
        stats = asyncio.run(_run_executor(conn, chargers, site_size))
    else:
        stats = asyncio.run(_run_floor(conn, kind))
    stats["gc"] = pauses.summary()  # over the whole life of the process
    stats["log_counts"] = counter.counts
    stats["first_warnings"] = counter.first
    conn.send(("stats", stats))
