"""A small site of simulated chargers (1.6 or 2.0.1, from ``pipeline.sim``) around a real executor.

Three 32 A (22.08 kW) chargers hang on a 32 A panel ``p`` under site ``s``; EVs take ``ev_response_s``
clock seconds to follow a limit. :class:`NodeMeter` records every draw change with its clock time and
reports the highest node draw that lasted a positive time.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timedelta
from typing import Any

from executor import Executor, ExecutorConfig
from pipeline.contracts.clock import SimClock
from pipeline.contracts.topics import SetpointCommand, TopologyNode
from pipeline.sim import EV, SimulatedChargePoint, SimulatedChargingStation, Station
from pipeline.transport import MemoryTransport, publish
from tests.kits.ocpp import T0, wait_for

VERSIONS: dict[str, type[Station]] = {"1.6": SimulatedChargePoint, "2.0.1": SimulatedChargingStation}
NODE_A = 32.0
NODE_KW = NODE_A * 3 * 230 / 1000  # 22.08
IDS = ("A", "B", "C")


def topology() -> list[TopologyNode]:
    return [
        TopologyNode(node_id="s", site_id="s", kind="site", limit_kw=100),
        TopologyNode(node_id="p", site_id="s", parent_id="s", kind="panel", limit_kw=NODE_KW),
        *(TopologyNode(node_id=i, site_id="s", parent_id="p", kind="charger", limit_kw=NODE_KW) for i in IDS),
    ]


class NodeMeter:
    """Per-connector draw over clock time; :meth:`peak_kw` ignores states that lasted no time."""

    def __init__(self) -> None:
        self.events: list[tuple[datetime, str, float]] = []

    def on_power(self, cp: str, connector_id: int, kw: float, at: datetime) -> None:
        self.events.append((at, cp, kw))

    def peak_kw(self) -> float:
        draw: dict[str, float] = {}
        peak = 0.0
        ordered = sorted(self.events, key=lambda e: e[0])
        for i, (at, cp, kw) in enumerate(ordered):
            draw[cp] = kw
            if i + 1 == len(ordered) or ordered[i + 1][0] > at:  # the state after every change at `at`
                peak = max(peak, sum(draw.values()))
        return peak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """Executor + simulated chargers on one transport and clock; use as ``async with Site(...) as site``."""

    def __init__(
        self,
        version: str,
        *,
        speed: float = 40.0,
        ev_response_s: float = 2.0,
        chargers: int = 3,
        port: int = 0,
        executor: dict[str, Any] | None = None,
        **charger_kwargs: Any,
    ) -> None:
        self.cls = VERSIONS[version]
        self.clock = SimClock(T0, speed)
        self.transport = MemoryTransport()
        self.meter = NodeMeter()
        self.ev_response_s = ev_response_s
        self.port = port
        self.executor_kwargs = {
            "ev_response_lag_s": ev_response_s,
            "increase_debounce_s": 0.2,
            "boot_wait_s": 0.1,
            "call_timeout_s": 2.0,
            "retry_initial_s": 0.05,
            **(executor or {}),
        }
        self.ids = IDS[:chargers]
        self.charger_kwargs = charger_kwargs
        self.executor: Executor | None = None
        self.chargers: list[Station] = []
        self.tx: dict[str, Any] = {}
        self._computed = 0

    async def start_executor(self) -> Executor:
        config = ExecutorConfig(host="127.0.0.1", port=self.port, metrics=False, **self.executor_kwargs)
        self.executor = Executor(self.transport, config, self.clock)
        await self.executor.start()
        self.port = self.executor.port
        return self.executor

    async def __aenter__(self) -> Site:
        for node in topology():
            await publish(self.transport, "site.topology", node)
        await self.start_executor()
        self.chargers = [
            self.cls(
                i,
                f"ws://127.0.0.1:{self.port}/ocpp",
                self.clock,
                rated_power_kw=NODE_KW,
                ev_response_s=self.ev_response_s,
                on_power=self.meter.on_power,
                meter_interval_s=3600,
                response_timeout_s=5,
                **self.charger_kwargs,
            )
            for i in self.ids
        ]
        await asyncio.gather(*(cp.start() for cp in self.chargers))
        # the fail-safe is in place (TxDefaultProfile at 6 A) before any EV arrives
        await wait_for(
            lambda: all(("TxDefault", 0) in self.executor._dispatchers[i]._sent for i in self.ids),
            timeout=5,
            what="fail-safe profiles",
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.gather(*(cp.stop() for cp in self.chargers), return_exceptions=True)
        if self.executor is not None:
            await self.executor.stop()

    async def plug_all(self) -> None:
        now = self.clock.now()
        for cp in self.chargers:
            ev = EV(f"EV-{cp.charge_point_id}", "test", 100.0, NODE_KW, 10.0, 90.0, now, now + timedelta(days=1))
            self.tx[cp.charge_point_id] = await cp.plug_in(ev)
        await wait_for(
            lambda: all(self.executor._sessions.active_transaction(i, 1) for i in self.ids), what="sessions confirmed"
        )

    def command(self, cp: str, amps: float, when: datetime | None = None) -> SetpointCommand:
        self._computed += 1
        tx = self.tx[cp]
        return SetpointCommand(
            session_id=f"{cp}-{tx}",
            charge_point_id=cp,
            connector_id=1,
            transaction_id=str(tx),
            site_id="s",
            node_id="p",
            setpoint_kw=round(amps * 0.69, 4),
            setpoint_a=amps,
            phases=3,
            voltage_v=230.0,
            node_limit_kw=NODE_KW,
            site_limit_kw=100.0,
            binding="headroom",
            computed_at=(when or self.clock.now()) + timedelta(microseconds=self._computed),
        )

    async def allocate(self, amps: dict[str, float]) -> None:
        for cp, a in amps.items():
            await publish(self.transport, "ocpp.setpoint.commands", self.command(cp, a))

    def holds(self, amps: dict[str, float]) -> bool:
        """The chargers hold these limits and the executor is done (its acks are published)."""
        return (
            self.executor is not None
            and self.executor.idle
            and all(
                next(c for c in self.chargers if c.charge_point_id == cp).held_limit(1) == a for cp, a in amps.items()
            )
        )

    def tx_acks(self) -> list:
        from pipeline.contracts.topics import decode

        return [
            a
            for a in (decode("ocpp.setpoint.acks", r.key, r.value) for r in self.transport.log("ocpp.setpoint.acks"))
            if a.purpose == "Tx"
        ]
