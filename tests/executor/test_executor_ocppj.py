"""OCPP-J exactly as specified, both versions, over real websockets: the exact frames the executor sends.

Sources: OCPP-J 1.6 sections 3.2 (server response), 4.1.3 (message types) and 4.2.3 (CallError, table 7);
OCPP 2.0.1 Part 4 sections 3.2, 4.2.3, 4.3 (RPC framework error codes) and 4.4 (unknown message types);
OCPP 1.6 sections 4.3 / 6.17-6.18 and OCPP 2.0.1 P01 (DataTransfer).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from ocpp.v16 import call
from ocpp.v201 import call as call201
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.kits.ocpp import open_charge_point, wait_for
from tests.kits.ocpp201 import open_station

NOT_KNOWN = "Requested Action is not known by receiver"
NOT_SUPPORTED = "Requested Action is recognized but not supported by the receiver"
VERSIONS = ["1.6", "2.0.1"]


def opener(version: str):
    return open_charge_point if version == "1.6" else open_station


async def heartbeat(cp, version: str):
    return await cp.call(call.Heartbeat() if version == "1.6" else call201.Heartbeat())


def answers_to(cp, message_id: str) -> list[list]:
    """Every CALLRESULT or CALLERROR the charger received for ``message_id``."""
    return [f for f in cp.frames if isinstance(f, list) and f[:1] in ([3], [4]) and f[1:2] == [message_id]]


async def send_and_wait(cp, frame: str, message_id: str) -> list:
    await cp._connection.send(frame)
    return (await wait_for(lambda: answers_to(cp, message_id), what=f"the answer to {message_id}"))[0]


# -- actions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_an_unknown_action_is_not_implemented(executor, version):
    async with opener(version)(executor.port) as cp:
        answer = await send_and_wait(cp, '[2, "u-1", "NoSuchAction", {}]', "u-1")
        assert answer == [
            4,
            "u-1",
            "NotImplemented",
            NOT_KNOWN,
            {"cause": f"NoSuchAction is not an OCPP {version} action"},
        ]
        assert (await heartbeat(cp, version)).current_time


@pytest.mark.parametrize(
    ("version", "action", "payload"),
    [
        ("1.6", "DiagnosticsStatusNotification", {"status": "Idle"}),
        ("1.6", "Reset", {"type": "Soft"}),  # a central-system-to-charger action sent the wrong way
        ("2.0.1", "FirmwareStatusNotification", {"status": "Idle"}),
        ("2.0.1", "Reset", {"type": "Immediate"}),
    ],
)
async def test_a_known_action_we_do_not_serve_is_not_supported(executor, version, action, payload):
    async with opener(version)(executor.port) as cp:
        answer = await send_and_wait(cp, json.dumps([2, "s-1", action, payload]), "s-1")
        assert answer == [
            4,
            "s-1",
            "NotSupported",
            NOT_SUPPORTED,
            {"cause": f"{action} is not served by this central system"},
        ]
        assert (await heartbeat(cp, version)).current_time


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "payload",
    [
        {"vendorId": "com.example.unknown", "messageId": "SetTariff", "data": '{"eur": 0.3}'},
        {"vendorId": "com.example.unknown"},
    ],
)
async def test_data_transfer_with_an_unknown_vendor_gets_unknown_vendor_id(executor, version, payload):
    async with opener(version)(executor.port) as cp:
        answer = await send_and_wait(cp, json.dumps([2, "dt-1", "DataTransfer", payload]), "dt-1")
        assert answer == [3, "dt-1", {"status": "UnknownVendorId"}]


# -- message types ------------------------------------------------------------------------------------


async def test_1_6_ignores_a_message_type_it_does_not_know(executor):
    async with open_charge_point(executor.port) as cp:
        for frame in ('[5, "m-5", "Heartbeat", {}]', '[9, "m-9", "Heartbeat", {}]', "[0]", '[1, "m-1"]'):
            await cp._connection.send(frame)
        assert (await cp.call(call.Heartbeat())).current_time  # answers come in order: nothing came before
        assert [f[0] for f in cp.frames] == [3]
        assert cp._connection.close_code is None


async def test_2_0_1_answers_an_unknown_message_type_with_message_type_not_supported(executor):
    async with open_station(executor.port) as cs:
        answer = await send_and_wait(cs, '[9, "m-9", "Heartbeat", {}]', "m-9")
        assert answer == [
            4,
            "m-9",
            "MessageTypeNotSupported",
            "A message with a Message Type Number received that is not supported by this implementation.",
            {"cause": "message type 9 is not 2, 3 or 4"},
        ]
        assert (await cs.call(call201.Heartbeat())).current_time


# -- malformed frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "message_id", "code_16", "code_201"),
    [
        ('[2, "a-1", ["not", "an", "action"], {}]', "a-1", "FormationViolation", "RpcFrameworkError"),
        ('[2, "a-2", "Heartbeat"]', "a-2", "FormationViolation", "RpcFrameworkError"),
        ('[2, "a-3", "Heartbeat", {}, "extra"]', "a-3", "FormationViolation", "RpcFrameworkError"),
        ('[2, 7, "Heartbeat", {}]', "-1", "FormationViolation", "RpcFrameworkError"),  # messageId not a string
        (
            '[2, "a-5", "BootNotification", "not an object"]',
            "a-5",
            "TypeConstraintViolation",
            "TypeConstraintViolation",
        ),
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
async def test_a_malformed_call_gets_the_callerror_the_spec_names_and_the_connection_stays_up(
    executor, version, frame, message_id, code_16, code_201
):
    async with opener(version)(executor.port) as cp:
        await cp._connection.send(frame)
        errors = await wait_for(lambda: [f for f in cp.frames if f[:1] == [4]], what="CALLERROR")
        assert errors[0][:3] == [4, message_id, code_16 if version == "1.6" else code_201]
        assert isinstance(errors[0][3], str) and isinstance(errors[0][4], dict)
        assert (await heartbeat(cp, version)).current_time
        assert cp._connection.close_code is None


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_malformed_or_stray_answer_is_dropped_without_a_callerror(executor, version):
    async with opener(version)(executor.port) as cp:
        for frame in (
            '[3, "r-1"]',
            '[3, "r-2", {}, "extra"]',
            '[4, "r-3", "GenericError"]',
            "[3, 5, {}]",
            '[3, "r-4", {}]',
        ):
            await cp._connection.send(frame)
        assert (await heartbeat(cp, version)).current_time
        assert [f[0] for f in cp.frames] == [3]


# -- the handshake ------------------------------------------------------------------------------------


@pytest.mark.parametrize("offered", [None, ["ocpp1.5"], ["ocpp2.0"], ["ocpp2.1", "ocpp1.2"]])
async def test_no_common_subprotocol_completes_the_handshake_without_one_then_closes(executor, offered):
    async with open_charge_point(executor.port, "CP1") as live:
        await live.boot()
        async with connect(f"ws://127.0.0.1:{executor.port}/ocpp/CP1", subprotocols=offered) as ws:
            assert ws.response.status_code == 101
            assert "Sec-WebSocket-Protocol" not in ws.response.headers
            assert ws.subprotocol is None
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1002
        assert live._connection.close_code is None  # the charger's live connection is not displaced
        assert list(executor.stations) == ["CP1"]
        assert (await live.call(call.Heartbeat())).current_time
    assert executor.registry.get_sample_value("ocpp_connections_refused_total", {"reason": "subprotocol"}) == 1
