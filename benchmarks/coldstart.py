"""Cold-start convergence: an executor (re)starts with 20 or 1,000 chargers that have active sessions;
how long until every charger holds its correct TxProfile?

Set-up (not measured), per size: the real service (:func:`pipeline.app.loop.start_loop`: embedded engine
+ executor on a :class:`~pipeline.transport.MemoryTransport`, defaults) with the chargers in sites of 20
(each site: 200 kW main breaker, 20 x 22 kW 3 x 230 V chargers, so 10 kW each) of light
:class:`~benchmarks.ocpp_kit.BenchCharger`. They connect, boot and start a transaction; the engine computes
the setpoints and the executor installs them (increases not held back, :data:`SETUP_OPTIONS`, to save
the set-up ten seconds of EV response lag), until every charger holds its setpoint. Then the service
stops (engine and executor: the connections close), leaving on the transport what a running pipeline
leaves: topology, open sessions, setpoints and the executor's acks.

Measured, ``repeats`` times per size: a fresh :class:`executor.Executor` (defaults, except
``boot_wait_s=60`` so a silent connection waits for its charger's first message) starts on that
transport and rebuilds (sessions, desired setpoints, what is in force); the chargers reconnect without
rebooting and stay silent until all are connected. ``t0`` (``time.perf_counter``) is taken then, and every
charger sends its first message (StatusNotification ``Charging``, as a reconnecting charger does); the
executor then does per charger what it does on every connection: the TxProfile (a resend of what is in
force goes first, like a decrease, in the unit the acks say the charger accepted), GetConfiguration for
the rate unit, the station maximum, the TxDefaultProfile and the lift. The figure is ``t0`` -> the last charger received (at its OCPP router,
same process clock) the TxProfile whose limit is its setpoint; the first such receipt is shown too. The
executor's rebuild and the reconnections happen before ``t0`` and are reported apart. The engine is not
running during the measurement (the setpoints are already on the topic; in production the executor runs
alone beside the engine).

Floor, same run, on the same connections once the executor is idle: the central system calls
SetChargingProfile (the same TxProfile each charger holds) on every connected charger at once, through the
executor's own library ``ChargePoint`` objects and nothing else; the floor is ``t0`` -> the last charger
received it (like with like; the time until the last answer is shown too), median of ``floor_repeats``.
Target: the 1,000-charger cold start within 1.5x that floor. This process's CPU time over the interval and
over the floor, and the load average, are reported too: on a shared machine they tell work from waiting.
Full mode: 20 chargers (5 restarts) and 1,000 (2 restarts); quick: 20 and 100 (2 each).

    python -m benchmarks coldstart [--quick] [--json out.json]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

from benchmarks.common import ratio, table
from benchmarks.ocpp_kit import BenchCharger, Watch, close_all, connect_all, site_config, timed_fanout
from executor import Executor, ExecutorConfig
from executor.planning import floor01
from pipeline.app.loop import start_loop
from pipeline.engine.config import EngineConfig
from pipeline.transport.memory import MemoryTransport

PER_SITE = 20
SITE_LIMIT_KW = 200.0
BOOT_WAIT_S = 60.0
TIMEOUT_S = 600.0
SETUP_OPTIONS = {"increase_debounce_s": 0.0, "ev_response_lag_s": 0.0}  # the set-up only: no 10 s wait for EVs


async def _wait(predicate, timeout_s: float, what: str, step_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"cold-start benchmark: timed out waiting for {what}")
        await asyncio.sleep(step_s)


def _expected(executor: Executor) -> dict[str, float]:
    """``{charge_point_id: TxProfile limit (A)}`` the executor wants each charger to hold."""
    return {cp: floor01(setpoint_a) for (cp, _), setpoint_a in executor.desired_setpoints().items()}


async def _prepare(n: int) -> tuple[MemoryTransport, list[BenchCharger], dict[str, float], dict]:
    """Run the whole loop until ``n`` chargers hold their setpoints, then stop it; returns the transport,
    the (disconnected) chargers, each one's expected limit and set-up timings (s)."""
    cfg = site_config(n, PER_SITE, SITE_LIMIT_KW)
    transport = MemoryTransport()
    service = await start_loop(
        transport, site=cfg, engine=EngineConfig(), executor=ExecutorConfig(port=0, metrics=False, **SETUP_OPTIONS)
    )
    assert service.executor is not None
    chargers = [BenchCharger(c.id) for site in cfg.sites for c in site.chargers]
    started = time.perf_counter()
    try:
        await connect_all(chargers, service.executor.url)
        connected = time.perf_counter()
        for i in range(0, n, 100):
            await asyncio.gather(*(c.start_transaction() for c in chargers[i : i + 100]))

        def converged() -> bool:
            expected = _expected(service.executor)
            return (
                len(expected) == n
                and all(c.limit == expected[c.cp_id] for c in chargers)
                and service.executor.idle
                and transport.lag() == 0
            )

        await _wait(converged, TIMEOUT_S, f"{n} chargers to hold their setpoints in the set-up", 0.05)
        expected = _expected(service.executor)
    finally:
        await service.stop()
        await close_all(chargers)
    timings = {
        "connect_s": round(connected - started, 2),
        "setup_converge_s": round(time.perf_counter() - connected, 2),
    }
    return transport, chargers, expected, timings


