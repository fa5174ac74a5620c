"""Executor scale: how many connected chargers one executor process carries, and what each one costs.

For each size N (1,000, 5,000 and 10,000 chargers; ``--quick``: 200 and 500) the server under test runs
alone in a spawned process (:mod:`benchmarks.scale_servers`) and N light OCPP 1.6J chargers run in
``ceil(N / 2,500)`` other processes (:mod:`benchmarks.scale_chargers`), so psutil on the server's pid sees
only the server's own CPU and memory. Each size goes through:

1. **baseline**: the server is listening (the executor has rebuilt from the topology: sites of
   ``site_size`` chargers, two panels each); its RSS now is the baseline.
2. **connect**: chargers connect at most ``connect_rate`` per second and at most ``max_booting`` at a time
   (in total; the server's accept path sets the pace), each sending BootNotification, StatusNotification,
   StartTransaction (so its MeterValues feed a session) and StatusNotification; the executor asks each for
   its rate units and installs its fail-safe profiles (GetConfiguration and three SetChargingProfile,
   answered Accepted). The phase ends when every charger is up and the server's calls have stopped for 2 s.
3. **idle**: ``idle_s`` seconds with every charger connected and silent (keepalive pings, timers).
4. **steady state**: for ``window_s`` real seconds every charger sends Heartbeat every 30 s and MeterValues
   every 10 s, time-scaled by ``speed`` so that N chargers offer ``rate`` messages per second in all
   (``speed = rate / (N x (1/10 + 1/30))``). The default 600 msg/s keeps one event loop below saturation at
   every size, so latency and CPU per message describe a server that keeps up; N = 1,000 then runs 4.5x
   faster than real time, 10,000 at 0.45x. With ``realtime`` the largest size is run once more at its real
   rate (``speed`` 1: 1,333 msg/s for 10,000 chargers), whatever that costs. Server CPU (user + system) is
   read over exactly this window, RSS at its end and every 0.2 s during it (peak).

Reported per size: messages sent in the window, offered and answered rates (answers received inside the
window), server CPU seconds per 1,000 charger messages answered inside the window (each message is one
CALL from a charger and its CALLRESULT; websocket keepalive pings, at websockets' default 20 s, and
everything else the process does in the window are included; a saturated server's figure also carries
frames parsed but not yet answered), server CPU % of one core in the window and idle, what other processes
on the machine used meanwhile (``others_cpu_pct``, % of one core), RSS and RSS per connection above the
baseline (KiB), dropped (no answer within ``drain_s`` = 10 s after the window), late (answered after
``late_s`` = 1 s), CALLERRORs, the answer latency seen by the chargers (p50/p99, ms), and the connect
phase's length and server CPU per connection. The **floor**, measured in the same run under the same load,
is a ``websockets`` server with the ``ocpp`` library's ChargePoint answering those messages and nothing else
(``--floor raw``: a websockets server answering canned CALLRESULTs); the executor's CPU per message and RSS
per connection are given as ratios to it. The **target** (reported, not asserted): 10,000 connections in one
executor process under 2 GB resident.

    python -m benchmarks scale --json out.json
    python -m benchmarks.scale --sizes 2000 --window 20 --floor none --py-spy /tmp/prof
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import psutil
from rich.console import Console
from rich.table import Table

from benchmarks import scale_chargers, scale_servers
from benchmarks.common import machine, percentiles, ratio, table, write_json

HEARTBEAT_S, METER_S = 30.0, 10.0
REAL_RATE_PER_CHARGER = 1 / METER_S + 1 / HEARTBEAT_S  # msg/s at real time
TARGET_CONNECTIONS, TARGET_RSS_BYTES = 10_000, 2 * 10**9
MiB, KiB = 2**20, 2**10


@dataclass(frozen=True)
class Config:
    """One benchmark run: ``sizes`` (chargers), ``rate`` (msg/s offered in total), ``realtime`` (also run the
    largest size at its real rate), ``window_s`` (real s of steady state), ``connect_rate`` (connections/s
    in total), ``site_size`` (chargers per site), ``per_generator`` (chargers per load process),
    ``floor`` (``ocpp``, ``raw`` or ``none``), ``max_booting`` (chargers booting at once, in total),
    ``idle_s``, ``late_s``, ``drain_s`` and ``settle_timeout_s`` (s), ``async_validation`` (servers hand
    each payload's schema validation to a thread pool, the ``ocpp`` library's default, which the executor
    turns off), ``py_spy`` (a folder: record the executor with py-spy over each connect phase and window)."""

    sizes: tuple[int, ...] = (1_000, 5_000, 10_000)
    rate: float = 600.0
    realtime: bool = True
    window_s: float = 30.0
    connect_rate: float = 200.0
    site_size: int = 20
    per_generator: int = 2_500
    floor: str = "ocpp"
    max_booting: int = 100
    idle_s: float = 5.0
    late_s: float = 1.0
    drain_s: float = 10.0
    settle_timeout_s: float = 240.0
    async_validation: bool = False
    py_spy: str | None = field(default=None, compare=False)


QUICK = Config(sizes=(200, 500), rate=200.0, window_s=10.0, connect_rate=100.0, settle_timeout_s=60.0, realtime=False)


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _py_spy(cfg: Config, kind: str, pid: int, name: str) -> subprocess.Popen | None:
    """Start ``py-spy record`` (speedscope output, 50 Hz, non-blocking) on the executor; SIGINT ends it."""
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not cfg.py_spy or kind != "executor" or not os.path.exists(exe):
        return None
    os.makedirs(cfg.py_spy, exist_ok=True)
    return subprocess.Popen(
        [
            exe,
            "record",
            "--nonblocking",
            "-r",
            "50",
            "-p",
            str(pid),
            "-f",
            "speedscope",
            "-o",
            os.path.join(cfg.py_spy, f"{name}.speedscope.json"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_spy(spy: subprocess.Popen | None) -> None:
    if spy is not None and spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


def _recv(conn, timeout_s: float, what: str):
    if not conn.poll(timeout_s):
        raise TimeoutError(f"no {what} within {timeout_s:.0f}s")
    return conn.recv()


class _Generators:
    """The load processes of one measurement and the latest status each reported."""

    def __init__(self, ctx, url: str, ids: list[str], count: int, options: dict) -> None:
        self.procs, self.conns, self.status, self.results = [], [], [], []
        for g in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=scale_chargers.main, args=(child, url, ids[g::count], options), daemon=True)
            proc.start()
            self.procs.append(proc)
            self.conns.append(parent)
            self.status.append({"connected": 0, "failed": 0, "closed": 0, "server_calls": 0})
            self.results.append(None)

    def pump(self) -> None:
        """Read every pending status and result (the children block if their pipe fills)."""
        for g, conn in enumerate(self.conns):
            while not conn.closed and conn.poll():
                try:
                    kind, body = conn.recv()
                except EOFError:  # the child sent its result and exited
                    conn.close()
                    break
                if kind == "status":
                    self.status[g] = body
                else:
                    self.results[g] = body

    def total(self, key: str) -> int:
        return sum(s[key] for s in self.status)

    def go(self, t0: float, t_end: float) -> None:
        for conn in self.conns:
            conn.send(("go", t0, t_end))

    def wait_results(self, timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while any(r is None for r in self.results) and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.1)
        return [r for r in self.results if r is not None]

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def _sleep_until(t: float, gens: _Generators, on_tick=None) -> None:
    while (left := t - time.monotonic()) > 0:
        gens.pump()
        if on_tick is not None:
            on_tick()
        time.sleep(min(0.2, left))


def measure(kind: str, chargers: int, cfg: Config) -> dict:
    """One server ``kind`` (``executor``, ``ocpp``, ``raw``) under ``chargers`` chargers: a result row.

    The row (JSON-able dict) holds ``connections`` reached, ``speed`` (x real time), ``messages`` sent in the
    window, ``offered_per_s`` / ``answered_per_s`` (msg/s), ``cpu_s_per_1k`` (server CPU s per 1,000
    messages answered in the window), ``cpu_pct`` / ``idle_cpu_pct`` / ``others_cpu_pct`` /
    ``generator_cpu_pct`` (% of one core), ``rss_mib``, ``peak_rss_mib``, ``baseline_rss_mib`` (MiB),
    ``rss_per_conn_kib`` (KiB above the baseline), ``dropped``, ``late``, ``errors`` (messages),
    ``p50_ms`` / ``p99_ms`` / ``max_ms`` (answer latency), ``connect_s`` (s until all were up),
    ``connect_cpu_ms_per_conn`` (ms), ``calls_to_chargers`` and ``failures`` (counts by kind) and
    ``server_stats`` (what the server process counted: records published, calls, GC passes, log records).
    """
    ctx = mp.get_context("spawn")
    speed = cfg.rate / (chargers * REAL_RATE_PER_CHARGER)
    server_conn, child = ctx.Pipe()
    server = ctx.Process(
        target=scale_servers.serve, args=(child, kind, chargers, cfg.site_size, cfg.async_validation), daemon=True
    )
    server.start()
    gens: _Generators | None = None
    spy: subprocess.Popen | None = None
    try:
        _, ready = _recv(server_conn, 300, f"{kind} server")
        ps = psutil.Process(server.pid)
        baseline_rss = ps.memory_info().rss
        cpu_start = _cpu_s(ps)
        ids = [scale_servers.charger_id(i) for i in range(chargers)]
        count = max(1, math.ceil(chargers / cfg.per_generator))
        options = {
            "connect_rate": cfg.connect_rate / count,
            "max_booting": max(1, cfg.max_booting // count),
            "heartbeat_s": HEARTBEAT_S / speed,
            "meter_s": METER_S / speed,
            "late_s": cfg.late_s,
            "drain_s": cfg.drain_s,
        }
        spy = _py_spy(cfg, kind, server.pid, f"executor-{chargers}-connect")
        started = time.monotonic()
        gens = _Generators(ctx, f"ws://127.0.0.1:{ready['port']}/ocpp", ids, count, options)
        while gens.total("connected") + gens.total("failed") < chargers:
            if time.monotonic() - started > cfg.settle_timeout_s:
                raise TimeoutError(f"{gens.total('connected')} of {chargers} connected")
            _sleep_until(time.monotonic() + 0.2, gens)
        connected_s = time.monotonic() - started
        calls, stable_since = gens.total("server_calls"), time.monotonic()
        while time.monotonic() - stable_since < 2.0 and time.monotonic() - started < cfg.settle_timeout_s:
            _sleep_until(time.monotonic() + 0.25, gens)
            if gens.total("server_calls") != calls:
                calls, stable_since = gens.total("server_calls"), time.monotonic()
        settled_s = stable_since - started
        connect_cpu = _cpu_s(ps) - cpu_start
        connected_rss = ps.memory_info().rss
        _stop_spy(spy)
        idle0 = _cpu_s(ps)
        _sleep_until(time.monotonic() + cfg.idle_s, gens)  # connected, nothing sent: keepalives and timers
        idle_cpu = _cpu_s(ps) - idle0

        t0 = time.monotonic() + 1.0
        t_end = t0 + cfg.window_s
        gens.go(t0, t_end)
        _sleep_until(t0, gens)
        cpu0, sys0 = _cpu_s(ps), psutil.cpu_times()
        spy = _py_spy(cfg, kind, server.pid, f"executor-{chargers}-steady")
        peak = [0]
        _sleep_until(t_end, gens, lambda: peak.__setitem__(0, max(peak[0], ps.memory_info().rss)))
        cpu_window, sys1 = _cpu_s(ps) - cpu0, psutil.cpu_times()
        _stop_spy(spy)
        rss = ps.memory_info().rss
        busy = (sum(sys1) - sys1.idle - sys1.iowait) - (sum(sys0) - sys0.idle - sys0.iowait)
        results = gens.wait_results(cfg.drain_s + 60)
        server_conn.send("stop")
        try:
            _, server_stats = _recv(server_conn, 60, f"{kind} stats")
        except (TimeoutError, EOFError):
            server_stats = {}
    finally:
        _stop_spy(spy)
        if gens is not None:
            gens.stop()
        server.join(10)
        if server.is_alive():
            server.terminate()
            server.join(5)

    def total(key: str) -> int:
        return sum(r[key] for r in results)

    connected = total("connected")
    answered = total("answered_in_window")  # the work the server did inside the CPU window
    lat = percentiles([x for r in results for x in r["latencies_ms"]])
    lag = percentiles([x for r in results for x in r["lags_ms"]])
    calls_by_action: dict[str, int] = {}
    failures: dict[str, int] = {}
    for r in results:
        for action, n in r["server_calls_by_action"].items():
            calls_by_action[action] = calls_by_action.get(action, 0) + n
        for why, n in r["failures"].items():
            failures[why] = failures.get(why, 0) + n
    return {
        "server": kind,
        "connections": connected,
        "chargers": chargers,
        "failed": total("failed"),
        "speed": round(speed, 2),
        "window_s": cfg.window_s,
        "messages": total("sent"),
        "offered_per_s": round(total("sent") / cfg.window_s, 1),
        "answered_per_s": round(answered / cfg.window_s, 1),
        "answered": total("answered"),
        "cpu_s": round(cpu_window, 2),
        "cpu_s_per_1k": round(cpu_window / max(answered, 1) * 1000, 4),
        "cpu_pct": round(100 * cpu_window / cfg.window_s, 1),
        "rss_mib": round(rss / MiB, 1),
        "peak_rss_mib": round(max(peak[0], rss) / MiB, 1),
        "baseline_rss_mib": round(baseline_rss / MiB, 1),
        "connected_rss_mib": round(connected_rss / MiB, 1),
        "rss_per_conn_kib": round((rss - baseline_rss) / max(connected, 1) / KiB, 1),
        "dropped": total("dropped"),
        "late": total("late"),
        "errors": total("errors"),
        "closed": total("closed"),
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "max_ms": lat.get("max"),
        "schedule_lag_p99_ms": lag.get("p99"),
        "connect_s": round(connected_s, 1),
        "settle_s": round(settled_s, 1),
        "connect_cpu_ms_per_conn": round(connect_cpu / max(connected, 1) * 1000, 2),
        "calls_to_chargers": calls_by_action,
        "failures": failures,
        "idle_cpu_pct": round(100 * idle_cpu / cfg.idle_s, 1),
        "generators": len(results),
        "generator_cpu_pct": round(100 * total("window_cpu_s") / cfg.window_s, 1),
        "machine_busy_pct": round(100 * busy / cfg.window_s / (psutil.cpu_count() or 1), 1),
        "others_cpu_pct": round(100 * (busy - cpu_window - total("window_cpu_s")) / cfg.window_s, 1),
        "server_stats": server_stats,
    }


def run(quick: bool = False, cfg: Config | None = None) -> dict:
    """Measure every size (executor, then the floor), then the largest at real time if ``realtime``.

    Returns ``{"config", "rows", "floor": {"server", "rows"}, "target"}``: ``rows`` are :func:`measure` rows
    of the executor with ``load`` and the ratios to the floor (``cpu_ratio``, ``rss_per_conn_ratio``);
    ``target`` is :func:`_target`'s verdict.
    """
    cfg = cfg or (QUICK if quick else Config())
    rows, floors = [], []
    loads = [(n, cfg, f"{cfg.rate:,.0f} msg/s") for n in cfg.sizes]
    if cfg.realtime and cfg.sizes:  # the largest size at its real message rate, whatever that costs
        n = max(cfg.sizes)
        loads.append((n, replace(cfg, rate=n * REAL_RATE_PER_CHARGER), "real time"))
    for n, load_cfg, load in loads:
        row = measure("executor", n, load_cfg)
        row["load"] = load
        if cfg.floor != "none":
            floor = measure(cfg.floor, n, load_cfg)
            floor["load"] = load
            floors.append(floor)
            row["cpu_ratio"] = ratio(row["cpu_s_per_1k"], floor["cpu_s_per_1k"])
            row["rss_per_conn_ratio"] = ratio(row["rss_per_conn_kib"], floor["rss_per_conn_kib"])
        rows.append(row)
    return {
        "config": asdict(cfg),
        "rows": rows,
        "floor": {"server": cfg.floor, "rows": floors},
        "target": _target(rows),
    }


def _target(rows: list[dict]) -> dict:
    """The 2 GB target, judged on the row sized for it: ``figure_mib`` is its peak RSS, ``met`` needs every
    charger connected and the peak under 2 GB (``None`` when no row was sized for it); ``projected_mib`` is
    baseline + 10,000 x the largest row's RSS per connection, for runs that did not connect them all."""
    text = (
        f"{TARGET_CONNECTIONS:,} connections in one executor process under 2 GB resident "
        "(peak RSS in the steady window)"
    )
    sized = [r for r in rows if r["chargers"] >= TARGET_CONNECTIONS]
    largest = max(rows, key=lambda r: (r["connections"], r["rss_per_conn_kib"]), default=None)
    projected = (
        None
        if largest is None
        else round(largest["baseline_rss_mib"] + TARGET_CONNECTIONS * largest["rss_per_conn_kib"] / KiB, 1)
    )
    if not sized:
        return {"text": text, "figure_mib": None, "connections": None, "projected_mib": projected, "met": None}
    row = max(sized, key=lambda r: r["peak_rss_mib"])
    met = min(r["connections"] for r in sized) >= TARGET_CONNECTIONS and row["peak_rss_mib"] * MiB < TARGET_RSS_BYTES
    return {
        "text": text,
        "figure_mib": row["peak_rss_mib"],
        "connections": row["connections"],
        "projected_mib": projected,
        "met": met,
    }


