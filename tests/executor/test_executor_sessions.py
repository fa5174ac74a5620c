"""Sessions on ``ocpp.active.sessions``: published at start, updated by MeterValues, tombstoned at stop."""

from __future__ import annotations

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