async def _restart(
    transport: MemoryTransport, chargers: list[BenchCharger], expected: dict[str, float], floor_repeats: int
) -> dict:
    """One measured executor start on ``transport`` (see the module docstring); milliseconds."""
    n = len(chargers)
    started = time.perf_counter()
    loop = await start_loop(transport, executor=ExecutorConfig(port=0, metrics=False, boot_wait_s=BOOT_WAIT_S))
    assert loop.executor is not None
    executor = loop.executor
    rebuilt = time.perf_counter()
    try:
        await connect_all(chargers, executor.url, boot=False)
        await _wait(lambda: len(executor.stations) == n, 60, "every charger to reconnect")
        reconnected = time.perf_counter()
        calls_before = sum(c.calls for c in chargers)
        watch = Watch(expected)
        for c in chargers:
            c.watch = watch

        async def first_messages() -> float:
            await asyncio.gather(*(c.status() for c in chargers))
            return time.perf_counter()

        cpu0 = time.process_time()
        t0 = time.perf_counter()
        first = asyncio.create_task(first_messages())
        await asyncio.wait_for(watch.done.wait(), TIMEOUT_S)
        cpu = time.process_time() - cpu0
        held = sorted(watch.held_at.values())
        answered_at = await first
        for c in chargers:
            c.watch = None
        await _wait(lambda: executor.idle, 120, "the executor to finish the station profiles")
        idle = time.perf_counter()
        calls = sum(c.calls for c in chargers) - calls_before
        floors, floor_cpu = [], []
        for _ in range(floor_repeats):
            stations = executor.stations
            cpu0 = time.process_time()
            floors.append(
                await timed_fanout([(stations[c.cp_id], c, expected[c.cp_id], c.transaction_id) for c in chargers])
            )
            floor_cpu.append(time.process_time() - cpu0)
    finally:
        await loop.stop()
        await close_all(chargers)
    return {
        "rebuild_ms": (rebuilt - started) * 1000,
        "reconnect_ms": (reconnected - rebuilt) * 1000,
        "first_ms": (held[0] - t0) * 1000,
        "last_ms": (held[-1] - t0) * 1000,
        "idle_ms": (idle - t0) * 1000,
        "status_answered_ms": (answered_at - t0) * 1000,
        "last_config_ms": (max(c.config_at for c in chargers) - t0) * 1000,
        "calls_per_charger": calls / n,
        "cpu_ms": cpu * 1000,
        "floor_cpu_ms": statistics.median(floor_cpu) * 1000,
        "floor_received_ms": statistics.median(f[0] for f in floors),
        "floor_answered_ms": statistics.median(f[1] for f in floors),
    }


