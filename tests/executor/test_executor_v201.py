"""The OCPP 2.0.1 surface: answers, sessions from TransactionEvent, exact profile frames, bad input."""

from __future__ import annotations

import json

import pytest
from ocpp.v201 import call

from pipeline.contracts.topics import decode
from pipeline.transport import publish
from tests.kits.ocpp import at, command, iso, wait_for
from tests.kits.ocpp201 import open_station

COMMANDS, ACKS, SESSIONS = "ocpp.setpoint.commands", "ocpp.setpoint.acks", "ocpp.active.sessions"


def tx_profile(tx: str, limit: float, unit: str = "A", evse: int = 1) -> dict:
    """The exact SetChargingProfileRequest the executor sends for a setpoint (K01)."""
    return {
        "evseId": evse,
        "chargingProfile": {
            "id": 1000 + evse,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": [
                {
                    "id": 1000 + evse,
                    "chargingRateUnit": unit,
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": 3}],
                }
            ],
            "transactionId": tx,
        },
    }


def acks(transport, purpose="Tx"):
    return [a for a in (decode(ACKS, r.key, r.value) for r in transport.log(ACKS)) if purpose in (None, a.purpose)]


def call_errors(cs) -> list[list]:
    return [f for f in cs.frames if isinstance(f, list) and f[:1] == [4]]


async def test_boot_heartbeat_status_are_answered(executor):
    async with open_station(executor.port) as cs:
        boot = await cs.boot()
        assert (boot.status, boot.interval, boot.current_time) == ("Accepted", 300, "2025-01-06T08:00:00.000Z")
        assert (await cs.call(call.Heartbeat())).current_time == "2025-01-06T08:00:00.000Z"
        await cs.call(
            call.StatusNotification(timestamp=iso(at(0)), connector_status="Available", evse_id=1, connector_id=1)
        )
        auth = await cs.call(call.Authorize(id_token={"id_token": "TAG1", "type": "ISO14443"}))
        assert auth.id_token_info["status"] == "Accepted"
        assert executor.stats.connected == 1


async def test_transaction_events_publish_the_same_session_records(executor, transport):
    async with open_station(executor.port) as cs:
        begin = [
            {
                "timestamp": iso(at(0)),
                "sampledValue": [
                    {"value": 1.0, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "kWh"}}
                ],
            }
        ]
        await cs.tx_event("Started", "tx-9", evse=2, meter=begin)
        await cs.tx_event(
            "Updated",
            "tx-9",
            evse=None,
            trigger="MeterValuePeriodic",
            meter=[
                {
                    "timestamp": iso(at(60)),
                    "sampledValue": [
                        {
                            "value": 7.4,
                            "measurand": "Power.Active.Import",
                            "unitOfMeasure": {"unit": "W", "multiplier": 3},
                        },
                        {"value": 1500, "measurand": "Energy.Active.Import.Register"},
                        {"value": 42, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}, "location": "EV"},
                    ],
                }
            ],
        )
        await cs.tx_event("Ended", "tx-9", evse=None, when=at(120), trigger="EVDeparted")
    assert await executor.outbox.flush(5.0)
    records = transport.log(SESSIONS)
    # Started publishes the session and then folds in its Transaction.Begin reading in the same handler:
    # the outbox keeps the newest record of a key, so one record carries both.
    assert [r.key for r in records] == ["CP1-tx-9"] * 3
    begin, update = (json.loads(r.value) for r in records[:2])
    assert (begin["connector_id"], begin["transaction_id"]) == (2, "tx-9")
    assert begin["energy_kwh"] == 0.0  # the Transaction.Begin reading is the meter start
    assert (update["current_power_kw"], update["energy_kwh"], update["soc_pct"]) == (7.4, 0.5, 42.0)
    assert records[2].value is None


async def test_setpoint_becomes_exact_tx_profile_with_evse_and_transaction(executor, transport):
    async with open_station(executor.port) as cs:
        tx = await cs.start_tx("tx-1")
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.04))
        await wait_for(lambda: cs.tx_profiles, what="TxProfile")
        assert cs.tx_profiles == [tx_profile("tx-1", 16.0)]
        [ack] = await wait_for(lambda: acks(transport), what="ack")
        assert (ack.session_id, ack.limit, ack.status) == ("CP1-tx-1", 16.0, "Accepted")
        assert executor.held_setpoints() == {("CP1", 1): 16.0}


