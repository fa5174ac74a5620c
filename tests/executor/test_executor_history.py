"""The executor's history and clocks: ``ocpp.transaction.events`` at start and end, readings timed on receipt.

Each transaction's start and end go on ``ocpp.transaction.events`` with the meter registers (kWh), the stop
reason (1.6 ``StopTransaction.reason``, 2.0.1 ``stoppedReason``), the peak power and the binding that held
longest; the final meter reading is the stop message's own. A session's ``sampled_at`` is the executor's
clock when a reading arrived, ``charger_sampled_at`` the charger's own timestamp.
"""

from __future__ import annotations

from datetime import timedelta

from ocpp.v16 import call
from ocpp.v201 import call as call201

from pipeline.contracts.topics import TransactionEvent, decode
from pipeline.transport import publish
from tests.kits.ocpp import T0, at, command, iso
from tests.kits.ocpp201 import open_station

EVENTS, SESSIONS, COMMANDS = "ocpp.transaction.events", "ocpp.active.sessions", "ocpp.setpoint.commands"


def events(transport) -> list[TransactionEvent]:
    return [decode(EVENTS, r.key, r.value) for r in transport.log(EVENTS)]


def power(kw: float, when) -> dict:
    return {
        "timestamp": iso(when),
        "sampledValue": [{"value": str(kw), "measurand": "Power.Active.Import", "unit": "kW"}],
    }


async def test_a_16_transaction_publishes_its_start_and_end_with_the_final_reading(
    charge_point, transport, executor, clock
):
    async with charge_point() as cp:
        await cp.boot()
        tx = await cp.start_tx(connector_id=1, meter_start=1000, when=T0)
        await executor.outbox.flush(5)
        clock.current = T0 + timedelta(minutes=1)
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.0, binding="panel-a"))
        for kw, minute in ((7.0, 1), (11.0, 2), (9.0, 3)):
            reading = power(kw, at(60 * minute))
            await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[reading]))
        clock.current = T0 + timedelta(minutes=50)
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=10.0, binding="dr", computed_at=clock.current))
        await executor.outbox.flush(5)
        clock.current = T0 + timedelta(hours=1)
        await cp.call(
            call.StopTransaction(meter_stop=12500, timestamp=iso(at(3600)), transaction_id=tx, reason="EVDisconnected")
        )
        await executor.outbox.flush(5)
    started, ended = events(transport)
    key = f"CP1-{tx}"
    assert [r.key for r in transport.log(EVENTS)] == [key, key]
    assert (started.event_id, started.event_type, started.meter_start_kwh, started.ended_at) == (
        f"{key}:started",
        "started",
        1.0,
        None,
    )
    assert (started.site_id, started.started_at, started.recorded_at) == ("depot-1", T0, T0)
    assert (ended.event_id, ended.ended_at, ended.recorded_at) == (f"{key}:ended", at(3600), T0 + timedelta(hours=1))
    # meterStop (12500 Wh) is the final reading: 11.5 kWh since meterStart, whatever the meter values said
    assert (ended.meter_start_kwh, ended.meter_stop_kwh, ended.energy_kwh) == (1.0, 12.5, 11.5)
    assert (ended.peak_power_kw, ended.reason) == (11.0, "EVDisconnected")
    assert ended.binding == "panel-a"  # 49 min of panel-a against 10 min of dr


async def test_a_201_transaction_reports_its_stopped_reason_and_last_register(executor, transport):
    async with open_station(executor.port) as cs:
        meter = [{"timestamp": iso(at(0)), "sampled_value": [{"value": 2000.0}]}]
        await cs.tx_event("Started", "tx-9", meter=meter)
        final = [{"timestamp": iso(at(600)), "sampled_value": [{"value": 5500.0}]}]
        await cs.call(
            call201.TransactionEvent(
                event_type="Ended",
                timestamp=iso(at(600)),
                trigger_reason="EVCommunicationLost",
                seq_no=9,
                transaction_info={"transaction_id": "tx-9", "stopped_reason": "EVDisconnected"},
                meter_value=final,
            )
        )
        await executor.outbox.flush(5)
    started, ended = events(transport)
    assert (started.meter_start_kwh, ended.meter_stop_kwh, ended.energy_kwh) == (2.0, 5.5, 3.5)
    assert (ended.reason, ended.ended_at, ended.binding) == ("EVDisconnected", at(600), None)


async def test_readings_are_timed_by_the_executor_and_keep_the_chargers_time_apart(
    charge_point, transport, executor, clock
):
    async with charge_point() as cp:
        tx = await cp.start_tx(when=T0)
        clock.current = T0 + timedelta(seconds=30)
        # the charger's clock is 10 minutes behind
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[power(7.0, at(-570))]))
        await executor.outbox.flush(5)
    session = decode(SESSIONS, None, transport.log(SESSIONS)[-1].value)
    assert (session.sampled_at, session.charger_sampled_at) == (at(30), at(-570))


async def test_a_transaction_whose_stop_was_lost_is_recorded_as_ended_at_its_last_reading(
    charge_point, transport, executor
):
    async with charge_point() as cp:
        first = await cp.start_tx(connector_id=1, when=T0)
        await cp.call(call.MeterValues(connector_id=1, transaction_id=first, meter_value=[power(7.0, at(300))]))
        await cp.start_tx(connector_id=1, when=at(900))  # no StopTransaction for the first
        await executor.outbox.flush(5)
    kinds = [(e.session_id, e.event_type) for e in events(transport)]
    assert kinds == [(f"CP1-{first}", "started"), (f"CP1-{first}", "ended"), (kinds[2][0], "started")]
    ended = events(transport)[1]
    assert (ended.ended_at, ended.reason, ended.peak_power_kw) == (at(300), None, 7.0)
