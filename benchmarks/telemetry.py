"""Telemetry cost: CPU per 1,000 MeterValues at 1,000 chargers, executor + engine on the memory transport.

The real service runs (:func:`pipeline.app.loop.start_loop`: embedded engine + executor, ``pipeline run``
defaults) with 1,000 chargers in sites of 20 (:func:`benchmarks.ocpp_kit.site_config`). The chargers are
not websocket clients: each is the executor's own OCPP 1.6 station (:class:`executor.ocpp.v16.CentralSystemV16`)
on a connection that only swallows what is sent, fed raw OCPP-J frames through its router, so this process's
CPU is the executor's (frame parsing, schema validation, the session upsert, the outbox) and the engine's
(consuming and evaluating), nothing of a charger's.

Each charger starts a transaction and sends one warm-up reading stamped a random 0 s to one heartbeat
(``meter_heartbeat_s``, 120 s) in the past, so the executor's meter heartbeats fall due evenly over the
window, as in a long run. Then, for ``window_s`` real
seconds, every charger sends a MeterValues every ``interval_s`` at a random phase: power at its setpoint
with +-30 W of meter jitter, the energy register advancing at that power, SoC. The figure is this process's
CPU time (all threads) from the window's start until the engine has consumed and evaluated everything,
per 1,000 MeterValues, and the same net of the idle CPU the loop burns meanwhile without readings (the
engine's timer ticks), measured before the window.

Sizes: 20 chargers for 60 s and 1,000 for 30 s (quick: 20 and 200 for 10 s). Three runs per size, same
process: ``every reading`` (``meter_heartbeat_s=0``: each reading published,
as before :mod:`executor.telemetry`), ``deadband`` (the default: a reading is published when it moves a
field the views read beyond its deadband, or at the heartbeat), and the floor, ``executor alone``
(no engine: parsing and folding the readings, every one published to the transport).

    python -m benchmarks telemetry [--quick] [--json out.json]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from benchmarks.common import table
from benchmarks.ocpp_kit import site_config
from executor import ExecutorConfig
from executor.ocpp import v16
from executor.ocpp.station import StationOptions
from pipeline.app.loop import start_loop
from pipeline.engine.config import EngineConfig
from pipeline.transport.memory import MemoryTransport

HEARTBEAT_S = ExecutorConfig().meter_heartbeat_s
POWER_W = 10_000.0
JITTER_W = 30.0
_ids = count(1)


class _Sink:
    """A websocket connection that keeps only the last frame sent (the answer to the last call)."""

    def __init__(self) -> None:
        self.last: str | None = None

    async def send(self, message: str) -> None:
        self.last = message

    async def recv(self) -> str:  # pragma: no cover - never served
        await asyncio.Event().wait()
        return ""


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _frame(action: str, payload: dict) -> str:
    return json.dumps([2, str(next(_ids)), action, payload])


def _reading(tx: int, when: datetime, energy_wh: float, rng: random.Random) -> str:
    return _frame(
        "MeterValues",
        {
            "connectorId": 1,
            "transactionId": tx,
            "meterValue": [
                {
                    "timestamp": _iso(when),
                    "sampledValue": [
                        {
                            "value": f"{POWER_W + rng.uniform(-JITTER_W, JITTER_W):.0f}",
                            "measurand": "Power.Active.Import",
                            "unit": "W",
                        },
                        {"value": f"{energy_wh:.0f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                        {"value": "55", "measurand": "SoC", "unit": "Percent", "location": "EV"},
                    ],
                }
            ],
        },
    )


async def _caught_up(loop: Any, transport: MemoryTransport, timeout_s: float = 600.0) -> None:
    """The engine consumed everything and is not evaluating, the executor's outbox is empty."""
    deadline = time.monotonic() + timeout_s
    engine = loop.engine
    while True:
        done = loop.executor.outbox.empty and (
            engine is None or (transport.lag() == 0 and not getattr(engine, "busy", False))
        )
        if done:
            await asyncio.sleep(0.3)  # a tick may be starting
            if loop.executor.outbox.empty and (
                engine is None or (transport.lag() == 0 and not getattr(engine, "busy", False))
            ):
                return
        if time.monotonic() > deadline:
            raise TimeoutError("telemetry benchmark: the loop did not catch up")
        await asyncio.sleep(0.05)


