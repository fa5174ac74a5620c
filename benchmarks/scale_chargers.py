"""The load generator of the scale benchmark: thousands of light OCPP 1.6J chargers in one process.

Real charger simulators (``pipeline.sim``, the ``ocpp`` library) cost too much per connection to run
10,000 of them on two cores beside the server under test, so these chargers are plain ``websockets``
clients writing hand-made JSON frames. Each one connects (``ocpp1.6``, no permessage-deflate and no
client pings, like most charger firmware; the server's own keepalive pings are answered by websockets),
sends BootNotification, StatusNotification (Available), StartTransaction and StatusNotification
(Charging), then, from the common start time ``t0``, Heartbeat every ``heartbeat_s`` and MeterValues
(power, energy register, SoC) every ``meter_s`` real seconds, each at a random phase so the load is even.
Calls from the server are answered at once: GetConfiguration with ``Current,Power``, SetChargingProfile
and ClearChargingProfile ``Accepted``, anything else a ``NotImplemented`` CALLERROR.

Connections open at most ``connect_rate`` per second and at most ``max_booting`` at a time per process (a
closed-loop ramp: the server's accept path sets the pace, nothing queues until it times out). One process
runs :func:`main` for a slice of the charger ids. Pipe protocol with :mod:`benchmarks.scale`:
the child sends ``("status", {...})`` every 0.25 s (connected, failed, server calls received), waits for
``("go", t0, t_end)`` (``time.monotonic()`` instants, shared by every process on the machine), sends on
schedule while ``t0 <= now < t_end``, waits ``drain_s`` for the last answers and sends ``("result", {...})``:
messages sent in the window, answered, late (answered after ``late_s``), dropped (no answer by the end of the
drain, or sent on a closed connection), answered within the window, CALLERRORs, every latency in ms, the
lag of its own schedule and its own CPU seconds over the window.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import resource
import time
from datetime import UTC, datetime

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SUBPROTOCOL = "ocpp1.6"
CALL, RESULT, ERROR = 2, 3, 4
HEARTBEAT, METER = 0, 1
_REPLIES = {
    "GetConfiguration": json.dumps(
        {
            "configurationKey": [
                {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current,Power"}
            ]
        }
    ),
    "SetChargingProfile": '{"status": "Accepted"}',
    "ClearChargingProfile": '{"status": "Accepted"}',
}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Charger:
    __slots__ = ("cp_id", "ws", "tx", "energy_wh", "closed")

    def __init__(self, cp_id: str) -> None:
        self.cp_id = cp_id
        self.ws = None
        self.tx: int | None = None
        self.energy_wh = random.randint(0, 50_000)
        self.closed = False


class Generator:
    """Chargers ``ids`` against ``url`` (``ws://host:port/ocpp``); see the module docstring.

    ``connect_rate`` is connections opened per second by this process; ``late_s`` and ``drain_s`` are real
    seconds.
    """

    def __init__(
        self,
        url: str,
        ids: list[str],
        *,
        connect_rate: float,
        heartbeat_s: float,
        meter_s: float,
        max_booting: int = 25,
        late_s: float = 1.0,
        drain_s: float = 10.0,
    ) -> None:
        self.url = url
        self.chargers = [_Charger(i) for i in ids]
        self.connect_rate = connect_rate
        self.max_booting = max_booting
        self.heartbeat_s, self.meter_s = heartbeat_s, meter_s
        self.late_s, self.drain_s = late_s, drain_s
        self._next_id = 0
        # message id -> (sent at, in window, future or None)
        self._pending: dict[str, tuple[float, bool, asyncio.Future | None]] = {}
        self.window = (float("inf"), float("inf"))
        self.connected = self.failed = self.closed = 0
        self.failures: dict[str, int] = {}
        self.server_calls: dict[str, int] = {}
        self.sent = self.answered = self.answered_in_window = self.late = self.errors = self.dropped = 0
        self.latencies_ms: list[float] = []
        self.lags_ms: list[float] = []
        self.window_cpu_s = 0.0
        self._tasks: set[asyncio.Task] = set()

    # -- framing -------------------------------------------------------------------------------------------

    def _frame(self, action: str, payload: str) -> tuple[str, str]:
        self._next_id += 1
        uid = str(self._next_id)
        return uid, f'[2,"{uid}","{action}",{payload}]'

    async def _call(self, ch: _Charger, action: str, payload: str, timeout_s: float = 60.0) -> list:
        """Send a CALL and wait for its answer (connect phase)."""
        uid, frame = self._frame(action, payload)
        fut = asyncio.get_running_loop().create_future()
        self._pending[uid] = (time.monotonic(), False, fut)
        await ch.ws.send(frame)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pending.pop(uid, None)

    async def _send_scheduled(self, ch: _Charger, kind: int, now: float) -> None:
        """Send a Heartbeat or MeterValues without waiting for its answer (the reader records it); a send
        suspends only when the connection's write buffer is full."""
        if kind == HEARTBEAT:
            uid, frame = self._frame("Heartbeat", "{}")
        else:
            ch.energy_wh += random.randint(10, 60)
            stamp = _iso_now()
            uid, frame = self._frame(
                "MeterValues",
                (
                    f'{{"connectorId":1,"transactionId":{ch.tx},"meterValue":[{{"timestamp":"{stamp}","sampledValue":['
                    f'{{"value":"{random.randint(6000, 22000)}","measurand":"Power.Active.Import","unit":"W"}},'
                    f'{{"value":"{ch.energy_wh}","measurand":"Energy.Active.Import.Register","unit":"Wh"}},'
                    f'{{"value":"{random.randint(10, 95)}","measurand":"SoC","unit":"Percent","location":"EV"}}]}}]}}'
                ),
            )
        in_window = self.window[0] <= now < self.window[1]
        if in_window:
            self.sent += 1
        if ch.closed:
            self.dropped += in_window
            return
        self._pending[uid] = (now, in_window, None)
        try:
            await ch.ws.send(frame)
        except ConnectionClosed:
            pass  # the reader marks it closed; the message counts as dropped after the drain

    # -- per connection --------------------------------------------------------------------------------

    async def _read(self, ch: _Charger) -> None:
        try:
            async for raw in ch.ws:
                msg = json.loads(raw)
                kind = msg[0]
                if kind == CALL:
                    action = msg[2]
                    self.server_calls[action] = self.server_calls.get(action, 0) + 1
                    reply = _REPLIES.get(action)
                    if reply is None:
                        await ch.ws.send(json.dumps([ERROR, msg[1], "NotImplemented", action, {}]))
                    else:
                        await ch.ws.send(f"[3,{json.dumps(msg[1])},{reply}]")
                    continue
                entry = self._pending.pop(msg[1], None)
                if entry is None:
                    continue
                sent_at, in_window, fut = entry
                if fut is not None:
                    if not fut.done():
                        fut.set_result(msg)
                    continue
                if in_window:
                    now = time.monotonic()
                    latency = now - sent_at
                    self.answered += 1
                    self.answered_in_window += now < self.window[1]
                    self.latencies_ms.append(latency * 1000.0)
                    self.late += latency > self.late_s
                    self.errors += kind == ERROR
        except ConnectionClosed:
            pass
        finally:
            ch.closed = True
            self.closed += 1

    async def _open(self, ch: _Charger) -> None:
        try:
            ch.ws = await connect(
                f"{self.url}/{ch.cp_id}",
                subprotocols=[SUBPROTOCOL],
                compression=None,
                ping_interval=None,
                open_timeout=60,
                max_queue=4,
            )
            reader = asyncio.create_task(self._read(ch))
            self._tasks.add(reader)
            await self._call(ch, "BootNotification", '{"chargePointVendor":"Bench","chargePointModel":"Scale"}')
            await self._call(ch, "StatusNotification", '{"connectorId":1,"errorCode":"NoError","status":"Available"}')
            answer = await self._call(
                ch,
                "StartTransaction",
                (
                    f'{{"connectorId":1,"idTag":"TAG-{ch.cp_id}","meterStart":{ch.energy_wh},"timestamp":"{_iso_now()}"}}'
                ),
            )
            if answer[0] != RESULT:
                raise RuntimeError(f"StartTransaction: {answer[2:4]}")
            ch.tx = int(answer[2]["transactionId"])
            await self._call(ch, "StatusNotification", '{"connectorId":1,"errorCode":"NoError","status":"Charging"}')
            self.connected += 1
        except Exception as exc:
            self.failed += 1
            ch.closed = True
            why = type(exc).__name__
            self.failures[why] = self.failures.get(why, 0) + 1

    async def connect_all(self) -> None:
        """Open every charger's connection, at most ``connect_rate`` per second and at most ``max_booting``
        still booting (connected but not yet through its second StatusNotification) at a time, so the ramp
        follows what the server can accept instead of queueing connections until they time out."""
        start = time.monotonic()
        booting = asyncio.Semaphore(self.max_booting)
        opening = []

        async def open_one(ch: _Charger) -> None:
            try:
                await self._open(ch)
            finally:
                booting.release()

        for k, ch in enumerate(self.chargers):
            delay = start + k / self.connect_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await booting.acquire()
            opening.append(asyncio.create_task(open_one(ch)))
        await asyncio.gather(*opening)

    async def load(self) -> None:
        """Send Heartbeat and MeterValues on schedule over the window, then wait for the stragglers."""
        t0, t_end = self.window
        heap = []
        for idx, ch in enumerate(self.chargers):
            if ch.tx is not None:
                heap.append((t0 + random.uniform(0, self.heartbeat_s), idx, HEARTBEAT))
                heap.append((t0 + random.uniform(0, self.meter_s), idx, METER))
        heapq.heapify(heap)
        periods = {HEARTBEAT: self.heartbeat_s, METER: self.meter_s}
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = _cpu_s()
        while heap and heap[0][0] < t_end:
            due, idx, kind = heap[0]
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            heapq.heapreplace(heap, (due + periods[kind], idx, kind))
            self.lags_ms.append((now - due) * 1000.0)
            await self._send_scheduled(self.chargers[idx], kind, now)
            if len(self.lags_ms) % 64 == 0:
                await asyncio.sleep(0)  # let the readers in
        self.window_cpu_s = _cpu_s() - cpu0
        deadline = t_end + self.drain_s
        while time.monotonic() < deadline and any(e[1] for e in self._pending.values()):
            await asyncio.sleep(0.1)
        self.dropped += sum(1 for e in self._pending.values() if e[1])

    def status(self) -> dict:
        return {
            "connected": self.connected,
            "failed": self.failed,
            "closed": self.closed,
            "server_calls": sum(self.server_calls.values()),
        }

    def result(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            **self.status(),
            "failures": self.failures,
            "server_calls_by_action": self.server_calls,
            "sent": self.sent,
            "answered": self.answered,
            "answered_in_window": self.answered_in_window,
            "late": self.late,
            "errors": self.errors,
            "dropped": self.dropped,
            "latencies_ms": self.latencies_ms,
            "lags_ms": self.lags_ms,
            "window_cpu_s": self.window_cpu_s,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "maxrss_kib": usage.ru_maxrss,
        }


async def _amain(conn, gen: Generator) -> None:
    status_every = 0.25

    async def report() -> None:
        while True:
            conn.send(("status", gen.status()))
            await asyncio.sleep(status_every)

    reporter = asyncio.create_task(report())
    connecting = asyncio.create_task(gen.connect_all())
    while True:
        while conn.poll():
            msg = conn.recv()
            if msg[0] == "go":
                gen.window = (msg[1], msg[2])
        if gen.window[0] != float("inf"):
            break
        await asyncio.sleep(0.05)
    await connecting
    await gen.load()
    reporter.cancel()
    conn.send(("result", gen.result()))
    for ch in gen.chargers:  # close quickly; the server may already be gone
        if ch.ws is not None and not ch.closed:
            ch.ws.transport.abort()


def main(conn, url: str, ids: list[str], options: dict) -> None:
    """Process entry point: run a :class:`Generator` (``options`` are its keyword arguments)."""
    random.seed(hash(ids[0]) if ids else 0)
    asyncio.run(_amain(conn, Generator(url, ids, **options)))
