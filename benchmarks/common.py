"""What every benchmark shares: percentiles, the machine it ran on, rich tables and the JSON file.

Each benchmark module exposes ``run(quick: bool = False) -> dict`` (plain JSON-able data: a
``rows`` list of dicts, plus whatever else it measured) and ``tables(result) -> list[rich.table.Table]``;
``python -m benchmarks`` runs them and writes one JSON document. Figures are reported beside a floor
measured in the same run (``ratio`` = figure / floor), because these machines are noisy.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psutil
from rich.table import Table


def percentiles(samples_ms: Sequence[float]) -> dict:
    """``{"n", "p50", "p95", "p99", "mean", "max"}`` of ``samples_ms`` (milliseconds, nearest-rank
    percentiles, rounded to 0.01 ms). An empty sequence gives ``n = 0`` and no figures."""
    if not samples_ms:
        return {"n": 0}
    ordered = sorted(samples_ms)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))]

    return {
        "n": len(ordered),
        "p50": round(rank(0.50), 2),
        "p95": round(rank(0.95), 2),
        "p99": round(rank(0.99), 2),
        "mean": round(statistics.fmean(ordered), 2),
        "max": round(ordered[-1], 2),
    }


def ratio(value: float | None, floor: float | None) -> float | None:
    """``value / floor`` rounded to 0.01, or None when either is missing or the floor is zero."""
    if value is None or not floor:
        return None
    return round(value / floor, 2)


def machine() -> dict:
    """The machine a run measured: CPU model and count, memory, OS, Python."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def table(title: str, columns: Sequence[str], rows: Iterable[dict], caption: str | None = None) -> Table:
    """A right-aligned rich table of ``rows`` (dicts) over ``columns``; numbers get thousands separators,
    missing values print as ``-``."""
    out = Table(title=title, caption=caption)
    for col in columns:
        out.add_column(col, justify="right")
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col)
            if value is None:
                cells.append("-")
            elif isinstance(value, float):
                cells.append(f"{value:,.2f}")
            elif isinstance(value, int):
                cells.append(f"{value:,}")
            else:
                cells.append(str(value))
        out.add_row(*cells)
    return out


def write_json(path: str | Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
