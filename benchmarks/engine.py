"""Embedded-engine evaluation time versus sessions and sites, on every backend side by side.

For each backend (``duckdb``, ``sqlite``, ``hybrid``: :mod:`pipeline.engine.backend`) and size it loads N
sessions spread over S sites (each site: a main breaker with two sub-panels, chargers on the panels) and
times, in the same run:

* ``full_eval_ms``: the first evaluation, every view for every site and every setpoint emitted;
* ``one_site_change_ms`` (median) and ``change_p99_ms``: a site-meter reading at one site, then the
  evaluation the engine service runs for a batch (``timed=False``: the views re-run for that site only);
  ``change_cpu_p99_ms`` is the same in CPU time of the evaluating thread (the machine is shared: wall
  time carries other processes' load). The site's first change after the full evaluation is timed apart
  (``first_change_ms``, ``first_change_cpu_ms``): on ``hybrid`` it also re-runs the site's views in SQLite;
* ``tick_ms``: a tick with no new input (``timed=True``: the views that read ``NOW()`` re-run for every
  site, the rest for the sites whose rows moved; here none).

After the full evaluation the heap is frozen as the engine service freezes it after its catch-up
(:func:`pipeline.engine.service.freeze_heap`), so the changes meet the garbage collector as the service's do.

Floors measured in the same run: ``floor_scan_ms``, a scan of the sessions table, and ``site_floor_ms``,
the same one-site change on an engine that holds that one site alone, i.e. the fixed cost of running the
view chain once. And the one-site evaluation of a 20-session site alone (``site20_p50_ms``,
``site20_p99_ms``, 100 evaluations after the site's first, ``site20_first_ms``).

Targets, per backend: a 20-session site's evaluation p99 within 10 ms; a one-site change at 50,000
sessions p99 within 10 ms; the full evaluation and the tick at 50,000 sessions within 1.5x DuckDB's.

    python -m benchmarks engine --json out.json
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime, timedelta

from benchmarks.common import percentiles, ratio, table
from pipeline.contracts.topics import SETPOINT_COMMANDS, ActiveSession, SiteDemand, TopologyNode
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.service import freeze_heap, thaw_heap

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)
SIZES = ((1_000, 100), (10_000, 1_000), (50_000, 5_000))
QUICK_SIZES = ((1_000, 100),)
BACKENDS = ("duckdb", "sqlite", "hybrid")
TARGET_MS = 10.0  # p99 of a one-site evaluation
TARGET_RATIO = 1.5  # full evaluation and tick, against DuckDB's


def _timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def fleet(sessions: int, sites: int) -> list[tuple]:
    """Topology and session records for ``sessions`` over ``sites`` (100 to 5,000 in the runs)."""
    recs = []
    for i in range(sites):
        recs.append(
            ("site.topology", f"s{i}", TopologyNode(node_id=f"s{i}", site_id=f"s{i}", kind="site", limit_kw=200))
        )
        for p in "ab":
            recs.append(
                (
                    "site.topology",
                    f"s{i}{p}",
                    TopologyNode(node_id=f"s{i}{p}", site_id=f"s{i}", parent_id=f"s{i}", kind="panel", limit_kw=120),
                )
            )
    for i in range(sessions):
        site = f"s{i % sites}"
        panel = site + "ab"[(i // sites) % 2]
        recs.append(
            (
                "site.topology",
                f"CP{i}",
                TopologyNode(node_id=f"CP{i}", site_id=site, parent_id=panel, kind="charger", limit_kw=22),
            )
        )
        recs.append(
            (
                "ocpp.active.sessions",
                f"x{i}",
                ActiveSession(
                    session_id=f"x{i}",
                    charge_point_id=f"CP{i}",
                    connector_id=1,
                    transaction_id=str(i),
                    site_id=site,
                    rated_power_kw=22,
                    priority=i % 3,
                    started_at=NOW - timedelta(seconds=i),
                    sampled_at=NOW,
                ),
            )
        )
    return recs


def _samples(fn, repeat: int) -> tuple[list[float], list[float]]:
    """Wall and thread-CPU milliseconds of ``repeat`` calls of ``fn``."""
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.thread_time()
        fn()
        wall.append((time.perf_counter() - w) * 1000)
        cpu.append((time.thread_time() - c) * 1000)
    return wall, cpu


def _one_site_change(engine: EmbeddedEngine, repeat: int, start: int = 0) -> tuple[list[float], list[float]]:
    step = [start]

    def change():
        step[0] += 1
        at = NOW + timedelta(seconds=step[0])
        engine.apply(
            [("bems.site.demand", "s0", SiteDemand(site_id="s0", current_demand_kw=20 + step[0] % 7, measured_at=at))]
        )
        engine.evaluate(at, timed=False)

    return _samples(change, repeat)


def site20(backend: str, repeat: int = 100) -> dict:
    """A 20-session site alone: p50 and p99 of a one-site evaluation (wall and CPU), ``repeat`` of them,
    after the site's first one (which prepares its statements; reported as ``site20_first_ms``, as
    :func:`measure` reports its first change)."""
    engine = EmbeddedEngine(backend=backend)
    engine.apply(fleet(20, 1))
    engine.evaluate(NOW)
    freeze_heap()
    first, _ = _one_site_change(engine, 1)
    wall, cpu = _one_site_change(engine, repeat, start=1)
    engine.close()
    thaw_heap()
    w, c = percentiles(wall), percentiles(cpu)
    return {
        "site20_p50_ms": w["p50"],
        "site20_p99_ms": w["p99"],
        "site20_cpu_p99_ms": c["p99"],
        "site20_first_ms": round(first[0], 1),
    }


def measure(sessions: int, sites: int, backend: str, repeat: int = 30) -> dict:
    engine = EmbeddedEngine(backend=backend)
    t = time.perf_counter()
    engine.apply(fleet(sessions, sites))
    load_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    emitted = sum(1 for c in engine.evaluate(NOW) if c.topic == SETPOINT_COMMANDS)  # setpoints, not alerts
    full_ms = (time.perf_counter() - t) * 1000
    freeze_heap()  # as the engine service does after its catch-up
    first_wall, first_cpu = _one_site_change(engine, 1)  # the site's first evaluation after the full one
    wall, cpu = _one_site_change(engine, repeat, start=1)
    tick_ms = _timed(lambda: engine.evaluate(NOW + timedelta(seconds=30), timed=True), 7)
    floor_ms = _timed(lambda: engine.query("SELECT sum(rated_power_kw) FROM ocpp_active_sessions"), 7)
    engine.close()
    thaw_heap()
    alone = EmbeddedEngine(backend=backend)
    per_site = sessions // sites
    alone.apply(
        [r for r in fleet(sessions, sites)[: 3 * sites + 2 * sessions] if r[2].site_id == "s0"][: 3 + 2 * per_site]
    )
    alone.evaluate(NOW)
    site_floor_ms = statistics.median(_one_site_change(alone, 7)[0])
    alone.close()
    change = percentiles(wall)
    return {
        "backend": backend,
        "sessions": sessions,
        "sites": sites,
        "load_ms": round(load_ms, 1),
        "full_eval_ms": round(full_ms, 1),
        "emitted": emitted,
        "one_site_change_ms": change["p50"],
        "change_p99_ms": change["p99"],
        "change_cpu_p99_ms": percentiles(cpu)["p99"],
        "first_change_ms": round(first_wall[0], 1),
        "first_change_cpu_ms": round(first_cpu[0], 1),
        "tick_ms": round(tick_ms, 1),
        "floor_scan_ms": round(floor_ms, 2),
        "site_floor_ms": round(site_floor_ms, 1),
        "change_over_site_floor": ratio(change["p50"], site_floor_ms),
    }


def targets(rows: list[dict], sites20: dict[str, dict]) -> list[dict]:
    """Per backend, each target's figure and whether it is met (the largest size's rows)."""
    biggest = max(r["sessions"] for r in rows)
    at = {r["backend"]: r for r in rows if r["sessions"] == biggest}
    duck = at.get("duckdb")
    out = []
    for backend, row in at.items():
        full_x = ratio(row["full_eval_ms"], duck["full_eval_ms"]) if duck else None
        tick_x = ratio(row["tick_ms"], duck["tick_ms"]) if duck else None
        site = sites20.get(backend, {})
        out.append(
            {
                "backend": backend,
                "site20_p99_ms": site.get("site20_p99_ms"),
                "site20_met": site.get("site20_p99_ms") is not None and site["site20_p99_ms"] <= TARGET_MS,
                "change_p99_ms": row["change_p99_ms"],
                "change_met": row["change_p99_ms"] <= TARGET_MS,
                "full_x_duckdb": full_x,
                "full_met": full_x is not None and full_x <= TARGET_RATIO,
                "tick_x_duckdb": tick_x,
                "tick_met": tick_x is not None and tick_x <= TARGET_RATIO,
            }
        )
    return out


def run(quick: bool = False, backends: tuple[str, ...] = BACKENDS) -> dict:
    sizes = QUICK_SIZES if quick else SIZES
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = [measure(n, s, b, repeat=5 if quick else 30) for n, s in sizes for b in backends]
    sites20 = {b: site20(b, repeat=20 if quick else 100) for b in backends}
    for row in rows:
        row.update(sites20[row["backend"]] if row["sessions"] == sizes[-1][0] else {})
    return {
        "rows": rows,
        "site20": sites20,
        "targets": targets(rows, sites20),
        "sessions": sizes[-1][0],
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def _mark(value, met: bool, unit: str) -> str:
    return "-" if value is None else f"{value:g}{unit}: {'met' if met else 'missed'}"


def tables(result: dict) -> list:
    cols = (
        "backend",
        "sessions",
        "sites",
        "full_eval_ms",
        "one_site_change_ms",
        "change_p99_ms",
        "change_cpu_p99_ms",
        "first_change_ms",
        "tick_ms",
        "site_floor_ms",
        "change_over_site_floor",
        "floor_scan_ms",
    )
    n = f"{result['sessions']:,}"
    marked = [
        {
            "backend": t["backend"],
            f"20-session site p99 <= {TARGET_MS:g} ms": _mark(t["site20_p99_ms"], t["site20_met"], " ms"),
            f"one-site change at {n} p99 <= {TARGET_MS:g} ms": _mark(t["change_p99_ms"], t["change_met"], " ms"),
            f"full at {n} <= {TARGET_RATIO:g}x DuckDB": _mark(t["full_x_duckdb"], t["full_met"], "x"),
            f"tick at {n} <= {TARGET_RATIO:g}x DuckDB": _mark(t["tick_x_duckdb"], t["tick_met"], "x"),
        }
        for t in result["targets"]
    ]
    return [
        table("Embedded engine: evaluation time (ms), per backend", cols, result["rows"]),
        table("Embedded engine: targets", list(marked[0]) if marked else ["backend"], marked),
    ]


def main(argv: list[str] | None = None) -> int:
    from benchmarks.__main__ import main as run_all

    return run_all(["engine", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
