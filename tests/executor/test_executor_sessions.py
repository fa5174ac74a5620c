"""Sessions on ``ocpp.active.sessions``: published at start, updated by MeterValues, tombstoned at stop."""

from __future__ import annotations

import asyncio
import json

from ocpp.v16 import call

from executor.sessions import TransactionIds
from pipeline.contracts.topics import TopologyNode
from pipeline.transport import publish
from tests.kits.ocpp import SITE_NODES, T0, at, iso, open_charge_point

SESSIONS = "ocpp.active.sessions"


def session_json(tx: int, **updates) -> dict:
    base = {
        "session_id": f"CP1-{tx}",
        "charge_point_id": "CP1",
        "connector_id": 1,
        "transaction_id": str(tx),
        "site_id": "depot-1",
        "node_id": "panel-a",
        "rated_power_kw": 22.0,
        "ev_max_power_kw": None,
        "min_power_kw": None,
        "phases": 3,
        "voltage_v": 230.0,
        "priority": 0,
        "weight": 1.0,
        "started_at": "2025-01-06T08:00:00Z",
        "current_power_kw": None,
        "energy_kwh": None,
        "soc_pct": None,
        "sampled_at": None,
        "charger_sampled_at": None,
    }
    base.update(updates)
    return base


def fields(record) -> dict:
    """The record's value restricted to the fields these tests know (the contract may grow)."""
    value = json.loads(record.value)
    return {k: value[k] for k in session_json(0) if k in value}


async def test_session_lifecycle_records(charge_point, transport, executor):
    async with charge_point() as cp:
        await cp.boot()
        tx = await cp.start_tx(connector_id=1, meter_start=1000, when=T0)
        assert isinstance(tx, int) and tx > 0
        await executor.outbox.flush(5)  # each update delivered before the next (else they coalesce)

        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=[
                    {
                        "timestamp": iso(at(60)),
                        "sampledValue": [
                            {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
                            {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                            {"value": "42", "measurand": "SoC", "unit": "Percent", "location": "EV"},
                            {"value": "16", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
                        ],
                    }
                ],
            )
        )
        await executor.outbox.flush(5)
        # kW / kWh units, per-phase power summed, default measurand is the energy register; two samples
        # in one message: the latest wins.
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=[
                    {
                        "timestamp": iso(at(180)),
                        "sampledValue": [
                            {"value": "2.0", "measurand": "Power.Active.Import", "unit": "kW", "phase": "L1"},
                            {"value": "2.0", "measurand": "Power.Active.Import", "unit": "kW", "phase": "L2"},
                            {"value": "2.5", "measurand": "Power.Active.Import", "unit": "kW", "phase": "L3"},
                            {"value": "3.5", "unit": "kWh"},
                        ],
                    },
                    {"timestamp": iso(at(120)), "sampledValue": [{"value": "2000"}]},
                ],
            )
        )
        # readings outside a transaction are not session updates
        await cp.call(
            call.MeterValues(
                connector_id=0, meter_value=[{"timestamp": iso(at(200)), "sampledValue": [{"value": "9999"}]}]
            )
        )
        await cp.call(call.StopTransaction(meter_stop=3600, timestamp=iso(at(240)), transaction_id=tx, id_tag="TAG1"))

    records = transport.log(SESSIONS)
    assert [r.key for r in records] == [f"CP1-{tx}"] * 4
    assert fields(records[0]) == session_json(tx)
    # sampled_at is the executor's clock when the readings arrived (the test clock stands at T0, 08:00);
    # charger_sampled_at is the latest reading's own timestamp on the charger's clock.
    assert fields(records[1]) == session_json(
        tx,
        current_power_kw=7.4,
        energy_kwh=0.5,
        soc_pct=42.0,
        sampled_at="2025-01-06T08:00:00Z",
        charger_sampled_at="2025-01-06T08:01:00Z",
    )
    assert fields(records[2]) == session_json(
        tx,
        current_power_kw=6.5,
        energy_kwh=2.5,
        soc_pct=42.0,
        sampled_at="2025-01-06T08:00:00Z",
        charger_sampled_at="2025-01-06T08:03:00Z",
    )
    assert records[3].value is None
    assert transport.latest(SESSIONS) == {}


async def test_the_chargers_phase_rotation_is_copied_onto_its_sessions(make_executor, transport):
    wired = TopologyNode(
        node_id="CP3", site_id="depot-1", parent_id="depot-1", kind="charger", limit_kw=22, phase_rotation="SRT"
    )
    for node in [*SITE_NODES, wired]:
        await publish(transport, "site.topology", node)
    executor = await make_executor()
    async with open_charge_point(executor.port, "CP3") as cp:
        await cp.boot()
        await cp.start_tx(connector_id=1, when=T0)
    records = [json.loads(r.value) for r in transport.log(SESSIONS) if r.value is not None]
    assert records and all(r["phase_rotation"] == "SRT" for r in records)