async def measure(
    label: str, chargers: int, interval_s: float, window_s: float, engine: bool, heartbeat_s: float, seed: int = 5
) -> dict:
    """One run (see the module docstring); CPU in ms."""
    rng = random.Random(seed)
    cfg = site_config(chargers)
    transport = MemoryTransport()
    loop = await start_loop(
        transport,
        site=cfg,
        engine=EngineConfig() if engine else None,
        executor=ExecutorConfig(port=0, metrics=False, meter_heartbeat_s=heartbeat_s),
    )
    executor = loop.executor
    assert executor is not None
    from executor.service import _Events

    events = _Events(executor)
    options = StationOptions(call_timeout_s=10.0, heartbeat_interval_s=300, clock=executor.clock)
    ids = [c.id for site in cfg.sites for c in site.chargers]
    try:
        stations: dict[str, tuple[v16.CentralSystemV16, _Sink]] = {}
        txs: dict[str, int] = {}
        now = datetime.now(UTC)
        for cp in ids:
            sink = _Sink()
            station = v16.CentralSystemV16(cp, sink, events, options)
            stations[cp] = (station, sink)
            await station.route_message(
                _frame("StartTransaction", {"connectorId": 1, "idTag": "B", "meterStart": 0, "timestamp": _iso(now)})
            )
            assert sink.last is not None
            txs[cp] = json.loads(sink.last)[2]["transactionId"]
        energy = dict.fromkeys(ids, 0.0)
        for cp in ids:  # warm-up: the last published reading 0-60 s old
            await stations[cp][0].route_message(
                _reading(txs[cp], datetime.now(UTC) - timedelta(seconds=rng.uniform(0, HEARTBEAT_S)), 0.0, rng)
            )
        await _caught_up(loop, transport)
        idle_s = min(5.0, window_s)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(idle_s)
        idle_cpu_per_s = (time.process_time() - cpu0) / (time.perf_counter() - t0)
        phases = {cp: rng.uniform(0, interval_s) for cp in ids}
        schedule = sorted(
            (phases[cp] + k * interval_s, cp) for cp in ids for k in range(int(window_s / interval_s) + 1)
        )
        schedule = [(at, cp) for at, cp in schedule if at < window_s]
        withheld0, flushed0 = executor.meter_gate.withheld, executor.meter_gate.flushed
        records0 = loop.engine.stats.records_in if loop.engine is not None else 0
        evals0 = loop.engine.stats.evaluations if loop.engine is not None else 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        lag_max = 0.0
        for at, cp in schedule:
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag_max = max(lag_max, -delay)
            energy[cp] += POWER_W * interval_s / 3600.0
            await stations[cp][0].route_message(_reading(txs[cp], datetime.now(UTC), energy[cp], rng))
        sent_s = time.perf_counter() - t0
        await _caught_up(loop, transport)
        wall_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
        n = len(schedule)
        # published: at once, or later by the sweep (a heartbeat, a quiet reading)
        withheld = (executor.meter_gate.withheld - withheld0) - (executor.meter_gate.flushed - flushed0)
        return {
            "label": label,
            "chargers": chargers,
            "engine": engine,
            "meter_heartbeat_s": heartbeat_s,
            "meter_values": n,
            "published": n - withheld,
            "engine_records_in": (loop.engine.stats.records_in - records0) if loop.engine is not None else None,
            "engine_evaluations": (loop.engine.stats.evaluations - evals0) if loop.engine is not None else None,
            "window_s": round(sent_s, 1),
            "wall_s": round(wall_s, 1),
            "schedule_lag_max_s": round(lag_max, 2),
            "cpu_s": round(cpu_s, 2),
            "idle_cpu_per_s": round(idle_cpu_per_s, 3),
            "cpu_ms_per_1000": round(cpu_s / n * 1000 * 1000, 1),
            "net_cpu_ms_per_1000": round(max(0.0, cpu_s - idle_cpu_per_s * wall_s) / n * 1000 * 1000, 1),
            "cores": round(cpu_s / wall_s, 3),
        }
    finally:
        await loop.stop()


def run(quick: bool = False) -> dict:
    """The three runs per size; returns ``rows`` (one per run), ``ratios`` (per size) and ``settings``."""
    sizes = ((20, 10.0), (200, 10.0)) if quick else ((20, 60.0), (1000, 30.0))
    interval_s = 5.0
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows: list[dict] = []
    ratios: dict[int, dict] = {}
    for chargers, window_s in sizes:
        part = [
            asyncio.run(measure("executor alone (floor)", chargers, interval_s, window_s, engine=False, heartbeat_s=0)),
            asyncio.run(measure("every reading published", chargers, interval_s, window_s, engine=True, heartbeat_s=0)),
            asyncio.run(
                measure("deadband + heartbeat", chargers, interval_s, window_s, engine=True, heartbeat_s=HEARTBEAT_S)
            ),
        ]
        floor, before, after = (r["cpu_ms_per_1000"] for r in part)
        ratios[chargers] = {
            "before_over_floor": round(before / floor, 2) if floor else None,
            "after_over_floor": round(after / floor, 2) if floor else None,
            "after_over_before": round(after / before, 3) if before else None,
        }
        rows += [{**r, "window_s_planned": window_s} for r in part]
    return {
        "rows": rows,
        "ratios": ratios,
        "settings": {
            "sizes": [{"chargers": c, "window_s": w} for c, w in sizes],
            "interval_s": interval_s,
            "power_w": POWER_W,
            "jitter_w": JITTER_W,
            "meter_heartbeat_s": HEARTBEAT_S,
            "transport": "memory",
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
    }


def tables(result: dict) -> list:
    s = result["settings"]
    return [
        table(
            f"Telemetry: CPU per 1,000 MeterValues, each charger every {s['interval_s']:g} s (memory transport)",
            (
                "chargers",
                "label",
                "meter_values",
                "published",
                "engine_evaluations",
                "cpu_s",
                "cores",
                "cpu_ms_per_1000",
                "net_cpu_ms_per_1000",
            ),
            result["rows"],
            "cpu: this process (executor + engine threads) from the window's start until the engine caught up; "
            "net: less the idle CPU per second measured just before (engine timer ticks); floor: the executor "
            f"alone, every reading published; ratios {result['ratios']}; load average "
            f"{s['loadavg_before'][0]} before, {s['loadavg_after'][0]} after",
        )
    ]


if __name__ == "__main__":
    import sys

    from benchmarks.__main__ import main

    sys.exit(main(["telemetry", *sys.argv[1:]]))
