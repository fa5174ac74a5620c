"""Debug logs of the executor: each dispatch decision and OCPP call is a record with the charger and a reason,
each incoming message a record with its action, and they all format as JSON lines."""

from __future__ import annotations

import json
import logging

from pipeline.app.logs import JsonLineFormatter
from pipeline.transport import publish
from tests.kits.ocpp import at, command, open_charge_point, wait_for

COMMANDS = "ocpp.setpoint.commands"


def records(caplog, reason: str | None = None, **fields) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if (reason is None or getattr(r, "reason", None) == reason)
        and all(getattr(r, k, None) == v for k, v in fields.items())
    ]


async def test_dispatch_decisions_and_calls_are_debug_records(make_executor, transport, caplog):
    caplog.set_level(logging.DEBUG, logger="executor")
    executor = await make_executor(deadband_a=0.5)
    async with open_charge_point(executor.port) as cp:
        tx = await cp.start_tx()
        cp.statuses = ["Rejected"]
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.0, computed_at=at(0)))
        await wait_for(lambda: executor.held_setpoints().get(("CP1", 1)) == 16.0, what="held")
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.3, computed_at=at(1)))
        await wait_for(lambda: records(caplog, "deadband"), what="deadband record")

    [deadband] = records(caplog, "deadband")
    assert (deadband.levelno, deadband.charge_point_id, deadband.connector_id) == (logging.DEBUG, "CP1", 1)
    assert deadband.getMessage() == "CP1: connector 1: 16.0 -> 16.3A is within the deadband"
    # the first goes down from the rating (no fail-safe profile accepted yet), the retry up from the floor
    sent = [r for r in records(caplog, action="SetChargingProfile", purpose="Tx") if not hasattr(r, "status")]
    assert [(r.reason, r.limit, r.unit, r.transaction_id) for r in sent] == [
        ("decrease", 16.0, "A", str(tx)),
        ("increase", 16.0, "A", str(tx)),
    ]
    [retry] = records(caplog, "retry")
    assert (retry.status, retry.failures, retry.delay_s) == ("Rejected", 1, 0.05)
    assert {r.purpose for r in records(caplog, "failsafe")} == {"StationMax", "TxDefault"}
    assert records(caplog, "rate_unit", action="GetConfiguration")
    answers = [
        r
        for r in caplog.records
        if getattr(r, "status", None)
        and getattr(r, "duration_ms", None) is not None
        and r.action == "SetChargingProfile"
        and r.purpose == "Tx"
    ]
    assert [r.status for r in answers] == ["Rejected", "Accepted"]
    incoming = [r for r in caplog.records if r.name == "executor.ocpp.ocppj" and hasattr(r, "message_type")]
    assert ("Call", "StartTransaction") in {(r.message_type, r.action) for r in incoming}
    assert "CallResult" in {r.message_type for r in incoming}
    assert all(r.charge_point_id == "CP1" for r in incoming)

    formatter = JsonLineFormatter()
    line = json.loads(formatter.format(deadband))
    assert {k: line[k] for k in ("level", "logger", "charge_point_id", "reason")} == {
        "level": "DEBUG",
        "logger": "executor.dispatch",
        "charge_point_id": "CP1",
        "reason": "deadband",
    }
    assert all(json.loads(formatter.format(r)) for r in caplog.records)


async def test_a_held_back_increase_is_logged_once_with_why(make_executor, transport, caplog):
    caplog.set_level(logging.DEBUG, logger="executor.dispatch")
    executor = await make_executor(increase_debounce_s=60.0)  # the frozen clock never ends it
    async with open_charge_point(executor.port) as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=10.0, computed_at=at(0)))  # a cut: at once
        await wait_for(lambda: executor.held_setpoints().get(("CP1", 1)) == 10.0, what="held")
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.0, computed_at=at(1)))
        await wait_for(lambda: executor.held_back() == {("CP1", 1): "debounce"}, what="held back")
        executor._changed("CP1")  # re-planning the same hold logs nothing new
        await wait_for(lambda: executor.idle, what="idle")
    [held] = records(caplog, "held_back")
    assert (held.charge_point_id, held.connector_id, held.wait) == ("CP1", 1, "debounce")
    assert held.getMessage() == "CP1: connector 1: increase held back (debounce)"


async def test_no_debug_records_when_debug_is_off(make_executor, transport, caplog):
    caplog.set_level(logging.INFO, logger="executor")
    executor = await make_executor()
    async with open_charge_point(executor.port) as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.0))
        await wait_for(lambda: executor.held_setpoints().get(("CP1", 1)) == 16.0, what="held")
    assert not [r for r in caplog.records if r.levelno < logging.INFO]


async def test_a_session_start_and_stop_are_one_info_line_each_with_energy_and_duration(make_executor, caplog):
    from datetime import timedelta

    from ocpp.v16 import call

    from tests.kits.ocpp import T0, iso

    caplog.set_level(logging.INFO, logger="executor")
    executor = await make_executor()
    async with open_charge_point(executor.port) as cp:
        tx = await cp.start_tx(meter_start=1000)
        await cp.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=[
                    {
                        "timestamp": iso(T0 + timedelta(minutes=30)),
                        "sampledValue": [{"value": "6500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}],
                    }
                ],
            )
        )
        await cp.call(
            call.StopTransaction(meter_stop=6500, timestamp=iso(T0 + timedelta(minutes=45)), transaction_id=tx)
        )
        await wait_for(lambda: [r for r in caplog.records if "stopped" in r.getMessage()], what="the stop line")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and ": session " in r.getMessage()]
    assert lines == [
        f"CP1: session CP1-{tx} started on connector 1",
        f"CP1: session CP1-{tx} stopped: 5.50 kWh in 45 min",
    ]