async def test_fail_safe_profiles_are_exact(executor, transport):
    async with open_station(executor.port) as cs:
        await cs.boot()
        await wait_for(
            lambda: len(cs.of("ChargingStationMaxProfile")) == 2 and cs.of("TxDefaultProfile"),
            what="fail-safe profiles",
        )
        safe, lift = cs.of("ChargingStationMaxProfile")
        # CP1: 22 kW, 3 x 230 V, alone on panel-a (60 kW) under depot-1 (100 kW, with CP2 at 11 kW):
        # safe share = min(22, 60 x 22/22, 100 x 22/33) = 22 kW = 31.8 A.
        assert safe == {
            "evseId": 0,
            "chargingProfile": {
                "id": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "ChargingStationMaxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": [
                    {
                        "id": 1,
                        "startSchedule": "2025-01-05T08:00:00.000Z",
                        "chargingRateUnit": "A",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 31.8, "numberPhases": 3}],
                    }
                ],
            },
        }
        assert cs.of("TxDefaultProfile") == [
            {
                "evseId": 0,
                "chargingProfile": {
                    "id": 3,
                    "stackLevel": 0,
                    "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Relative",
                    "chargingSchedule": [
                        {
                            "id": 3,
                            "chargingRateUnit": "A",
                            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0, "numberPhases": 3}],
                        }
                    ],
                },
            }
        ]
        assert (lift["chargingProfile"]["stackLevel"], lift["chargingProfile"]["validTo"]) == (
            1,
            "2025-01-06T08:30:00.000Z",
        )
        await wait_for(lambda: len(acks(transport, None)) == 3, what="three acks")
        assert executor.stats.failsafe_activations == {"boot": 1}
        assert [a.purpose for a in acks(transport, None)] == ["StationMax", "TxDefault", "StationMaxLift"]


async def test_rate_unit_follows_the_device_model(executor, transport):
    async with open_station(executor.port) as cs:
        cs.rate_unit = "W"
        tx = await cs.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=10.0))  # 6.9 kW
        await wait_for(lambda: cs.tx_profiles, what="TxProfile")
        assert cs.tx_profiles == [tx_profile(tx, 6900.0, unit="W")]
        get = next(f for f in cs.frames if f[:1] == [2] and f[2] == "GetVariables")
        assert get[3] == {
            "getVariableData": [
                {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "RateUnit"}},
                {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "PeriodsPerSchedule"}},
            ]
        }


async def test_tombstone_of_a_running_transaction_clears_its_tx_profile(executor, transport):
    async with open_station(executor.port) as cs:
        tx = await cs.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=12.0))
        await wait_for(lambda: cs.tx_profiles, what="TxProfile")
        await transport.send(COMMANDS, f"CP1-{tx}", None)
        await wait_for(lambda: cs.clears, what="ClearChargingProfile")
        assert cs.clears == [{"chargingProfileId": 1001}]
        assert executor.held_setpoints() == {}


async def test_rejected_profile_is_retried_and_reported(executor, transport):
    async with open_station(executor.port) as cs:
        tx = await cs.start_tx()
        cs.statuses = ["Rejected", "raise"]
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=11.0))
        await wait_for(lambda: len(acks(transport)) == 3, what="three acks")
        assert [a.status for a in acks(transport)] == ["Rejected", "CallError", "Accepted"]
        assert acks(transport)[1].error.startswith("InternalError")
        assert cs.tx_profiles == [tx_profile(tx, 11.0)] * 3


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (
            {"eventType": "Started", "timestamp": "2025-01-06T08:00:00Z", "triggerReason": "Authorized", "seqNo": 0},
            "OccurrenceConstraintViolation",
        ),  # transactionInfo missing
        (
            {
                "eventType": "Begun",
                "timestamp": "2025-01-06T08:00:00Z",
                "triggerReason": "Authorized",
                "seqNo": 0,
                "transactionInfo": {"transactionId": "t"},
            },
            "PropertyConstraintViolation",
        ),
        (
            {
                "eventType": "Started",
                "timestamp": "2025-01-06T08:00:00Z",
                "triggerReason": "Authorized",
                "seqNo": "0",
                "transactionInfo": {"transactionId": "t"},
            },
            "TypeConstraintViolation",
        ),
        (
            {
                "eventType": "Started",
                "timestamp": "2025-01-06T08:00:00Z",
                "triggerReason": "Authorized",
                "seqNo": 0,
                "transactionInfo": {"transactionId": "t"},
                "colour": "red",
            },
            "FormatViolation",
        ),
        (
            {
                "eventType": "Started",
                "timestamp": "2025-01-06T08:00:00Z",
                "triggerReason": "Authorized",
                "seqNo": 0,
                "transactionInfo": {"transactionId": "t"},
            },
            "OccurrenceConstraintViolation",
        ),  # no evse to start on
    ],
)
async def test_schema_invalid_payload_gets_callerror_and_connection_stays_up(executor, transport, payload, code):
    async with open_station(executor.port) as cs:
        await cs._connection.send(json.dumps([2, "te-1", "TransactionEvent", payload]))
        error = (await wait_for(lambda: call_errors(cs), what="CALLERROR"))[0]
        assert error[:3] == [4, "te-1", code]
        assert (await cs.boot()).status == "Accepted"
    assert transport.log(SESSIONS) == []


@pytest.mark.parametrize(
    ("frame", "message_id", "code"),
    [
        ("not json", "-1", "RpcFrameworkError"),
        ('{"not": "an array"}', "-1", "RpcFrameworkError"),
        ('[9, "m-8", "Heartbeat", {}]', "m-8", "MessageTypeNotSupported"),
    ],
)
async def test_unparseable_frames_get_rpc_errors(executor, frame, message_id, code):
    async with open_station(executor.port) as cs:
        await cs._connection.send(frame)
        error = (await wait_for(lambda: call_errors(cs), what="CALLERROR"))[0]
        assert error[:3] == [4, message_id, code]
        assert (await cs.call(call.Heartbeat())).current_time
