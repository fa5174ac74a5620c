"""``python -m benchmarks [NAME ...|all] [--quick] [--json FILE]``: run benchmarks, print tables, write JSON.

Names: engine, latency, coldstart, telemetry, scale, quality (``all`` = every one, in that order). ``--quick``
runs small sizes for a smoke check (figures are not meaningful); ``--long`` adds the long runs of the
benchmarks that have them (quality: a 7-day replay).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time

from rich.console import Console

from benchmarks.common import machine, write_json

NAMES = ("engine", "latency", "coldstart", "telemetry", "scale", "quality")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["all"], help=f"any of {', '.join(NAMES)}, or all")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--long", action="store_true", help="add the long runs (quality: a 7-day replay)")
    parser.add_argument("--json", help="write every result here")
    args = parser.parse_args(argv)
    names = list(NAMES) if "all" in args.names else args.names
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(NAMES)} or all")
    console = Console() if sys.stdout.isatty() else Console(width=200)  # logs keep whole columns
    payload: dict = {"machine": machine(), "quick": args.quick, "long": args.long, "results": {}}
    console.print(f"[bold]machine[/]: {payload['machine']}")
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.perf_counter()
        takes_long = "long" in inspect.signature(module.run).parameters
        result = module.run(quick=args.quick, long=args.long) if takes_long else module.run(quick=args.quick)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        payload["results"][name] = result
        for tbl in module.tables(result):
            console.print(tbl)
        if args.json:  # written after each benchmark, so a long run leaves what it measured
            write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
