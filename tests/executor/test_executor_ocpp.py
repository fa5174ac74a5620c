"""The OCPP 1.6J surface: answers, bad frames, paths, subprotocols, one connection per charger."""

from __future__ import annotations

import asyncio
import json

import pytest
from ocpp.v16 import call
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.kits.ocpp import wait_for


def call_errors(cp) -> list[list]:
    return [f for f in cp.frames if isinstance(f, list) and f[:1] == [4]]


async def test_boot_and_heartbeat_are_answered(charge_point, executor):
    async with charge_point() as cp:
        boot = await cp.boot()
        assert (boot.status, boot.interval, boot.current_time) == ("Accepted", 300, "2025-01-06T08:00:00.000Z")
        heartbeat = await cp.call(call.Heartbeat())
        assert heartbeat.current_time == "2025-01-06T08:00:00.000Z"
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        auth = await cp.call(call.Authorize(id_tag="TAG1"))
        assert auth.id_tag_info["status"] == "Accepted"
        assert executor.stats.connected == 1


@pytest.mark.parametrize(
    ("frame", "message_id"),
    [
        ("this is not json", "-1"),
        ('{"not": "an array"}', "-1"),
        ("[2]", "-1"),
        ('[2, "m-7"]', "m-7"),
        ("[" * 50_000 + "]" * 50_000, "-1"),  # too deep for the JSON parser
    ],
)
async def test_unparseable_frame_gets_formation_violation_and_stays_up(charge_point, frame, message_id):
    async with charge_point() as cp:
        await cp._connection.send(frame)
        error = (await wait_for(lambda: call_errors(cp), what="CALLERROR"))[0]
        assert error[:3] == [4, message_id, "FormationViolation"]
        heartbeat = await cp.call(call.Heartbeat())
        assert heartbeat.current_time


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"chargePointVendor": "X"}, "ProtocolError"),  # required chargePointModel missing
        ({"chargePointVendor": "X", "chargePointModel": "Y", "colour": "red"}, "FormationViolation"),
        ({"chargePointVendor": 5, "chargePointModel": "Y"}, "TypeConstraintViolation"),
        ("not an object", "TypeConstraintViolation"),
    ],
)
async def test_schema_invalid_boot_gets_callerror_and_connection_stays_up(charge_point, payload, code):
    async with charge_point() as cp:
        await cp._connection.send(json.dumps([2, "boot-1", "BootNotification", payload]))
        error = (await wait_for(lambda: call_errors(cp), what="CALLERROR"))[0]
        assert error[:3] == [4, "boot-1", code]
        boot = await cp.boot()
        assert boot.status == "Accepted"


async def test_odd_calls_do_not_break_the_connection(charge_point):
    async with charge_point() as cp:
        await cp._connection.send('[2, "u-1", ["not", "an", "action"], {}]')
        await cp._connection.send('[2, "u-2", "NoSuchAction", {}]')
        await cp._connection.send(
            '[2, "u-3", "StartTransaction", {"connectorId": 1, "idTag": "T", '
            '"meterStart": 0, "timestamp": "yesterday"}]'
        )
        errors = await wait_for(lambda: len(call_errors(cp)) == 3 and call_errors(cp), what="3 CALLERRORs")
        assert [e[:3] for e in errors] == [
            [4, "u-1", "FormationViolation"],  # the action is not a string
            [4, "u-2", "NotImplemented"],  # OCPP-J 1.6 table 7: not known by the receiver
            [4, "u-3", "PropertyConstraintViolation"],
        ]
        assert (await cp.call(call.Heartbeat())).current_time


@pytest.mark.parametrize("path", ["/", "/ocpp", "/ocpp/", "/other/CP1", "/ocpp/CP1/extra"])
async def test_wrong_path_gets_404(executor, path):
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{executor.port}{path}", subprotocols=["ocpp1.6"]):
            pass
    assert info.value.response.status_code == 404


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["ocpp1.5", "ocpp1.6"], "ocpp1.6"),
        (["ocpp2.0.1"], "ocpp2.0.1"),
        (["ocpp2.1", "ocpp2.0.1", "ocpp1.6"], "ocpp2.0.1"),
    ],
)
async def test_a_supported_version_is_negotiated_among_offered_subprotocols(executor, offered, chosen):
    async with connect(f"ws://127.0.0.1:{executor.port}/ocpp/CP1", subprotocols=offered) as ws:
        assert ws.subprotocol == chosen


async def test_percent_encoded_identity(charge_point, executor):
    async with charge_point("CP%201") as cp:
        await cp.boot()
        assert list(executor.stations) == ["CP 1"]


async def test_second_connection_replaces_the_first(charge_point, executor):
    async with charge_point("CP1") as first:
        await first.boot()
        async with charge_point("CP1") as second:
            await wait_for(lambda: first._connection.close_code is not None, what="old connection closed")
            assert first._connection.close_code == 1000
            assert (await second.call(call.Heartbeat())).current_time
            assert executor.stats.connected == 1
            assert executor.stations["CP1"] is not None
        await wait_for(lambda: executor.stats.connected == 0, what="disconnect counted")


async def test_stop_closes_connections_with_1001_and_is_idempotent(charge_point, executor):
    async with charge_point("CP1") as cp:
        await cp.boot()
        await executor.stop()
        assert cp._connection.close_code == 1001
        with pytest.raises(ConnectionClosed):
            await cp._connection.send('[2, "x", "Heartbeat", {}]')
            await asyncio.wait_for(cp._connection.recv(), 1)
        await executor.stop()