async def test_charger_missing_from_topology_is_accepted_but_not_published(charge_point, transport):
    async with charge_point("CP9") as cp:
        tx = await cp.start_tx()
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=[{"timestamp": iso(at(60)), "sampledValue": [{"value": "1500"}]}],
            )
        )
        result = await cp.call(call.StopTransaction(meter_stop=1500, timestamp=iso(at(60)), transaction_id=tx))
        assert result.id_tag_info is None
    assert transport.log(SESSIONS) == []


async def test_new_start_on_busy_connector_closes_the_old_session(charge_point, transport):
    async with charge_point() as cp:
        first = await cp.start_tx(connector_id=1)
        second = await cp.start_tx(connector_id=1, when=at(10))
        assert second != first
    assert [(r.key, r.value is None) for r in transport.log(SESSIONS)] == [
        (f"CP1-{first}", False),
        (f"CP1-{first}", True),
        (f"CP1-{second}", False),
    ]


async def test_sessions_survive_an_executor_restart(make_executor, transport, clock):
    from tests.kits.ocpp import open_charge_point

    first = await make_executor()
    async with open_charge_point(first.port) as cp:
        tx = await cp.start_tx(meter_start=1000)
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=[{"timestamp": iso(at(60)), "sampledValue": [{"value": "3000"}]}],
            )
        )
    await first.stop()

    second = await make_executor()
    async with open_charge_point(second.port) as cp:
        # the charger meters on from its register; energy continues from what was published (2 kWh)
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=[{"timestamp": iso(at(120)), "sampledValue": [{"value": "4000"}]}],
            )
        )
        await cp.call(call.StopTransaction(meter_stop=4000, timestamp=iso(at(180)), transaction_id=tx))
    values = [json.loads(r.value) if r.value else None for r in transport.log(SESSIONS)]
    assert [v and (v["energy_kwh"], v["started_at"]) for v in values] == [
        (None, "2025-01-06T08:00:00Z"),
        (2.0, "2025-01-06T08:00:00Z"),
        (2.0, "2025-01-06T08:00:00Z"),
        None,
    ]


def test_transaction_ids_track_wall_clock_and_never_repeat():
    now = [TransactionIds.EPOCH_S + 1_000]
    ids = TransactionIds(lambda: now[0])
    issued = [ids.next() for _ in range(5)]
    assert issued == [1_000, 1_001, 1_002, 1_003, 1_004]
    restarted = TransactionIds(lambda: now[0] + 10)  # a restart 10 s later starts above the old ids
    assert restarted.next() == 1_010
    assert all(i < 2**31 for i in issued)