COLUMNS = (
    "load",
    "connections",
    "speed",
    "messages",
    "offered_per_s",
    "answered_per_s",
    "cpu_s_per_1k",
    "cpu_ratio",
    "cpu_pct",
    "idle_cpu_pct",
    "others_cpu_pct",
    "rss_mib",
    "baseline_rss_mib",
    "rss_per_conn_kib",
    "rss_per_conn_ratio",
    "dropped",
    "late",
    "p50_ms",
    "p99_ms",
    "connect_s",
    "connect_cpu_ms_per_conn",
)
FLOOR_COLUMNS = (
    "load",
    "connections",
    "messages",
    "offered_per_s",
    "answered_per_s",
    "cpu_s_per_1k",
    "cpu_pct",
    "idle_cpu_pct",
    "others_cpu_pct",
    "rss_mib",
    "baseline_rss_mib",
    "rss_per_conn_kib",
    "dropped",
    "late",
    "p50_ms",
    "p99_ms",
    "connect_s",
    "connect_cpu_ms_per_conn",
)


def tables(result: dict) -> list[Table]:
    """The executor table (ratios to the floor) and the floor's own table."""
    target = result["target"]
    met = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
    caption = f"target: {target['text']}: {met}"
    if target["figure_mib"] is not None:
        caption += f" ({target['figure_mib']:,.0f} MiB with {target['connections']:,} connected)"
    if target["projected_mib"] is not None:
        caption += f"; projected from RSS per connection: {target['projected_mib']:,.0f} MiB"
    out = [
        table(
            "Executor scale (CPU s per 1,000 charger messages, RSS per connection in KiB; ratios to the floor)",
            COLUMNS,
            result["rows"],
            caption,
        )
    ]
    if result["floor"]["rows"]:
        out.append(
            table(
                f"Floor: {result['floor']['server']} server under the same load", FLOOR_COLUMNS, result["floor"]["rows"]
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", help="comma-separated charger counts")
    parser.add_argument("--rate", type=float, help="messages per second offered in total")
    parser.add_argument("--window", type=float, help="steady-state window, real seconds")
    parser.add_argument("--connect-rate", type=float, help="connections opened per second")
    parser.add_argument("--floor", choices=("ocpp", "raw", "none"))
    parser.add_argument(
        "--no-realtime",
        dest="realtime",
        action="store_false",
        default=None,
        help="skip the largest size at its real message rate",
    )
    parser.add_argument("--py-spy", help="record the executor with py-spy over each window into this folder")
    parser.add_argument(
        "--async-validation",
        action="store_true",
        default=None,
        help="servers validate OCPP payloads in a thread pool (the ocpp library's default)",
    )
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    changes = {
        "sizes": tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None,
        "rate": args.rate,
        "window_s": args.window,
        "connect_rate": args.connect_rate,
        "floor": args.floor,
        "py_spy": args.py_spy,
        "async_validation": args.async_validation,
        "realtime": args.realtime,
    }
    cfg = replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    result = run(cfg=cfg)
    console = Console()
    for tbl in tables(result):
        console.print(tbl)
    if args.json:
        write_json(args.json, {"machine": machine(), "results": {"scale": result}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
