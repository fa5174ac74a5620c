"""Signal to charger: how long from a DR signal on the transport until every charger of a 20-charger site
has received its new SetChargingProfile, on the memory transport and on Kafka.

The real service runs: :func:`pipeline.app.loop.start_loop` (embedded engine on its default backend +
executor on one transport, as ``pipeline run`` starts them) with the ``pipeline run`` defaults ``tick_s`` =
1.0 s, the engine service's ``poll_s`` (0.05 s), every executor default (:data:`EXECUTOR`: decreases at
once, increases after the 1 s debounce) and ``pipeline run``'s INFO logging (to a null stream). One site
``S000`` (200 kW main breaker, no building meter) has 20 chargers of 22 kW (3 x 230 V) from
:mod:`benchmarks.ocpp_kit`, each with an open transaction and metering as a real charger does
(:data:`METERING`: MeterValues every 5 s at random phases, the EV drawing its TxProfile limit 2 s after it
arrived, +-30 W of noise), so the executor publishes the readings that move the draw and the engine
evaluates them while the trials run. One DR event (``bench-dr``, already started) is re-signalled each
trial with the curtailment alternating between 20 % and 40 % (160 kW / 120 kW: about 11.5 A and 8.6 A per
charger), so every trial moves all 20 setpoints: odd trials are cuts (decreases), even trials raises
(increases). The raises wait for the debounce by design and are reported apart from the cuts.

One trial: ``t0 = time.perf_counter()``, then the DR record is published on ``utility.dr.signals``
through the transport (on Kafka: a separate producer, as ``pipeline signal`` would); the figure is the
time until the last of the 20 chargers received (perf_counter at its OCPP router, same process) the
TxProfile with its new limit. After a trial the loop settles (the executor idle, the engine not
evaluating, on memory no consumer lag), then one bare fan-out of 20 calls runs (the floor, below), then a
random 0-1 s passes, so signals land at random phases of the engine's 1 s tick and of the meter readings.
A probe on the service's transport and engine splits each trial into: signal -> engine starts publishing
setpoints (consume + evaluate), publishing the 20 setpoints, and the last setpoint published -> last
charger has it (executor dispatch); ``process_cpu`` is this process's CPU time (all threads) over the
trial, which on a shared machine tells the work from the wait for a core. The load average is recorded
before and after.

Floors, same run: the bare fan-out of one SetChargingProfile to 20 charge points at once (the ``ocpp``
library's ``ChargePoint`` behind ``websockets.serve``, nothing else, calling 20
:class:`~benchmarks.ocpp_kit.BenchCharger` that do not meter; until the last receives it), one after each
trial, so figure and floor share the machine's load; on Kafka plus a bare produce (acks=all, idempotent,
as the transport's producer) -> consume on the same broker. Also shown: a bare SetChargingProfile round
trip. Targets (:func:`_cut_targets`): a cut's p99 <= 2 x its floor's p99 (memory: the fan-out; Kafka: the
produce -> consume plus the fan-out), and on memory a cut's median <= 33 ms.

The executor alone (:func:`executor_dispatch_ms`, debounce and EV response lag 0 so its lifts go at once:
:data:`DISPATCH_EXECUTOR`): 20 new setpoints put on ``ocpp.setpoint.commands`` at once until the last
charger holds its TxProfile, each trial followed by a bare fan-out of 20 calls in
the same process as its floor; target: median and p99 within 1.5x the floor's. And
(:func:`first_profile_s`) 20 sessions that start before their chargers' fail-safe profiles are
acknowledged, every executor default: seconds until each holds its first TxProfile. The broker is
``KAFKA_BOOTSTRAP_SERVERS`` if set, else one started by :mod:`tests.kits.kafka_broker` (Docker, else Apache
Kafka from Maven Central run with ``java``), with a fresh topic prefix per run.

    python -m benchmarks latency [--quick] [--json out.json]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

from benchmarks.common import percentiles, ratio, table
from benchmarks.ocpp_kit import (
    BenchCharger,
    Metering,
    Watch,
    bare_round_trips_ms,
    bare_site,
    close_all,
    connect_all,
    site_config,
    timed_fanout,
)
from executor import ExecutorConfig
from pipeline.app.logs import configure_logging
from pipeline.app.loop import start_loop
from pipeline.app.signals import dr_signal
from pipeline.engine.config import EngineConfig
from pipeline.engine.embedded import DEFAULT_BACKEND
from pipeline.transport.base import Transport, publish
from pipeline.transport.memory import MemoryTransport

TICK_S = 1.0  # `pipeline run --tick` default
POLL_S = EngineConfig().poll_s
EXECUTOR = ExecutorConfig(port=0, metrics=False)  # every default: the 1 s debounce of increases included
# the executor alone (executor_dispatch_ms): its lifts go at once, so cuts and lifts are measured back to back
DISPATCH_EXECUTOR = ExecutorConfig(port=0, metrics=False, increase_debounce_s=0.0, ev_response_lag_s=0.0)
METERING = Metering(interval_s=5.0, ev_response_s=2.0, jitter_w=30.0)
CURTAILMENTS_PCT = (20.0, 40.0)
CHARGERS = 20
SITE = "S000"
EVENT = "bench-dr"
COMMANDS = "ocpp.setpoint.commands"
TRIAL_TIMEOUT_S = 30.0
GAP_S = (0.0, 1.0)  # random pause after the loop settled: signals land at random phases of tick and meters
CUT_P99_X_FLOOR = 2.0  # a cut's p99 within this many times its floor's p99
CUT_P50_MS = 33.0  # a cut's median within this, ms


class _Probe:
    """Records when the service publishes setpoints and when its engine evaluates (perf_counter s)."""

    def __init__(self, transport: Transport, engine) -> None:
        self.sends: list[tuple[float, float]] = []  # (send called, send returned) per setpoint record
        self.evals: list[tuple[float, float]] = []
        send, evaluate = transport.send, engine.evaluate

        async def probed_send(topic, key, value, headers=()):
            if topic != COMMANDS:
                return await send(topic, key, value, headers)
            started = time.perf_counter()
            await send(topic, key, value, headers)
            self.sends.append((started, time.perf_counter()))

        def probed_evaluate(*args, **kwargs):
            started = time.perf_counter()
            try:
                return evaluate(*args, **kwargs)
            finally:
                self.evals.append((started, time.perf_counter()))

        transport.send = probed_send
        engine.evaluate = probed_evaluate

    def split(self, t0: float, t_last: float) -> dict | None:
        """Milliseconds of one trial: engine (signal -> first setpoint sent), the evaluation that made
        them, publish (first -> last setpoint sent), dispatch (last sent -> last charger has it)."""
        sends = [s for s in self.sends if t0 <= s[0] <= t_last]
        if not sends:
            return None
        first, last_done = sends[0][0], max(s[1] for s in sends)
        made = [e for e in self.evals if e[1] <= first + 1e-6 and e[1] >= t0]
        return {
            "engine_ms": (first - t0) * 1000,
            "evaluate_ms": (made[-1][1] - made[-1][0]) * 1000 if made else None,
            "publish_ms": (last_done - first) * 1000,
            "dispatch_ms": (t_last - last_done) * 1000,
        }


async def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"latency benchmark: timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def _quiet(chargers: list[BenchCharger], since: float, quiet_s: float = 0.5, timeout_s: float = 60) -> None:
    """Every charger received a TxProfile after ``since`` and none arrived for ``quiet_s``."""
    await _wait(
        lambda: (
            all(c.received_at > since for c in chargers)
            and time.perf_counter() - max(c.received_at for c in chargers) > quiet_s
        ),
        timeout_s,
        "every charger to get a TxProfile and the loop to go quiet",
    )


async def _pipeline_trials(
    transport: Transport, signals: Transport, trials: int, gap_s: tuple[float, float], rng: random.Random
) -> dict:
    """Start the service on ``transport``, connect the metering chargers, run ``trials`` DR trials (cuts and
    raises alternating), each followed by one bare fan-out of 20 calls (its floor, same process and
    moment); returns samples (ms) by direction, the floor samples, the per-trial split and failures."""
    cfg = site_config(CHARGERS)
    devnull = open(os.devnull, "w")  # noqa: SIM115 (closed in finally)
    configure_logging("info", stream=devnull, force=True)  # as `pipeline run` logs (its default level), unread
    service = await start_loop(transport, site=cfg, engine=EngineConfig(tick_s=TICK_S), executor=EXECUTOR)
    assert service.engine is not None and service.executor is not None
    probe = _Probe(transport, service.engine.engine)
    chargers = [BenchCharger(c.id) for c in cfg.sites[0].chargers]
    memory = isinstance(transport, MemoryTransport)
    executor, engine = service.executor, service.engine
    bare = bare_site(CHARGERS)
    central, bare_chargers = await bare.__aenter__()

    async def settled() -> None:
        """The executor is idle and the engine neither busy nor (on memory) behind its input."""
        await _wait(
            lambda: executor.idle and (not memory or transport.lag() == 0) and not engine.busy,
            10,
            "the loop to settle",
        )

    try:
        connected = time.perf_counter()
        await connect_all(chargers, executor.url)
        await asyncio.gather(*(c.start_transaction() for c in chargers))
        for c in chargers:
            c.start_metering(METERING, rng)
        await _quiet(chargers, connected)
        start = datetime.now(UTC) - timedelta(seconds=1)

        async def signal(pct: float) -> None:
            _, record = dr_signal(
                SITE, curtailment_pct=pct, start=start, end=start + timedelta(hours=4), event_id=EVENT
            )
            await publish(signals, "utility.dr.signals", record)

        expected: dict[float, dict[str, float]] = {}
        for pct in CURTAILMENTS_PCT * 2:  # warm up; learn each state's limits
            t0 = time.perf_counter()
            await signal(pct)
            await _quiet(chargers, t0, quiet_s=1.5)
            expected[pct] = {c.cp_id: c.limit for c in chargers}
        low, high = (expected[p] for p in CURTAILMENTS_PCT)
        if any(low[cp] == high[cp] for cp in low):
            raise RuntimeError(f"the two DR states leave some setpoints unchanged: {low} / {high}")
        samples: dict[str, list[float]] = {"decrease": [], "increase": []}
        floor: list[float] = []
        splits: list[dict] = []
        failures = 0
        previous = CURTAILMENTS_PCT[-1]
        for i in range(trials):
            pct = CURTAILMENTS_PCT[i % 2]
            direction = "decrease" if pct > previous else "increase"
            watch = Watch(expected[pct])
            for c in chargers:
                c.watch = watch
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            await signal(pct)
            try:
                await asyncio.wait_for(watch.done.wait(), TRIAL_TIMEOUT_S)
            except TimeoutError:
                failures += 1
            else:
                cpu_ms = (time.process_time() - cpu0) * 1000
                t_last = max(watch.held_at.values())
                samples[direction].append((t_last - t0) * 1000)
                if (part := probe.split(t0, t_last)) is not None:
                    splits.append({**part, "process_cpu_ms": cpu_ms, "direction": direction})
            previous = pct
            for c in chargers:
                c.watch = None
            with contextlib.suppress(TimeoutError):
                await settled()
            calls = [(central.links[ch.cp_id], ch, 8.0 + i % 2, 1) for ch in bare_chargers]
            floor.append((await timed_fanout(calls))[0])
            await asyncio.sleep(rng.uniform(*gap_s))
        stats = service.engine.stats
        return {
            "samples": samples,
            "floor": floor,
            "splits": splits,
            "failures": failures,
            "limits_a": {str(p): sorted(set(v.values())) for p, v in expected.items()},
            "engine_evaluations": stats.evaluations,
            "engine_records_in": stats.records_in,
            "meter_values_sent": sum(c.meter_values_sent for c in chargers),
        }
    finally:
        await bare.__aexit__(None, None, None)
        await close_all(chargers)
        await service.stop()
        configure_logging("warning", stream=sys.stderr, force=True)
        devnull.close()


def _split_rows(transport: str, splits: list[dict], direction: str = "decrease") -> list[dict]:
    rows = []
    for part in ("engine_ms", "evaluate_ms", "publish_ms", "dispatch_ms", "process_cpu_ms"):
        values = [s[part] for s in splits if s.get(part) is not None and s["direction"] == direction]
        if values:
            rows.append(
                {
                    "transport": transport,
                    "trials": {"decrease": "cuts", "increase": "raises"}[direction],
                    "part": part.removesuffix("_ms"),
                    "median": round(statistics.median(values), 2),
                    **{k: v for k, v in percentiles(values).items() if k in ("p95", "p99", "max")},
                }
            )
    return rows


def _rows(transport: str, run: dict, floor: dict, extra: dict | None = None) -> list[dict]:
    """One row per direction: the trials' percentiles beside ``floor`` (percentiles, ms) and the ratios.
    ``extra`` (percentiles, ms; the bare Kafka produce -> consume) is added to the floor."""
    out = []
    f50, f99 = floor.get("p50"), floor.get("p99")
    if extra is not None and f50 is not None and f99 is not None:
        f50, f99 = round(f50 + extra["p50"], 2), round(f99 + extra["p99"], 2)
    for label, values in (("cuts", run["samples"]["decrease"]), ("raises", run["samples"]["increase"])):
        p = percentiles(values)
        out.append(
            {
                "transport": transport,
                "trials": label,
                **p,
                "floor_p50": f50,
                "floor_p99": f99,
                "ratio_p50": ratio(p.get("p50"), f50),
                "ratio_p99": ratio(p.get("p99"), f99),
            }
        )
    return out


def _cut_targets(transport: str, row: dict, floor_text: str) -> list[dict]:
    """The cut targets of one transport: p99 within :data:`CUT_P99_X_FLOOR` x the floor's p99, and on
    memory the median within :data:`CUT_P50_MS`."""
    p99, f99 = row.get("p99"), row.get("floor_p99")
    out = [
        {
            "text": f"{transport}: DR cut p99 within {CUT_P99_X_FLOOR:g}x ({floor_text}) p99, same run",
            "figure_ms": p99,
            "floor_ms": f99,
            "ratio": ratio(p99, f99),
            "met": p99 is not None and f99 is not None and p99 <= CUT_P99_X_FLOOR * f99,
        }
    ]
    if transport == "memory":
        p50 = row.get("p50")
        out.append(
            {
                "text": f"memory: DR cut median within {CUT_P50_MS:g} ms",
                "figure_ms": p50,
                "floor_ms": row.get("floor_p50"),
                "ratio": ratio(p50, row.get("floor_p50")),
                "met": p50 is not None and p50 <= CUT_P50_MS,
            }
        )
    return out


DISPATCH_LIMITS_A = (11.5, 8.6)  # alternating per trial: every trial moves all 20 limits (a cut, then a lift)


async def executor_dispatch_ms(trials: int, rng: random.Random, profile: str | None = None) -> dict:
    """The executor alone beside its floor: ``trials`` times, 20 new setpoints (one per charger,
    alternating between :data:`DISPATCH_LIMITS_A`, so cuts and lifts alternate) go on
    ``ocpp.setpoint.commands`` at once (memory transport, as the engine's sink publishes them), and the
    figure is ``t0`` -> the last of the 20 chargers received its TxProfile. Each trial is followed by one
    bare fan-out (:func:`benchmarks.ocpp_kit.timed_fanout` on a bare central system with 20 chargers of
    its own), so figure and floor share the machine's load moment by moment.

    Returns ``{"samples", "floor", "cpu_ms", "floor_cpu_ms", "failures"}`` (ms lists; CPU is this
    process's, chargers included); with ``profile`` (a path) the executor's trials run under pyinstrument
    (if installed) and its text report is written there."""
    from executor import Executor
    from pipeline.contracts.topics import SETPOINT_COMMANDS, SetpointCommand

    cfg = site_config(CHARGERS)
    transport = MemoryTransport()
    loop = await start_loop(transport, site=cfg, executor=DISPATCH_EXECUTOR)
    executor: Executor | None = loop.executor
    assert executor is not None
    chargers = [BenchCharger(c.id) for c in cfg.sites[0].chargers]
    profiler = None
    bare = bare_site(CHARGERS)
    central, bare_chargers = await bare.__aenter__()
    try:
        await connect_all(chargers, executor.url)
        await asyncio.gather(*(c.start_transaction() for c in chargers))
        await _wait(lambda: executor.idle, 30, "the executor to install the fail-safe profiles")

        async def send(limit_a: float) -> None:
            now = datetime.now(UTC)
            for c in chargers:
                info = executor._topology.charger(c.cp_id)
                assert info is not None
                command = SetpointCommand(
                    session_id=f"{c.cp_id}-{c.transaction_id}",
                    charge_point_id=c.cp_id,
                    connector_id=1,
                    transaction_id=str(c.transaction_id),
                    site_id=SITE,
                    node_id=info.node_id,
                    setpoint_kw=round(limit_a * 3 * 230 / 1000, 4),
                    setpoint_a=limit_a,
                    phases=3,
                    voltage_v=230.0,
                    node_limit_kw=200.0,
                    site_limit_kw=200.0,
                    binding="bench",
                    computed_at=now,
                )
                await publish(transport, SETPOINT_COMMANDS, command)

        for limit in DISPATCH_LIMITS_A * 3:  # warm up
            watch = Watch({c.cp_id: limit for c in chargers})
            for c in chargers:
                c.watch = watch
            await send(limit)
            await asyncio.wait_for(watch.done.wait(), TRIAL_TIMEOUT_S)
            await _wait(lambda: executor.idle, 10, "the executor to go idle")
        if profile is not None:
            with contextlib.suppress(ImportError):
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0002, async_mode="disabled")
                profiler.start()
        samples: list[float] = []
        cpu: list[float] = []
        floor: list[float] = []
        floor_cpu: list[float] = []
        failures = 0
        for i in range(trials):
            limit = DISPATCH_LIMITS_A[i % 2]
            if profiler is not None:
                profiler.stop()
            cpu0 = time.process_time()
            calls = [(central.links[ch.cp_id], ch, limit, 1) for ch in bare_chargers]
            floor.append((await timed_fanout(calls))[0])
            floor_cpu.append((time.process_time() - cpu0) * 1000)
            if profiler is not None:
                profiler.start()
            watch = Watch({c.cp_id: limit for c in chargers})
            for c in chargers:
                c.watch = watch
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            await send(limit)
            try:
                await asyncio.wait_for(watch.done.wait(), TRIAL_TIMEOUT_S)
            except TimeoutError:
                failures += 1
            else:
                samples.append((max(watch.held_at.values()) - t0) * 1000)
                cpu.append((time.process_time() - cpu0) * 1000)
            await _wait(lambda: executor.idle and transport.lag() == 0, 10, "the executor to go idle")
            await asyncio.sleep(rng.uniform(0.0, 0.01))
        return {"samples": samples, "floor": floor, "cpu_ms": cpu, "floor_cpu_ms": floor_cpu, "failures": failures}
    finally:
        await bare.__aexit__(None, None, None)
        if profiler is not None and profile is not None:
            profiler.stop()
            with open(profile, "w") as out:
                out.write(profiler.output_text(unicode=False, color=False, show_all=False))
        await close_all(chargers)
        await loop.stop()


async def first_profile_s(chargers: int = CHARGERS) -> dict:
    """Sessions that start before their chargers' fail-safe profiles are acknowledged: ``chargers`` boot on
    the whole loop (engine + executor, every default: 1 s debounce, 10 s EV response lag) and start a
    transaction at once; seconds from the starts until each charger holds its first TxProfile
    (``{"first_s", "last_s"}``). Before the ledger's own-cover rule these waited for the lag (about 10 s)."""
    cfg = site_config(chargers)
    transport = MemoryTransport()
    loop = await start_loop(
        transport, site=cfg, engine=EngineConfig(tick_s=TICK_S), executor=ExecutorConfig(port=0, metrics=False)
    )
    assert loop.executor is not None
    bench = [BenchCharger(c.id) for c in cfg.sites[0].chargers]
    try:
        await connect_all(bench, loop.executor.url)
        t0 = time.perf_counter()
        await asyncio.gather(*(c.start_transaction() for c in bench))
        await _wait(lambda: all(c.count for c in bench), 60, "every charger to get its first TxProfile")
        got = sorted(c.received_at - t0 for c in bench)
        return {"chargers": chargers, "first_s": round(got[0], 2), "last_s": round(got[-1], 2)}
    finally:
        await close_all(bench)
        await loop.stop()


async def _memory_part(trials: int, floor_samples: int, rng: random.Random, dispatch: bool = True) -> dict:
    ocpp = await bare_round_trips_ms(floor_samples, lambda: rng.uniform(0.0, 0.002))
    out: dict = {"ocpp": ocpp}
    if dispatch:
        out["dispatch"] = await executor_dispatch_ms(trials, rng)
        out["first_profile"] = await first_profile_s()
    transport = MemoryTransport()
    out["run"] = await _pipeline_trials(transport, transport, trials, GAP_S, rng)
    return out


async def bare_kafka_ms(settings, samples: int, rng: random.Random) -> list[float]:
    """``samples`` bare Kafka produce -> consume times (ms) on a fresh one-partition topic: aiokafka's
    producer (acks=all, idempotent, linger 0) sends one record and waits for its ack; an assigned
    consumer (no group) stamps its arrival. Ten warm-up records are not counted."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    options = settings.client_options()
    topic = f"{settings.topic_prefix}bench.floor"
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True, linger_ms=0)
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0)])
    arrived: dict[bytes, float] = {}
    wake = asyncio.Event()

    async def read() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    arrived[record.value] = now
            wake.set()

    reader = asyncio.create_task(read())
    out: list[float] = []
    try:
        for i in range(samples + 10):
            value = f"{i}".encode()
            t0 = time.perf_counter()
            await producer.send_and_wait(topic, value)
            while value not in arrived:
                wake.clear()
                await asyncio.wait_for(wake.wait(), 30)
            if i >= 10:
                out.append((arrived[value] - t0) * 1000)
            await asyncio.sleep(rng.uniform(0.0, 0.005))
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    return out


async def _kafka_part(bootstrap: str, trials: int, floor_samples: int, rng: random.Random) -> dict:
    from pipeline.transport.config import KafkaSettings
    from pipeline.transport.kafka import KafkaTransport

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # leader elections of the fresh topics; retried
    settings = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"bench-{uuid.uuid4().hex[:10]}.")
    floor = await bare_kafka_ms(settings, floor_samples, rng)
    signals = KafkaTransport(settings)
    await signals.start()
    try:
        run = await _pipeline_trials(KafkaTransport(settings), signals, trials, GAP_S, rng)
    finally:
        await signals.close()
    return {"kafka": floor, "run": run, "topic_prefix": settings.topic_prefix}


def _kafka(trials: int, floor_samples: int, rng: random.Random) -> dict:
    """The Kafka half, on ``KAFKA_BOOTSTRAP_SERVERS`` or a broker started here (and stopped after)."""
    from pathlib import Path

    from tests.kits.kafka_broker import BrokerUnavailable, session_broker

    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as workdir:
        try:
            # Started on this (the main) thread: the broker is told to exit when the thread that spawned it dies.
            broker = session_broker(Path(workdir))
        except BrokerUnavailable as exc:
            return {"skipped": str(exc)}
        try:
            part = asyncio.run(_kafka_part(broker.bootstrap_servers, trials, floor_samples, rng))
            part["broker"] = broker.description
            return part
        finally:
            broker.close()


def run(quick: bool = False, dispatch: bool = True) -> dict:
    """Measure; returns ``rows`` (ms percentiles per transport and direction with floors and ratios),
    ``floors``, ``breakdown`` (ms per part of a trial), ``target`` (a list: text, figure, limit, met),
    ``settings`` and per-transport details. ``dispatch=False`` leaves out the executor-alone figures."""
    trials, floor_samples = (20, 100) if quick else (200, 500)
    rng = random.Random(7)
    load_before = [round(x, 2) for x in os.getloadavg()]
    memory = asyncio.run(_memory_part(trials, floor_samples, rng, dispatch))
    kafka = _kafka(trials, floor_samples, rng)
    ocpp = percentiles(memory["ocpp"])
    fanout = percentiles(memory["run"]["floor"])
    floors = {"ocpp_round_trip_ms": ocpp, "ocpp_fanout_20_interleaved_memory_ms": fanout}
    rows = _rows("memory", memory["run"], fanout)
    breakdown = _split_rows("memory", memory["run"]["splits"]) + _split_rows(
        "memory", memory["run"]["splits"], "increase"
    )
    target = _cut_targets("memory", rows[0], "the bare fan-out of 20 calls")
    details: dict = {
        "memory": {
            k: memory["run"][k]
            for k in ("failures", "limits_a", "engine_evaluations", "engine_records_in", "meter_values_sent")
        }
    }
    result: dict = {}
    if dispatch:
        dispatch_floor = percentiles(memory["dispatch"]["floor"])
        result["dispatch"] = _dispatch_row(memory["dispatch"], dispatch_floor, target)
        result["first_profile"] = memory["first_profile"]
        floors["ocpp_fanout_20_interleaved_dispatch_ms"] = dispatch_floor
        details["dispatch_failures"] = memory["dispatch"]["failures"]
    if "skipped" in kafka:
        details["kafka"] = kafka
        target.append({"text": "kafka: DR cut p99", "figure_ms": None, "met": None, "skipped": kafka["skipped"]})
    else:
        bare = percentiles(kafka["kafka"])
        kafka_fanout = percentiles(kafka["run"]["floor"])
        floors["kafka_produce_consume_ms"] = bare
        floors["ocpp_fanout_20_interleaved_kafka_ms"] = kafka_fanout
        kafka_rows = _rows("kafka", kafka["run"], kafka_fanout, bare)
        rows += kafka_rows
        breakdown += _split_rows("kafka", kafka["run"]["splits"]) + _split_rows(
            "kafka", kafka["run"]["splits"], "increase"
        )
        target += _cut_targets("kafka", kafka_rows[0], "bare Kafka produce->consume + bare fan-out of 20 calls")
        details["kafka"] = {
            "broker": kafka["broker"],
            "topic_prefix": kafka["topic_prefix"],
            **{
                k: kafka["run"][k]
                for k in ("failures", "limits_a", "engine_evaluations", "engine_records_in", "meter_values_sent")
            },
        }
    return {
        "rows": rows,
        **result,
        "floors": floors,
        "breakdown": breakdown,
        "target": target,
        "details": details,
        "settings": {
            "chargers": CHARGERS,
            "site_limit_kw": 200.0,
            "charger_kw": 22.0,
            "trials": trials,
            "signal": f"DR curtailment alternating {CURTAILMENTS_PCT[0]:g}/{CURTAILMENTS_PCT[1]:g} %",
            "tick_s": TICK_S,
            "poll_s": POLL_S,
            "backend": DEFAULT_BACKEND,
            "executor": "defaults (increase_debounce_s 1.0, ev_response_lag_s 10.0)",
            "metering": {
                "interval_s": METERING.interval_s,
                "ev_response_s": METERING.ev_response_s,
                "jitter_w": METERING.jitter_w,
            },
            "gap_s": list(GAP_S),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "measured": "publish of the DR record -> the last of the 20 chargers received its TxProfile",
        },
    }


def _dispatch_row(dispatch_run: dict, dispatch_floor: dict, target: list[dict]) -> dict:
    """The executor-alone row beside its floor; appends its two targets to ``target``."""
    dispatch = percentiles(dispatch_run["samples"])
    row = {
        "figure": "executor: 20 new limits on ocpp.setpoint.commands -> last charger has its TxProfile",
        **dispatch,
        "floor_p50": dispatch_floor.get("p50"),
        "floor_p99": dispatch_floor.get("p99"),
        "ratio_p50": ratio(dispatch.get("p50"), dispatch_floor.get("p50")),
        "ratio_p99": ratio(dispatch.get("p99"), dispatch_floor.get("p99")),
        "cpu_ms_p50": round(statistics.median(dispatch_run["cpu_ms"]), 2),
        "floor_cpu_ms_p50": round(statistics.median(dispatch_run["floor_cpu_ms"]), 2),
    }
    for key in ("p50", "p99"):
        target.append(
            {
                "text": f"executor dispatch of 20 new limits: {key} within 1.5x the bare fan-out of 20 calls "
                f"({key}, interleaved trial by trial)",
                "figure_ms": dispatch.get(key),
                "floor_ms": dispatch_floor.get(key),
                "ratio": row[f"ratio_{key}"],
                "met": row[f"ratio_{key}"] is not None and row[f"ratio_{key}"] <= 1.5,
            }
        )
    return row


def tables(result: dict) -> list:
    s = result["settings"]
    m = s["metering"]
    caption = (
        f"{s['chargers']} chargers metering every {m['interval_s']:g} s (EV response {m['ev_response_s']:g} s), "
        f"{s['signal']}; backend {s['backend']}; tick {s['tick_s']} s, poll {s['poll_s']} s; executor "
        f"{s['executor']}; floor: the bare fan-out of 20 calls after each trial (kafka: plus the bare "
        f"produce->consume); ratio = figure / floor"
    )
    out = [
        table(
            "Signal to charger: DR publish -> last of 20 chargers has its TxProfile (ms)",
            ("transport", "trials", "n", "p50", "p95", "p99", "floor_p50", "floor_p99", "ratio_p50", "ratio_p99"),
            result["rows"],
            caption,
        )
    ]
    if "dispatch" in result:
        d = result["dispatch"]
        out.append(
            table(
                "Executor dispatch: 20 new limits -> last of 20 chargers has its TxProfile (ms)",
                (
                    "n",
                    "p50",
                    "p95",
                    "p99",
                    "floor_p50",
                    "floor_p99",
                    "ratio_p50",
                    "ratio_p99",
                    "cpu_ms_p50",
                    "floor_cpu_ms_p50",
                ),
                [d],
                "the executor alone on the memory transport (no engine); floor: a bare fan-out of 20 "
                "SetChargingProfile calls (the ocpp library over websockets) run after each trial, same process; "
                "cpu: this process per trial, chargers included",
            )
        )
        out.append(
            table(
                "Sessions started before their fail-safe profiles are acknowledged: start -> first TxProfile (s)",
                ("chargers", "first_s", "last_s"),
                [result["first_profile"]],
                "every executor default (1 s debounce, 10 s EV response lag); all 20 start at once",
            )
        )
    floors = [{"floor": name.removesuffix("_ms"), **p} for name, p in result["floors"].items()]
    out.append(table("Floors (ms)", ("floor", "n", "p50", "p95", "p99", "max"), floors))
    out.append(
        table(
            "Where a trial's time goes (ms)",
            ("transport", "trials", "part", "median", "p95", "p99", "max"),
            result["breakdown"],
            "engine: signal -> first setpoint sent; evaluate: the evaluation that made them; publish: "
            "first -> last setpoint sent; dispatch: last setpoint sent -> last charger has it; "
            f"process_cpu: CPU time of this process over the trial (load average "
            f"{s['loadavg_before'][0]} before, {s['loadavg_after'][0]} after)",
        )
    )
    targets = [
        {
            "target": t["text"],
            "figure_ms": t.get("figure_ms"),
            "floor_ms": t.get("floor_ms"),
            "ratio": t.get("ratio"),
            "met": {True: "yes", False: "NO", None: "skipped"}[t["met"]],
        }
        for t in result["target"]
    ]
    out.append(table("Targets", ("target", "figure_ms", "floor_ms", "ratio", "met"), targets))
    return out


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["latency", *sys.argv[1:]]))
