"""TLS on the OCPP port with real certificates: security profile 2 (TLS + Basic auth) and profile 3 (TLS
with client certificates), TLS 1.2 as the floor and the cipher suites OCPP requires.

Sources: OCPP 2.0.1 Part 2 A00.FR.313/416 (TLS 1.2 or above), A00.FR.318/421 (cipher suites),
A00.FR.405 (the certificate's commonName is the charger's), A00.FR.407 (an invalid certificate or path
terminates the connection); OCPP 1.6 Security Whitepaper, the same rules for Charge Points.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import warnings

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from executor import ExecutorConfig
from executor.ocpp.auth import hash_password
from pipeline.contracts.clock import SystemClock
from pipeline.contracts.errors import ConfigError
from pipeline.sim import SimulatedChargingStation
from tests.kits.tls import Pki, make_pki

PASSWORD = "correct horse battery"
CREDENTIALS = {"CP1": hash_password(PASSWORD, ln=10)}
REFUSED = "refused"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def handshake(
    port: int, cp: str, context: ssl.SSLContext, headers: dict[str, str] | None = None, subprotocol: str = "ocpp2.0.1"
):
    """101 and the answer to a Heartbeat when upgraded; the HTTP status when refused at the upgrade;
    ``"refused"`` when the TLS handshake failed (the server never read the HTTP request)."""
    try:
        async with connect(
            f"wss://127.0.0.1:{port}/ocpp/{cp}",
            subprotocols=[subprotocol],
            ssl=context,
            additional_headers=headers or {},
            open_timeout=5,
        ) as ws:
            await ws.send('[2, "hb-1", "Heartbeat", {}]')
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            return 101, answer[:2]
    except InvalidStatus as exc:
        return exc.response.status_code, None
    except (TimeoutError, ssl.SSLError, OSError, InvalidHandshake, ConnectionClosed, EOFError):
        return REFUSED, None


@pytest.fixture
async def profile3(make_executor, pki):
    return await make_executor(tls_certfile=pki.server_cert, tls_keyfile=pki.server_key, tls_client_cafile=pki.ca)


async def test_tls_with_basic_auth_is_security_profile_2(make_executor, pki):
    executor = await make_executor(credentials=CREDENTIALS, tls_certfile=pki.server_cert, tls_keyfile=pki.server_key)
    assert executor.url.startswith("wss://")
    client = pki.client_context()
    assert await handshake(executor.port, "CP1", client, basic("CP1", PASSWORD)) == (101, [3, "hb-1"])
    assert await handshake(executor.port, "CP1", client, basic("CP1", PASSWORD), "ocpp1.6") == (101, [3, "hb-1"])
    assert await handshake(executor.port, "CP1", client, basic("CP1", "x")) == (401, None)
    assert await handshake(executor.port, "CP1", client) == (401, None)
    cs = SimulatedChargingStation("CP1", executor.url, SystemClock(), password=PASSWORD, ssl=client)
    await cs.start()
    await cs.stop()
    with pytest.raises(Exception):  # noqa: B017 - no plain websocket on a TLS port: whatever the client says
        async with connect(
            f"ws://127.0.0.1:{executor.port}/ocpp/CP1",
            subprotocols=["ocpp1.6"],
            additional_headers=basic("CP1", PASSWORD),
            open_timeout=2,
        ):
            pass


async def test_a_client_that_does_not_trust_the_server_certificate_does_not_connect(make_executor, pki):
    executor = await make_executor(tls_certfile=pki.server_cert, tls_keyfile=pki.server_key)
    stranger = ssl.create_default_context()  # the system's CAs, not ours
    assert await handshake(executor.port, "CP1", stranger) == (REFUSED, None)


async def test_profile_3_accepts_a_certificate_from_the_ca_naming_the_charger(profile3, pki):
    good = pki.client_context(pki.client("cp1", "CP1"))
    for subprotocol in ("ocpp2.0.1", "ocpp1.6"):
        assert await handshake(profile3.port, "CP1", good, subprotocol=subprotocol) == (101, [3, "hb-1"])


@pytest.mark.parametrize("certificate", ["none", "rogue CA", "self-signed", "expired"])
async def test_profile_3_refuses_a_bad_certificate_in_the_tls_handshake(profile3, pki, certificate):
    cert_key = {
        "none": lambda: None,
        "rogue CA": lambda: pki.client("rogue", "CP1", issuer="rogue"),
        "self-signed": lambda: pki.client("self-signed", "CP1", issuer="self"),
        "expired": lambda: pki.client("expired", "CP1", expired=True),
    }[certificate]()
    assert await handshake(profile3.port, "CP1", pki.client_context(cert_key)) == (REFUSED, None)
    assert profile3.stats.connected == 0


async def test_profile_3_refuses_a_good_certificate_for_another_charger_with_403(profile3, pki):
    other = pki.client_context(pki.client("cp2", "CP2"))
    assert await handshake(profile3.port, "CP1", other) == (403, None)
    assert await handshake(profile3.port, "CP2", other) == (101, [3, "hb-1"])
    assert profile3.registry.get_sample_value("ocpp_connections_refused_total", {"reason": "certificate"}) == 1


def _legacy_client(pki: Pki, cert_key) -> ssl.SSLContext:
    """A client that speaks only TLS 1.0/1.1 (and would accept the weak ciphers they need)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = pki.client_context(cert_key)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


