"""Charger security: HTTP Basic auth per charger (security profile 1), subprotocols, and the status and metrics
endpoints kept off the OCPP port (TLS, profiles 2 and 3: test_executor_tls)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from executor import ExecutorConfig
from executor.ocpp.auth import Authenticator, hash_password, parse_basic_auth, parse_password_hash, verify_password
from pipeline.contracts.clock import SystemClock
from pipeline.sim import SimulatedChargePoint, SimulatedChargingStation
from tests.kits.ocpp import open_charge_point, wait_for
from tests.kits.ocpp201 import open_station

PASSWORDS = {"CP1": "correct horse battery", "CP2": "0123456789abcdef:colon"}
CREDENTIALS = {cp: hash_password(pw, ln=10) for cp, pw in PASSWORDS.items()}  # cheap cost for tests
SUBPROTOCOLS = ["ocpp1.6", "ocpp2.0.1"]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def status_of(
    port: int,
    cp: str,
    headers: dict[str, str] | None,
    subprotocol: str = "ocpp1.6",
    scheme: str = "ws",
    ssl_context=None,
) -> int:
    """The HTTP status of an upgrade attempt (101 when it was upgraded)."""
    kwargs = {"ssl": ssl_context} if ssl_context else {}
    try:
        async with connect(
            f"{scheme}://127.0.0.1:{port}/ocpp/{cp}",
            subprotocols=[subprotocol],
            additional_headers=headers or {},
            **kwargs,
        ):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.fixture
async def secured(make_executor):
    return await make_executor(credentials=CREDENTIALS)


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
@pytest.mark.parametrize(
    ("cp", "headers", "status"),
    [
        ("CP1", basic("CP1", PASSWORDS["CP1"]), 101),
        ("CP2", basic("CP2", PASSWORDS["CP2"]), 101),  # a colon in the password
        ("CP1", basic("CP1", "wrong password"), 401),
        ("CP1", basic("CP2", PASSWORDS["CP2"]), 401),  # a valid pair, but not the identity in the URL
        ("CP9", basic("CP9", "anything at all"), 401),  # unknown identity
        ("CP1", None, 401),
        ("CP1", {"Authorization": "Bearer abc"}, 401),
        ("CP1", {"Authorization": "Basic !!notbase64"}, 401),
    ],
)
async def test_basic_auth_before_the_upgrade(secured, subprotocol, cp, headers, status):
    assert await status_of(secured.port, cp, headers, subprotocol) == status
    if status == 401:
        assert secured.stats.connected == 0


async def test_401_carries_a_basic_challenge(secured):
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{secured.port}/ocpp/CP1", subprotocols=["ocpp1.6"]):
            pass
    assert info.value.response.headers["WWW-Authenticate"] == 'Basic realm="ocpp", charset="UTF-8"'
    assert secured.registry.get_sample_value("ocpp_connections_refused_total", {"reason": "unauthorized"}) == 1


@pytest.mark.parametrize("offered", [None, ["ocpp1.5"], ["ocpp2.1"]])
async def test_authenticated_client_without_a_supported_subprotocol_is_upgraded_then_closed(secured, offered):
    async with connect(
        f"ws://127.0.0.1:{secured.port}/ocpp/CP1",
        subprotocols=offered,
        additional_headers=basic("CP1", PASSWORDS["CP1"]),
    ) as ws:
        assert ws.subprotocol is None and "Sec-WebSocket-Protocol" not in ws.response.headers
        await ws.wait_closed()
        assert ws.close_code == 1002
    assert await status_of(secured.port, "CP1", None, "ocpp1.5") == 401  # credentials are checked first


async def test_a_failed_login_does_not_displace_the_live_connection_but_a_good_one_does(secured):
    good = basic("CP1", PASSWORDS["CP1"])
    async with open_charge_point(secured.port, "CP1", additional_headers=good) as first:
        await first.boot()
        assert await status_of(secured.port, "CP1", basic("CP1", "guess")) == 401
        assert first._connection.close_code is None
        async with open_charge_point(secured.port, "CP1", additional_headers=good) as second:
            await wait_for(lambda: first._connection.close_code == 1000, what="old connection replaced")
            assert (await second.boot()).status == "Accepted"
            assert secured.stats.connected == 1


@pytest.mark.parametrize("cls", [SimulatedChargePoint, SimulatedChargingStation])
async def test_simulated_chargers_log_in_with_their_password(secured, cls):
    cp = cls("CP1", f"ws://127.0.0.1:{secured.port}/ocpp", SystemClock(), password=PASSWORDS["CP1"])
    await cp.start()
    await cp.stop()
    bad = cls("CP1", f"ws://127.0.0.1:{secured.port}/ocpp", SystemClock(), password="nope")
    with pytest.raises(InvalidStatus):
        await bad.start()


def test_only_both_tls_files_turn_tls_on(transport):
    with pytest.raises(ValueError, match="both"):
        ExecutorConfig(tls_certfile="cert.pem")


def test_password_hash_format_and_verification():
    encoded = hash_password("s3cret", ln=10, salt=b"0123456789abcdef")
    assert encoded == hash_password("s3cret", ln=10, salt=b"0123456789abcdef")
    assert encoded.startswith("$scrypt$ln=10,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$")
    assert verify_password("s3cret", encoded) and not verify_password("s3cret ", encoded)
    assert parse_password_hash(hash_password("x")).n == 2**14
    for bad in ("s3cret", "$scrypt$ln=99,r=8,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "$pbkdf2$x$y$z"):
        with pytest.raises(ValueError):
            parse_password_hash(bad)
    assert parse_basic_auth("Basic " + base64.b64encode(b"CP1:a:b").decode()) == ("CP1", "a:b")
    assert parse_basic_auth("Basic " + base64.b64encode(b"no colon").decode()) is None


async def test_authenticator_remembers_a_good_login_without_storing_the_password():
    auth = Authenticator(CREDENTIALS)
    header = basic("CP1", PASSWORDS["CP1"])["Authorization"]
    assert await auth.check("CP1", header) is None
    assert PASSWORDS["CP1"].encode() not in b"".join(auth._memo.values())
    assert await auth.check("CP1", header) is None
    assert await auth.check("CP1", basic("CP1", "other")["Authorization"]) == "wrong password"
    assert await auth.check("CP7", header) == "unknown identity"


async def test_pipeline_run_enforces_the_passwords_its_config_declares():
    from pipeline.app.loop import start_loop
    from pipeline.app.site import parse_config
    from pipeline.engine.config import EngineConfig
    from pipeline.transport.memory import MemoryTransport

    cfg = parse_config(
        {
            "sites": [
                {
                    "site_id": "s",
                    "limit_kw": 50,
                    "chargers": [
                        {"id": "CP1", "max_power_kw": 11, "password_hash": CREDENTIALS["CP1"]},
                        {"id": "CP3", "max_power_kw": 11},
                    ],
                }
            ]
        }
    )
    service = await start_loop(
        MemoryTransport(), site=cfg, engine=EngineConfig(), executor=ExecutorConfig(port=0, metrics=False)
    )
    try:
        port = service.port
        assert await status_of(port, "CP1", basic("CP1", PASSWORDS["CP1"])) == 101
        assert await status_of(port, "CP1", None) == 401
        assert await status_of(port, "CP3", basic("CP3", "any")) == 401  # declared no password: cannot connect
    finally:
        await service.stop()


def test_charger_password_command_prints_a_hash():
    from pipeline.cli.main import main

    result = CliRunner().invoke(main, ["charger-password", "--password-stdin"], input="my charger secret\n")
    assert result.exit_code == 0, result.output
    assert verify_password("my charger secret", result.output.strip())
    empty = CliRunner().invoke(main, ["charger-password", "--password-stdin"], input="\n")
    assert empty.exit_code == 1 and "empty" in empty.output


async def get(port: int, path: str) -> tuple[int, str, str]:
    """``(status, content type, body)`` of a plain HTTP GET on loopback."""
    try:
        response = await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}{path}", timeout=5)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()
    return response.status, response.headers["Content-Type"], response.read().decode()


async def test_prometheus_metrics_on_the_http_port(make_executor):
    executor = await make_executor(http_port=0)
    async with open_station(executor.port) as cs:
        await cs.boot()
        await wait_for(lambda: executor.stats.failsafe_activations, what="fail-safe installed")
        status, content_type, body = await get(executor.http_port, "/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=")
    for name in (
        "ocpp_connected_chargers 1.0",
        'ocpp_calls_total{action="SetChargingProfile",result="Accepted"}',
        "executor_setpoint_updates_collapsed_total",
        "executor_dispatch_latency_seconds_bucket",
        "ocpp_calls_in_flight",
        'executor_failsafe_activations_total{reason="boot"} 1.0',
        "executor_increases_held_back",
    ):
        assert name in body


async def test_status_and_metrics_are_on_their_own_loopback_port_not_the_ocpp_port(make_executor):
    executor = await make_executor(credentials=CREDENTIALS, http_port=0)
    assert executor.http_url == f"http://127.0.0.1:{executor.http_port}" and executor.http_port != executor.port
    async with open_charge_point(executor.port, "CP1", additional_headers=basic("CP1", PASSWORDS["CP1"])) as cp:
        await cp.boot()
        status, content_type, body = await get(executor.http_port, "/status")
        assert (status, content_type) == (200, "application/json")
        assert [c["charge_point_id"] for c in json.loads(body)["chargers"]] == ["CP1"]
        for path in ("/status", "/metrics"):  # the charger list is not on the chargers' port
            assert (await get(executor.port, path))[0] == 404
        assert await get(executor.port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        assert await get(executor.http_port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        assert (await get(executor.http_port, "/ocpp/CP1"))[0] == 404


async def test_no_http_port_serves_no_status(make_executor):
    executor = await make_executor()
    assert executor.http_port is None and executor.http_url is None
    assert (await get(executor.port, "/status"))[0] == 404
