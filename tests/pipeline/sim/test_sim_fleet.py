"""run_fleet: many simulated chargers, EVs arriving on the clock, against the test central system."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from pipeline.contracts.clock import SimClock
from pipeline.sim import run_fleet
from pipeline.sim.fleet import fixed_schedule_factory, simple_ev
from tests.kits.csms import T0


async def test_fleet_runs_every_ev_to_completion(central):
    clock = SimClock(T0, speed=3600)
    base = clock.now()
    evs = {
        f"CP{i:03d}": [
            simple_ev(f"EV{i}a", base + timedelta(seconds=60 * i), energy_kwh=2.0, max_ac_kw=11.0),
            simple_ev(f"EV{i}b", base + timedelta(seconds=900), energy_kwh=1.0, max_ac_kw=7.0),
        ]
        for i in range(1, 4)
    }
    powers: list[tuple] = []
    summary = await asyncio.wait_for(
        run_fleet(
            central.url,
            3,
            clock,
            fixed_schedule_factory(evs),
            meter_interval_s=300,
            on_power=lambda *a: powers.append(a),
        ),
        2,
    )
    assert summary["sessions"] == 6 and summary["chargers_failed"] == []
    assert summary["energy_requested_kwh"] == pytest.approx(9.0)
    assert summary["energy_delivered_kwh"] == pytest.approx(9.0)
    assert summary["by_reason"] == {"Local": 6}
    assert set(central.chargers) == {"CP001", "CP002", "CP003"}
    for cp_id, side in central.chargers.items():
        starts = side.of("StartTransaction")
        assert [s["id_tag"] for s in starts] == [e.ev_id for e in evs[cp_id]]
        assert starts[1]["timestamp"] >= "2024-06-03T08:15"  # the second EV waited for its arrival
        assert [s["reason"] for s in side.of("StopTransaction")] == ["Local", "Local"]
    assert {p[0] for p in powers} == {"CP001", "CP002", "CP003"}
    assert sorted(d["ev_id"] for d in summary["session_details"]) == sorted(e.ev_id for v in evs.values() for e in v)


async def test_fleet_stops_at_duration(central):
    clock = SimClock(T0, speed=3600)
    base = clock.now()
    evs = {f"CP{i:03d}": [simple_ev(f"EV{i}", base, energy_kwh=50.0, max_ac_kw=11.0)] for i in (1, 2)}
    summary = await asyncio.wait_for(
        run_fleet(central.url, 2, clock, fixed_schedule_factory(evs), duration_s=600, prefix="S"), 2
    )
    # chargers are named with the prefix; the evs dict uses CP names, so no EV was served and the run ends
    assert summary["sessions"] == 0 and summary["energy_requested_kwh"] == 0
    assert set(central.chargers) == {"S001", "S002"}
    # 600 clock seconds are 1 s of real time here, so both EVs are charging when the duration ends even
    # on a busy machine (at 3600x it was 0.17 s, and a slow boot left no session open to stop).
    clock = SimClock(T0, speed=600)
    evs = {f"CP{i:03d}": [simple_ev(f"EV{i}", clock.now(), energy_kwh=50.0, max_ac_kw=11.0)] for i in (1, 2)}
    summary = await asyncio.wait_for(run_fleet(central.url, 2, clock, fixed_schedule_factory(evs), duration_s=600), 10)
    assert summary["by_reason"] == {"Other": 2}
    assert 0 < summary["energy_delivered_kwh"] < summary["energy_requested_kwh"] == pytest.approx(100.0)
    for side in (central.chargers["CP001"], central.chargers["CP002"]):
        assert side.of("StopTransaction")[0]["reason"] == "Other"


async def test_fleet_stop_event_and_failing_charger(central):
    clock = SimClock(T0, speed=600)
    stop = asyncio.Event()

    def factory(cp_id, now):
        if cp_id == "CP002":
            raise RuntimeError("broken factory")
        return simple_ev(f"EV-{cp_id}-{now.timestamp()}", now, energy_kwh=100.0)

    async def stop_soon():
        await asyncio.sleep(0.2)
        stop.set()

    stopper = asyncio.create_task(stop_soon())
    summary = await asyncio.wait_for(run_fleet(central.url, 3, clock, factory, stop_event=stop), 2)
    await stopper
    assert summary["chargers_failed"] == ["CP002"]
    assert summary["sessions"] == 2 and summary["by_reason"] == {"Other": 2}
    assert summary["energy_delivered_kwh"] > 0


def test_simulate_with_no_reachable_central_system_is_one_line_and_exit_1():
    from click.testing import CliRunner

    from pipeline.cli.main import main
    from tests.kits.live import free_port

    url = f"ws://127.0.0.1:{free_port()}/ocpp"
    result = CliRunner().invoke(main, ["simulate", "--url", url, "--chargers", "3", "--duration", "1"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: no charger connected to {url} (ocpp1.6)")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


async def test_simulate_speaks_2_0_1_with_a_password_to_the_executor(caplog):
    import logging

    from executor import Executor, ExecutorConfig
    from executor.ocpp.auth import hash_password
    from pipeline.app.loop import publish_topology
    from pipeline.app.site import parse_config
    from pipeline.sim.run import simulate
    from pipeline.transport.memory import MemoryTransport

    site = parse_config(
        {
            "sites": [
                {
                    "site_id": "s",
                    "limit_kw": 50,
                    "chargers": [{"id": "SIM001", "max_power_kw": 22}, {"id": "SIM002", "max_power_kw": 22}],
                }
            ]
        }
    )
    transport = MemoryTransport()
    await publish_topology(transport, site)
    caplog.set_level(logging.INFO, logger="executor")
    credentials = {cp: hash_password("s3cret-s3cret", ln=4) for cp in ("SIM001", "SIM002")}
    executor = Executor(transport, ExecutorConfig(port=0, metrics=False, credentials=credentials))
    await executor.start()
    try:
        summary = await simulate(
            executor.url, 2, prefix="SIM", speed=60, duration_s=30, protocol="ocpp2.0.1", password="s3cret-s3cret"
        )
        assert summary["chargers_connected"] == 2 and summary["chargers_failed"] == []
        assert transport.log("ocpp.active.sessions")  # their sessions reached the topic
        connected = [r.getMessage() for r in caplog.records if "connected (" in r.getMessage()]
        assert sorted(connected)[0].startswith("SIM001: connected (ocpp2.0.1)")
    finally:
        await executor.stop()