async def _legacy_server_accepts(pki: Pki, client: ssl.SSLContext) -> bool:
    """Whether this machine's OpenSSL can do TLS 1.1 at all (so a refusal below is the executor's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1], ssl=client)
        writer.close()
        return True
    except (ssl.SSLError, OSError):
        return False
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("profile", [2, 3])
async def test_tls_below_1_2_is_refused(make_executor, pki, profile):
    cert_key = pki.client("legacy", "CP1") if profile == 3 else None
    executor = await make_executor(
        tls_certfile=pki.server_cert, tls_keyfile=pki.server_key, tls_client_cafile=pki.ca if profile == 3 else None
    )
    legacy = _legacy_client(pki, cert_key)
    if not await _legacy_server_accepts(pki, legacy):
        pytest.skip("this OpenSSL cannot speak TLS 1.1 even when allowed")
    assert await handshake(executor.port, "CP1", legacy) == (REFUSED, None)
    modern = pki.client_context(cert_key)
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await handshake(executor.port, "CP1", modern) == (101, [3, "hb-1"])


@pytest.mark.parametrize("cipher", ["AES128-GCM-SHA256", "AES256-GCM-SHA384"])
async def test_the_rsa_cipher_suites_ocpp_requires_are_offered(make_executor, pki, cipher):
    executor = await make_executor(tls_certfile=pki.server_cert, tls_keyfile=pki.server_key)
    client = pki.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(cipher)
    assert await handshake(executor.port, "CP1", client) == (101, [3, "hb-1"])


def test_client_certificates_need_tls(transport, pki):
    with pytest.raises(ValueError, match="need TLS"):
        ExecutorConfig(tls_client_cafile=pki.ca)


def test_the_site_file_takes_a_client_ca_only_with_tls(pki):
    from pipeline.app.site import parse_config

    site = {"site_id": "s", "limit_kw": 50, "chargers": [{"id": "CP1", "max_power_kw": 11}]}
    with pytest.raises(ConfigError, match="tls_client_ca needs tls_cert and tls_key"):
        parse_config({"sites": [site], "ocpp": {"tls_client_ca": pki.ca}})
    cfg = parse_config(
        {"sites": [site], "ocpp": {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_client_ca": pki.ca}}
    )
    assert cfg.executor_security()["tls_client_cafile"] == pki.ca


async def test_pipeline_run_serves_profile_3_from_its_site_file(pki):
    from pipeline.app.loop import start_loop
    from pipeline.app.site import parse_config
    from pipeline.engine.config import EngineConfig
    from pipeline.transport.memory import MemoryTransport

    cfg = parse_config(
        {
            "sites": [{"site_id": "s", "limit_kw": 50, "chargers": [{"id": "CP1", "max_power_kw": 11}]}],
            "ocpp": {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_client_ca": pki.ca},
        }
    )
    service = await start_loop(
        MemoryTransport(), site=cfg, engine=EngineConfig(), executor=ExecutorConfig(port=0, metrics=False)
    )
    try:
        assert await handshake(service.port, "CP1", pki.client_context(pki.client("run-cp1", "CP1"))) == (
            101,
            [3, "hb-1"],
        )
        assert await handshake(service.port, "CP1", pki.client_context()) == (REFUSED, None)
    finally:
        await service.stop()
