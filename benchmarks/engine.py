"""Embedded-engine evaluation time versus sessions and sites.

For each size it loads N sessions spread over S sites (each site: a main breaker with two sub-panels,
chargers on the panels), then times (a) a full evaluation from cold
(every setpoint emitted) and (b) an evaluation after a meter change at one site (few or no rows emitted).
The floor is a DuckDB scan of the same sessions table (``SELECT sum(rated_power_kw)``), measured in the
same run, so the ratio says how much the views cost over just touching the data.

    python -m benchmarks.engine --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timedelta, timezone

from rich.console import Console
from rich.table import Table

from pipeline.engine.embedded import EmbeddedEngine
from pipeline.topics import ActiveSession, SiteDemand, TopologyNode

NOW = datetime(2024, 6, 3, 12, tzinfo=timezone.utc)
SIZES = ((1_000, 100), (10_000, 1_000), (50_000, 5_000))


def _timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def measure(sessions: int, sites: int, repeat: int = 5) -> dict:
    engine = EmbeddedEngine()
    recs = []
    for i in range(sites):
        recs.append(("site.topology", f"s{i}", TopologyNode(node_id=f"s{i}", site_id=f"s{i}", kind="site",
                                                             limit_kw=200)))
        for p in "ab":
            recs.append(("site.topology", f"s{i}{p}", TopologyNode(node_id=f"s{i}{p}", site_id=f"s{i}",
                                                                    parent_id=f"s{i}", kind="panel", limit_kw=120)))
    for i in range(sessions):
        site = f"s{i % sites}"
        panel = site + "ab"[(i // sites) % 2]
        recs.append(("site.topology", f"CP{i}", TopologyNode(node_id=f"CP{i}", site_id=site, parent_id=panel,
                                                              kind="charger", limit_kw=22)))
        recs.append(("ocpp.active.sessions", f"x{i}", ActiveSession(
            session_id=f"x{i}", charge_point_id=f"CP{i}", connector_id=1, transaction_id=str(i), site_id=site,
            rated_power_kw=22, priority=i % 3, started_at=NOW - timedelta(seconds=i), sampled_at=NOW)))
    t = time.perf_counter()
    engine.apply(recs)
    load_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    emitted = len(engine.evaluate(NOW))
    full_ms = (time.perf_counter() - t) * 1000
    step = [0]

    def one_site_change():
        step[0] += 1
        engine.apply([("bems.site.demand", "s0", SiteDemand(site_id="s0", current_demand_kw=20 + step[0] % 7,
                                                            measured_at=NOW + timedelta(seconds=step[0])))])
        engine.evaluate(NOW + timedelta(seconds=step[0]))

    change_ms = _timed(one_site_change, repeat)
    floor_ms = _timed(lambda: engine.query("SELECT sum(rated_power_kw) FROM ocpp_active_sessions"), repeat)
    engine.close()
    return {"sessions": sessions, "sites": sites, "load_ms": round(load_ms, 1), "full_eval_ms": round(full_ms, 1),
            "emitted": emitted, "one_site_change_ms": round(change_ms, 1), "floor_scan_ms": round(floor_ms, 2),
            "change_over_floor": round(change_ms / floor_ms, 1)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--max-sessions", type=int, default=50_000)
    args = parser.parse_args(argv)
    results = [measure(n, s) for n, s in SIZES if n <= args.max_sessions]
    table = Table(title="Embedded engine: evaluation time (median ms)")
    for col in ("sessions", "sites", "full_eval_ms", "one_site_change_ms", "floor_scan_ms", "change_over_floor"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(*(f"{r[c]:,}" for c in ("sessions", "sites", "full_eval_ms", "one_site_change_ms",
                                               "floor_scan_ms", "change_over_floor")))
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"engine": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
