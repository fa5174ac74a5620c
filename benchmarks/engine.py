"""Embedded-engine evaluation time versus sessions and sites.

For each size it loads N sessions spread over S sites (each site: a main breaker with two sub-panels,
chargers on the panels) and times, as medians:

* ``full_eval_ms``: the first evaluation, every view for every site and every setpoint emitted;
* ``one_site_change_ms``: a site-meter reading at one site, then the evaluation the engine service runs
  for a batch (``timed=False``: the views re-run for that site only);
* ``tick_ms``: a tick with no new input (``timed=True``: the views that read ``NOW()`` re-run for every
  site, the rest for the sites whose rows moved; here none).

Floors measured in the same run: ``floor_scan_ms``, a DuckDB scan of the sessions table, and
``site_floor_ms``, the same one-site change on an engine that holds that one site alone, i.e. the fixed
cost of running the view chain once; ``change_over_site_floor`` near 1 means a one-site change costs
what the site costs, whatever the fleet.

    python -m benchmarks engine --json out.json
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from benchmarks.common import ratio, table
from pipeline.contracts.topics import SETPOINT_COMMANDS, ActiveSession, SiteDemand, TopologyNode
from pipeline.engine.embedded import EmbeddedEngine

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)
SIZES = ((1_000, 100), (10_000, 1_000), (50_000, 5_000))
QUICK_SIZES = ((1_000, 100),)
TARGET_MS = 5.0


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


def _one_site_change(engine: EmbeddedEngine, repeat: int) -> float:
    step = [0]

    def change():
        step[0] += 1
        at = NOW + timedelta(seconds=step[0])
        engine.apply(
            [("bems.site.demand", "s0", SiteDemand(site_id="s0", current_demand_kw=20 + step[0] % 7, measured_at=at))]
        )
        engine.evaluate(at, timed=False)

    return _timed(change, repeat)


def measure(sessions: int, sites: int, repeat: int = 7) -> dict:
    engine = EmbeddedEngine()
    t = time.perf_counter()
    engine.apply(fleet(sessions, sites))
    load_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    emitted = sum(1 for c in engine.evaluate(NOW) if c.topic == SETPOINT_COMMANDS)  # setpoints, not alerts
    full_ms = (time.perf_counter() - t) * 1000
    change_ms = _one_site_change(engine, repeat)
    tick_ms = _timed(lambda: engine.evaluate(NOW + timedelta(seconds=30), timed=True), repeat)
    floor_ms = _timed(lambda: engine.query("SELECT sum(rated_power_kw) FROM ocpp_active_sessions"), repeat)
    engine.close()
    alone = EmbeddedEngine()
    per_site = sessions // sites
    alone.apply(
        [r for r in fleet(sessions, sites)[: 3 * sites + 2 * sessions] if r[2].site_id == "s0"][: 3 + 2 * per_site]
    )
    alone.evaluate(NOW)
    site_floor_ms = _one_site_change(alone, repeat)
    alone.close()
    return {
        "sessions": sessions,
        "sites": sites,
        "load_ms": round(load_ms, 1),
        "full_eval_ms": round(full_ms, 1),
        "emitted": emitted,
        "one_site_change_ms": round(change_ms, 1),
        "tick_ms": round(tick_ms, 1),
        "floor_scan_ms": round(floor_ms, 2),
        "site_floor_ms": round(site_floor_ms, 1),
        "change_over_site_floor": ratio(change_ms, site_floor_ms),
        "change_over_scan": ratio(change_ms, floor_ms),
    }


def run(quick: bool = False) -> dict:
    rows = [measure(n, s, repeat=3 if quick else 7) for n, s in (QUICK_SIZES if quick else SIZES)]
    biggest = rows[-1]
    return {
        "rows": rows,
        "target": {
            "text": f"a one-site change at {biggest['sessions']:,} sessions within {TARGET_MS:g} ms",
            "figure_ms": biggest["one_site_change_ms"],
            "met": biggest["one_site_change_ms"] <= TARGET_MS,
        },
    }


def tables(result: dict) -> list:
    cols = (
        "sessions",
        "sites",
        "full_eval_ms",
        "one_site_change_ms",
        "tick_ms",
        "site_floor_ms",
        "change_over_site_floor",
        "floor_scan_ms",
        "change_over_scan",
    )
    t = result["target"]
    return [
        table(
            "Embedded engine: evaluation time (median ms)",
            cols,
            result["rows"],
            caption=f"target: {t['text']}: {t['figure_ms']} ms, {'met' if t['met'] else 'missed'}",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    from benchmarks.__main__ import main as run_all

    return run_all(["engine", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
