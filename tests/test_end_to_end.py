"""The whole loop over real websockets: simulated chargers -> executor -> engine -> executor -> chargers."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from websockets.asyncio.client import connect

from executor import ExecutorConfig
from pipeline.app.gateway import GatewayError, send_record
from pipeline.app.loop import start_loop
from pipeline.app.settings import GatewaySettings
from pipeline.app.signals import demand_signal, dr_signal
from pipeline.contracts.clock import SystemClock
from pipeline.contracts.topics import encode
from pipeline.engine.config import EngineConfig
from pipeline.sim import SimulatedChargePoint
from pipeline.transport.memory import MemoryTransport
from tests.kits.loop import CONFIG, LIMIT_KW, ev


def held_kw(cp: SimulatedChargePoint) -> float:
    assert cp.held_limit_unit(1) == "A"
    return cp.held_limit(1) * 3 * 230 / 1000


async def wait_for(predicate, timeout_s: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def service():
    svc = await start_loop(
        MemoryTransport(),
        site=CONFIG,
        engine=EngineConfig(tick_s=0.2),
        executor=ExecutorConfig(port=0, metrics=False),
        gateway=GatewaySettings(port=0),
    )
    yield svc
    await svc.stop()


@pytest.fixture
async def chargers(service):
    clock = SystemClock()
    cps = [
        SimulatedChargePoint(f"CP{i}", f"ws://127.0.0.1:{service.port}/ocpp", clock, meter_interval_s=1)
        for i in range(1, 5)
    ]
    await asyncio.gather(*(cp.start() for cp in cps))
    yield cps
    await asyncio.gather(*(cp.stop() for cp in cps))


async def test_chargers_receive_limits_that_sum_within_headroom_and_follow_dr(service, chargers):
    for i, cp in enumerate(chargers):
        await cp.plug_in(ev(i))
    await wait_for(
        lambda: (
            all(cp.held_limit(1) is not None for cp in chargers) and sum(held_kw(cp) for cp in chargers) > LIMIT_KW - 1
        )
    )
    assert sum(held_kw(cp) for cp in chargers) <= LIMIT_KW + 1e-6
    assert sum(cp.power_kw(1) for cp in chargers) <= LIMIT_KW + 1e-6
    # Every charger holds exactly the latest setpoint the engine published for its session.
    latest = {
        json.loads(v)["charge_point_id"]: json.loads(v)
        for v in service.transport.latest("ocpp.setpoint.commands").values()
    }
    assert {cp.charge_point_id: cp.held_limit(1) for cp in chargers} == {k: v["setpoint_a"] for k, v in latest.items()}

    gateway = f"ws://127.0.0.1:{service.gateway_port}"
    topic, record = demand_signal(
        "s1",
        current_demand_kw=10.0 + sum(cp.power_kw(1) for cp in chargers),
        ev_load_kw=sum(cp.power_kw(1) for cp in chargers),
    )
    await send_record(gateway, topic, encode(record))
    await wait_for(lambda: sum(held_kw(cp) for cp in chargers) <= LIMIT_KW - 10 + 1e-6)
    topic, record = dr_signal("s1", curtailment_pct=50, duration_min=30)
    await send_record(gateway, topic, encode(record))
    await wait_for(lambda: sum(held_kw(cp) for cp in chargers) <= LIMIT_KW / 2 - 10 + 1e-6)
    await wait_for(lambda: sum(cp.power_kw(1) for cp in chargers) <= LIMIT_KW / 2 - 10 + 1e-6)
    # 10 kW of EV headroom fits two 4.14 kW floors: the two newest sessions are paused, not set below floor.
    assert sorted(round(held_kw(cp), 2) for cp in chargers)[:2] == [0.0, 0.0]


async def test_session_end_tombstones_and_frees_headroom(service, chargers):
    for i, cp in enumerate(chargers[:2]):
        await cp.plug_in(ev(i))
    await wait_for(lambda: all(cp.held_limit(1) is not None for cp in chargers[:2]))
    await chargers[0].stop()
    await wait_for(lambda: chargers[1].held_limit(1) == pytest.approx(31.8))
    assert len(service.transport.latest("ocpp.active.sessions")) == 1
    assert len(service.transport.latest("ocpp.setpoint.commands")) == 1


async def test_gateway_rejects_bad_signals_and_unknown_topics(service):
    gateway = f"ws://127.0.0.1:{service.gateway_port}"
    with pytest.raises(GatewayError, match="rejected the record: dr_event_id: Field required"):
        await send_record(gateway, "utility.dr.signals", b'{"site_id": "s1", "curtailment_pct": 150}')
    with pytest.raises(GatewayError):
        await send_record(gateway, "ocpp.setpoint.commands", b"{}")


async def test_malformed_ocpp_frames_and_topic_records_do_not_stop_the_loop(service, chargers):
    async with connect(f"ws://127.0.0.1:{service.port}/ocpp/CP9", subprotocols=["ocpp1.6"]) as ws:
        await ws.send("this is not OCPP")
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error[0] == 4  # CALLERROR
        await ws.send(json.dumps([2, "hb-1", "Heartbeat", {}]))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert answer[:2] == [3, "hb-1"]
    await service.transport.send("ocpp.active.sessions", "junk", b"{]")
    await service.transport.send("ocpp.setpoint.commands", "junk", b"{]")
    await chargers[0].plug_in(ev(0))
    await wait_for(lambda: chargers[0].held_limit(1) == pytest.approx(31.8))
    assert [r.key for r in service.transport.log("ocpp.active.sessions.dlq")] == ["junk"]
    assert [r.key for r in service.transport.log("ocpp.setpoint.commands.dlq")] == ["junk"]


async def test_a_taken_port_is_one_error_naming_its_setting_and_nothing_is_left_running():
    from pipeline.app.loop import StartError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        transport = MemoryTransport()
        with pytest.raises(StartError, match=rf"^gateway.port \(--gateway-port\): cannot listen on port {port}: "):
            await start_loop(
                transport,
                site=CONFIG,
                engine=EngineConfig(),
                executor=ExecutorConfig(port=0, metrics=False),
                gateway=GatewaySettings(port=port),
            )
        with pytest.raises(StartError, match=rf"^executor.port \(--port\): cannot listen on port {port}: "):
            await start_loop(transport, site=CONFIG, executor=ExecutorConfig(port=port, metrics=False))
    # the first attempt's executor was stopped: its OCPP port is free again, and no engine task is left
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "engine"]


async def test_a_part_that_does_not_stop_is_left_behind_by_name_and_the_others_stop(monkeypatch, caplog):
    """A SIGTERM must end the process: a part whose stop hangs (here the executor's) is given up after its
    bound, with an error naming it, and the parts after it (the engine, the transport) still stop."""
    from executor import Executor
    from pipeline.app import loop as loop_module

    async def hangs(self) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(Executor, "stop", hangs)
    monkeypatch.setattr(loop_module, "PART_STOP_TIMEOUT_S", 0.2)
    svc = await start_loop(
        MemoryTransport(),
        site=CONFIG,
        engine=EngineConfig(tick_s=0.2),
        executor=ExecutorConfig(port=0, metrics=False, outbox_drain_s=0),
        gateway=GatewaySettings(port=0),
    )
    await asyncio.wait_for(svc.stop(), 30)
    assert "the executor did not stop within 0.2 s; left behind so that the rest can stop" in caplog.text
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "engine"]


async def test_a_signal_for_an_unknown_site_is_refused_naming_the_known_ones_unless_forced(service):
    gateway = f"ws://127.0.0.1:{service.gateway_port}"
    _, record = dr_signal("no-such-site", curtailment_pct=20, duration_min=30)
    with pytest.raises(GatewayError, match=r"unknown site 'no-such-site' \(known: s1\); --force sends it anyway"):
        await send_record(gateway, "utility.dr.signals", encode(record))
    assert service.transport.log("utility.dr.signals") == []
    await send_record(gateway, "utility.dr.signals", encode(record), force=True)
    assert [r.key for r in service.transport.log("utility.dr.signals")] == ["no-such-site"]


async def test_a_cancelled_dr_event_restores_the_setpoints(service, chargers):
    from pipeline.app.signals import dr_cancel

    for i, cp in enumerate(chargers[:2]):
        await cp.plug_in(ev(i))
    await wait_for(
        lambda: (
            all(cp.held_limit(1) is not None for cp in chargers[:2])
            and sum(held_kw(cp) for cp in chargers[:2]) > LIMIT_KW - 1
        )
    )
    before = {cp.charge_point_id: cp.held_limit(1) for cp in chargers[:2]}
    gateway = f"ws://127.0.0.1:{service.gateway_port}"
    topic, record = dr_signal("s1", limit_kw=10, duration_min=60, event_id="dr-cut")
    await send_record(gateway, topic, encode(record))
    await wait_for(lambda: sum(held_kw(cp) for cp in chargers[:2]) <= 10 + 1e-6)  # the DR cut
    topic, record = dr_cancel("s1", "dr-cut")
    await send_record(gateway, topic, encode(record))
    await wait_for(lambda: {cp.charge_point_id: cp.held_limit(1) for cp in chargers[:2]} == before)  # restored


async def test_a_rule_set_by_the_cli_changes_a_charger_and_clearing_it_restores_the_setpoint(service, chargers):
    from click.testing import CliRunner

    from pipeline.cli.main import main

    cp = chargers[0]
    await cp.plug_in(ev(0))
    await wait_for(lambda: cp.held_limit(1) == pytest.approx(31.8))
    gateway = f"ws://127.0.0.1:{service.gateway_port}"

    def cli(*args: str):
        return CliRunner().invoke(main, ["rule", *args, "--gateway", gateway])

    result = await asyncio.to_thread(
        cli, "set", "--scope", "charger", "--id", "CP1", "--action", "cap", "--limit-kw", "6.9", "--reason", "test"
    )
    assert result.exit_code == 0 and result.output == "set rule operator:charger:CP1: cap 6.9 kW on charger CP1\n"
    await wait_for(lambda: cp.held_limit(1) == pytest.approx(10.0))  # 6.9 kW / (3 x 230 V)
    refused = await asyncio.to_thread(cli, "set", "--scope", "charger", "--id", "CP99", "--action", "pause")
    assert refused.exit_code == 1 and "unknown charger 'CP99' (known: " in refused.output
    result = await asyncio.to_thread(cli, "clear", "--scope", "charger", "--id", "CP1")
    assert result.exit_code == 0 and result.output == "cleared rule operator:charger:CP1\n"
    await wait_for(lambda: cp.held_limit(1) == pytest.approx(31.8))


async def test_a_parameter_set_by_the_cli_reaches_the_views_and_clearing_it_restores_the_default(service):
    from click.testing import CliRunner

    from pipeline.cli.main import main

    gateway = f"ws://127.0.0.1:{service.gateway_port}"

    def cli(*args: str):
        return CliRunner().invoke(main, ["param", *args, "--gateway", gateway])

    def on_peak() -> tuple:
        service.engine.engine.sync_readers()  # what pgwire does before each statement
        cursor = service.engine.engine.con.cursor()  # a connection of its own: the engine's may be evaluating
        try:
            rows = cursor.execute(
                "SELECT multiplier, source FROM tariff_multipliers WHERE price_tier = 'ON_PEAK'"
            ).fetchall()
        finally:
            cursor.close()
        return rows[0] if rows else ()

    result = await asyncio.to_thread(cli, "set", "tariff.multiplier.ON_PEAK", "0.25", "--reason", "test")
    assert result.exit_code == 0 and result.output == "set tariff.multiplier.ON_PEAK = 0.25 (default 0.5)\n"
    await wait_for(lambda: on_peak() == (0.25, "set"))
    refused = await asyncio.to_thread(cli, "set", "tariff.multiplier.ON_PEAK", "1.5")
    assert (
        refused.exit_code == 1 and refused.output == "Error: value: tariff.multiplier.ON_PEAK must be between 0 and 1\n"
    )
    result = await asyncio.to_thread(cli, "clear", "tariff.multiplier.ON_PEAK")
    assert result.exit_code == 0 and result.output == "cleared tariff.multiplier.ON_PEAK: back to its default 0.5\n"
    await wait_for(lambda: on_peak() == (0.5, "default"))


async def test_a_flexible_charger_in_the_site_file_is_shaped_by_the_tariff_and_its_parameter():
    from click.testing import CliRunner

    from pipeline.app.signals import price_signal
    from pipeline.app.site import parse_config
    from pipeline.cli.main import main

    site = parse_config(
        {
            "sites": [
                {
                    "site_id": "s1",
                    "limit_kw": 40,
                    "chargers": [
                        {"id": "CP1", "max_power_kw": 22, "flexible": True, "priority": 2, "weight": 2.0},
                        {"id": "CP2", "max_power_kw": 22},
                    ],
                }
            ]
        }
    )
    loop = await start_loop(
        MemoryTransport(),
        site=site,
        engine=EngineConfig(tick_s=0.2),
        executor=ExecutorConfig(port=0, metrics=False),
        gateway=GatewaySettings(port=0),
    )
    cp = SimulatedChargePoint("CP1", f"ws://127.0.0.1:{loop.port}/ocpp", SystemClock(), meter_interval_s=1)
    try:
        await cp.start()
        await cp.plug_in(ev(1))
        await wait_for(lambda: cp.held_limit(1) == pytest.approx(31.8))  # 22 kW: no tariff yet
        session = json.loads(next(iter(loop.transport.latest("ocpp.active.sessions").values())))
        assert (session["flexible"], session["priority"], session["weight"]) == (True, 2, 2.0)
        gateway = f"ws://127.0.0.1:{loop.gateway_port}"
        await send_record(
            gateway, "tariff.price.signals", encode(price_signal("s1", price_per_kwh=0.4, tier="ON_PEAK")[1])
        )
        await wait_for(lambda: cp.held_limit(1) == pytest.approx(15.9))  # 11 kW: half its cap on ON_PEAK
        result = await asyncio.to_thread(
            CliRunner().invoke, main, ["param", "set", "tariff.multiplier.ON_PEAK", "0.3", "--gateway", gateway]
        )
        assert result.exit_code == 0, result.output
        await wait_for(lambda: cp.held_limit(1) == pytest.approx(9.5))  # 6.6 kW: 0.3 of 22
    finally:
        await cp.stop()
        await loop.stop()