def _reading(tx: int, seconds: float, power_w: float, energy_wh: float) -> call.MeterValues:
    return call.MeterValues(
        connector_id=1,
        transaction_id=tx,
        meter_value=[
            {
                "timestamp": iso(at(seconds)),
                "sampledValue": [
                    {"value": f"{power_w:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
                    {"value": f"{energy_wh:.0f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                ],
            }
        ],
    )


async def test_readings_that_move_nothing_the_views_read_wait_for_the_heartbeat(charge_point, transport, executor):
    """Every 5 s a reading whose power moves by less than 0.1 kW and energy by less than 0.5 kWh: only the
    first is published at once (the 120 s heartbeat is the sweep's, below); a 0.2 kW move is published at
    once; at the executor's stop the withheld reading is published."""
    async with charge_point() as cp:
        await cp.boot()
        tx = await cp.start_tx(connector_id=1, meter_start=1000, when=T0)
        for i in range(1, 26):  # 5 s .. 125 s
            await cp.call(_reading(tx, 5 * i, 7400 + (50 if i % 2 else 0), 1000 + 10 * i))
        await cp.call(_reading(tx, 130, 7650, 1270))
        await cp.call(_reading(tx, 135, 7660, 1280))
        await executor.stop()
    records = transport.log(SESSIONS)
    # the readings by their own (charger) time; sampled_at is the executor's receive time (a fixed clock here)
    published = [json.loads(r.value)["charger_sampled_at"] if r.value else None for r in records]
    assert published == [
        None,
        "2025-01-06T08:00:05Z",
        "2025-01-06T08:02:10Z",
        "2025-01-06T08:02:15Z",  # withheld, then published when the executor stopped
    ]
    assert fields(records[2])["current_power_kw"] == 7.65
    assert (executor.meter_gate.withheld, executor.meter_gate.flushed) == (25, 1)


async def test_a_waiting_sessions_heartbeat_goes_out_on_the_executors_clock(transport):
    """The sweep that sends heartbeats runs on the executor's clock: under a replay's compressed clock an EV
    waiting at 0 kW (its readings move nothing) still has a reading published a heartbeat after the last,
    well before the views call its meter stale (600 s). On real-time sweeps (10 s of wall time) a replay at
    2880x swept once per 8 simulated hours, and waiting sessions went stale between building-load steps."""
    from executor import Executor
    from executor.telemetry import METER_SWEEP_S
    from pipeline.contracts.clock import SimClock
    from tests.executor.conftest import executor_config

    clock = SimClock(T0)
    clock.hold()
    for node in SITE_NODES:
        await publish(transport, "site.topology", node)
    executor = Executor(transport, executor_config(call_timeout_s=1.0, boot_wait_s=0.05), clock)
    await executor.start()
    try:
        async with open_charge_point(executor.port, "CP1") as cp:
            await cp.boot()
            tx = await cp.start_tx(connector_id=1, meter_start=1000, when=T0)
            await cp.call(_reading(tx, 5, 0, 1000))
            clock.advance(300.0)
            await cp.call(_reading(tx, 305, 0, 1000))  # nothing moved: withheld until the sweep
            assert len([r for r in transport.log(SESSIONS) if r.value]) == 2
            clock.advance(METER_SWEEP_S)
            for _ in range(200):  # the sweep wakes on the clock's advance; bounded, not timed
                if len([r for r in transport.log(SESSIONS) if r.value]) == 3:
                    break
                await asyncio.sleep(0.01)
            assert fields(transport.log(SESSIONS)[-1])["charger_sampled_at"] == iso(at(305))
    finally:
        await executor.stop()


def test_meter_publish_rules():
    from executor.telemetry import meter_publish_due
    from pipeline.contracts.topics import ActiveSession

    base = ActiveSession.model_validate(
        session_json(1, current_power_kw=7.0, energy_kwh=1.0, soc_pct=50.0, sampled_at="2025-01-06T08:00:00Z")
    )

    def due(heartbeat_s: float = 120.0, setpoint_at=None, **changes) -> bool:
        changes.setdefault("sampled_at", at(5))
        return meter_publish_due(base, base.model_copy(update=changes), heartbeat_s, setpoint_at)

    assert not due(current_power_kw=7.09, energy_kwh=1.49, soc_pct=50.9)
    assert not due(charger_sampled_at=at(4))  # the charger's own time moves with every reading
    assert due(current_power_kw=6.9)  # a 0.1 kW move
    assert due(current_power_kw=None)  # the power went away
    assert due(energy_kwh=1.5) and due(soc_pct=51.0)
    assert due(ev_max_power_kw=11.0)  # not a meter field: at once
    assert due(heartbeat_s=0)  # the gate off
    # the deviation alert watches the power from 60 s after the setpoint: the first reading from then goes
    assert due(setpoint_at=at(-58)) and not due(setpoint_at=at(-70)) and not due(setpoint_at=at(-54))
    first = base.model_copy(update={"sampled_at": None, "current_power_kw": None})
    assert meter_publish_due(first, base)  # the first reading


def test_a_withheld_reading_with_no_newer_one_is_published_after_the_quiet_time():
    """So a charger that stops reporting has its last reading published: its meter turns stale 600 s after
    that reading, not after an older one."""
    from executor.telemetry import MeterGate
    from pipeline.contracts.topics import ActiveSession

    now = [0.0]
    gate = MeterGate(monotonic=lambda: now[0])
    first = ActiveSession.model_validate(session_json(1, current_power_kw=7.0, sampled_at="2025-01-06T08:00:00Z"))
    assert gate.admit(SESSIONS, "CP1-1", first)
    later = first.model_copy(update={"sampled_at": at(5)})
    assert not gate.admit(SESSIONS, "CP1-1", later)
    now[0] = 29.0
    assert gate.due(30.0) == []
    now[0] = 30.0
    assert gate.due(30.0) == [later]
    assert gate.due(0.0) == []  # once
    assert not gate.admit(SESSIONS, "CP1-1", later.model_copy(update={"sampled_at": at(10)}))  # judged on it
    assert gate.admit(SESSIONS, "CP1-1", None)  # a tombstone forgets the withheld one
    assert gate.due(0.0) == []


def test_the_sweep_publishes_readings_a_heartbeat_after_the_last_published_one():
    from executor.telemetry import MeterGate
    from pipeline.contracts.topics import ActiveSession

    gate = MeterGate(heartbeat_s=120.0, monotonic=lambda: 0.0)
    first = ActiveSession.model_validate(session_json(1, current_power_kw=7.0, sampled_at="2025-01-06T08:00:00Z"))
    assert gate.admit(SESSIONS, "CP1-1", first)
    assert not gate.admit(SESSIONS, "CP1-1", first.model_copy(update={"sampled_at": at(119)}))
    assert gate.due() == []  # not quiet, not a heartbeat yet
    beat = first.model_copy(update={"sampled_at": at(120)})
    assert not gate.admit(SESSIONS, "CP1-1", beat)  # withheld until the sweep
    assert gate.due() == [beat]