async def measure(n: int, repeats: int, floor_repeats: int) -> dict:
    """Set up ``n`` chargers, then ``repeats`` measured restarts; one row (medians over the restarts, ms)."""
    transport, chargers, expected, setup = await _prepare(n)
    runs = [await _restart(transport, chargers, expected, floor_repeats) for _ in range(repeats)]

    def med(key: str, digits: int = 1) -> float:
        return round(statistics.median(r[key] for r in runs), digits)

    last, floor = med("last_ms"), med("floor_received_ms")
    return {
        "chargers": n,
        "sites": -(-n // PER_SITE),
        "repeats": repeats,
        "first_ms": med("first_ms"),
        "last_ms": last,
        "last_ms_runs": [round(r["last_ms"], 1) for r in runs],
        "idle_ms": med("idle_ms"),
        "floor_ms": floor,
        "floor_answered_ms": med("floor_answered_ms"),
        "ratio": ratio(last, floor),
        "calls_per_charger": med("calls_per_charger", 2),
        "cpu_ms": med("cpu_ms"),
        "floor_cpu_ms": med("floor_cpu_ms"),
        "cpu_ratio": ratio(med("cpu_ms"), med("floor_cpu_ms")),
        "status_answered_ms": med("status_answered_ms"),
        "last_config_ms": med("last_config_ms"),
        "rebuild_ms": med("rebuild_ms"),
        "reconnect_ms": med("reconnect_ms"),
        **setup,
    }


def run(quick: bool = False) -> dict:
    """Measure each size; returns ``rows`` (one per size: first/last convergence, floor, ratio, ms),
    ``target`` (a list with one entry: text, figure, floor, ratio, met) and ``settings``."""
    sizes = ((20, 2, 2), (100, 2, 2)) if quick else ((20, 5, 3), (1000, 2, 2))
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = [asyncio.run(measure(n, repeats, floor_repeats)) for n, repeats, floor_repeats in sizes]
    big = rows[-1]
    target = [
        {
            "text": f"{big['chargers']:,} chargers: cold start (last charger holds its TxProfile) within 1.5x "
            f"the bare concurrent SetChargingProfile round trips on the same connections",
            "figure_ms": big["last_ms"],
            "floor_ms": big["floor_ms"],
            "ratio": big["ratio"],
            "met": big["ratio"] is not None and big["ratio"] <= 1.5,
        }
    ]
    return {
        "rows": rows,
        "target": target,
        "floors": {r["chargers"]: r["floor_ms"] for r in rows},
        "ratios": {r["chargers"]: r["ratio"] for r in rows},
        "settings": {
            "per_site": PER_SITE,
            "site_limit_kw": SITE_LIMIT_KW,
            "charger_kw": 22.0,
            "executor_options": {"boot_wait_s": BOOT_WAIT_S},
            "transport": "memory",
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "measured": "all chargers connected, executor rebuilt -> first message sent -> "
            "the last charger received the TxProfile with its setpoint",
        },
    }


def tables(result: dict) -> list:
    s = result["settings"]

    def ms(value: float) -> int:
        return int(round(value))

    rows = [
        {
            "chargers": r["chargers"],
            "sites": r["sites"],
            "first": ms(r["first_ms"]),
            "last": ms(r["last_ms"]),
            "floor": ms(r["floor_ms"]),
            "ratio": r["ratio"],
            "idle": ms(r["idle_ms"]),
            "calls": r["calls_per_charger"],
            "status": ms(r["status_answered_ms"]),
            "getconf": ms(r["last_config_ms"]),
            "cpu": ms(r["cpu_ms"]),
            "floor_cpu": ms(r["floor_cpu_ms"]),
            "rebuild": ms(r["rebuild_ms"]),
            "reconnect": ms(r["reconnect_ms"]),
            "answered": ms(r["floor_answered_ms"]),
            "setup_s": round(r["connect_s"] + r["setup_converge_s"], 1),
        }
        for r in result["rows"]
    ]
    out = [
        table(
            "Cold start: all connected -> every charger holds its TxProfile (ms, median of repeats)",
            ("chargers", "sites", "first", "last", "floor", "ratio", "idle", "calls"),
            rows,
            "floor: one SetChargingProfile to every charger at once on the same connections, until the "
            "last receives it; ratio = last / floor; idle: until the executor has nothing left to send; "
            "calls: calls per charger the executor made",
        )
    ]
    out.append(
        table(
            "Cold start: where the time goes (ms from t0)",
            ("chargers", "status", "getconf", "first", "last", "cpu", "floor_cpu"),
            rows,
            f"status: every charger's first message answered; getconf: the last GetConfiguration received; "
            f"first, last: the first and last TxProfile received; cpu: this process's CPU time over t0 -> last "
            f"(floor_cpu: over the floor); load average {s['loadavg_before'][0]} before, {s['loadavg_after'][0]} after",
        )
    )
    out.append(
        table(
            "Cold start: before t0 (ms), the floor's answers, the set-up (s)",
            ("chargers", "rebuild", "reconnect", "answered", "setup_s"),
            rows,
            "rebuild: the executor's start (reading the topics); reconnect: every charger connected again; "
            "answered: the floor until the last answer came back; setup_s: the unmeasured set-up",
        )
    )
    targets = [
        {
            "target": t["text"],
            "figure_ms": t["figure_ms"],
            "floor_ms": t["floor_ms"],
            "ratio": t["ratio"],
            "met": "yes" if t["met"] else "NO",
        }
        for t in result["target"]
    ]
    out.append(table("Target", ("target", "figure_ms", "floor_ms", "ratio", "met"), targets))
    return out


if __name__ == "__main__":
    import sys

    from benchmarks.__main__ import main

    sys.exit(main(["coldstart", *sys.argv[1:]]))
