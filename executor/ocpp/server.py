"""The websocket side of the central system: who may connect, which OCPP version they speak, one link each.

Chargers connect to ``ws[s]://HOST:PORT/ocpp/{charge_point_id}`` (OCPP-J 1.6 section 3.1 and 2.0.1 Part 4
section 3.1: the identity is the last path segment). Before any upgrade, in ``process_request``, the server

- answers ``GET /healthz`` with ``ok`` (for load balancers and container health checks);
- answers any other path with HTTP 404 (OCPP-J 1.6 and 2.0.1 Part 4 section 3.2);
- with security profile 3 (TLS with a client certificate, verified against the configured CA during the
  TLS handshake) refuses with HTTP 403 a certificate whose subject commonName is not the identity in the
  URL (OCPP 2.0.1 A00.FR.405; the 1.6 Security Whitepaper has the same rule for the Charge Point
  certificate);
- when an :class:`executor.ocpp.auth.Authenticator` is given, checks HTTP Basic credentials (security profile
  1, or 2 over TLS): a missing or malformed header, an unknown identity, a username other than the URL's
  identity or a wrong password get HTTP 401 with ``WWW-Authenticate: Basic`` (OCPP 1.6 Security Whitepaper
  section 2.1; OCPP 2.0.1 A00.FR.205, A00.FR.306-307), so nothing is upgraded and a live connection is
  never displaced by a caller who cannot prove the identity.

It then negotiates the websocket subprotocol (``Sec-WebSocket-Protocol``) among the version modules it was
given, in preference order. A client that offers none of them, or no subprotocol at all, gets the
handshake completed without a ``Sec-WebSocket-Protocol`` header and the connection closed at once with
code 1002 (OCPP-J 1.6 section 3.2; OCPP 2.0.1 Part 4 section 3.2), and never displaces a live connection.

One live connection per charger: a new (authenticated) connection for an identity closes the old one
(code 1000), and only the newest connection's end is reported as a disconnect.

:class:`HttpEndpoints` is the separate plain-HTTP listener for ``GET /metrics`` and ``GET /status``, which
list the chargers and so stay off the OCPP port (loopback by default).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from executor.ocpp.auth import Authenticator
from executor.ocpp.station import Station, StationEvents, StationFactory, StationOptions

__all__ = ["HttpEndpoints", "OcppServer", "certificate_common_name", "charge_point_id_from_path", "server_tls_context"]

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/ocpp/([^/]+)/?$")
REPLACED_CLOSE_CODE = 1000
NO_SUBPROTOCOL_CLOSE_CODE = 1002  # RFC 6455 section 7.4.1: protocol error
METRICS_PATH, HEALTH_PATH, STATUS_PATH = "/metrics", "/healthz", "/status"


def charge_point_id_from_path(path: str) -> str | None:
    """The charge point id of a request path ``/ocpp/{id}`` (percent-decoded, query ignored), else ``None``."""
    match = _PATH.match(urlsplit(path).path)
    if match is None:
        return None
    ident = unquote(match.group(1))
    return ident if ident.strip() else None


_OCPP_CIPHERS = "AES128-GCM-SHA256:AES256-GCM-SHA384"
"""TLS_RSA_WITH_AES_128_GCM_SHA256 and TLS_RSA_WITH_AES_256_GCM_SHA384 in OpenSSL's names: two of the four
suites a central system SHALL support (OCPP 2.0.1 A00.FR.318 and A00.FR.421; OCPP 1.6 Security Whitepaper
A00.FR.317 and A00.FR.421), which Python's default server ciphers leave out. The other two (ECDHE-ECDSA
with AES-GCM) are in the defaults and need an ECDSA server certificate."""


def server_tls_context(certfile: str, keyfile: str, client_cafile: str | None = None) -> ssl.SSLContext:
    """The server TLS context for ``wss://``: security profile 2, or 3 with ``client_cafile``.

    TLS 1.2 or later only (OCPP 2.0.1 A00.FR.313 and A00.FR.416; a client offering only TLS 1.0 or 1.1
    fails the handshake; the 1.6 Security Whitepaper, A00.FR.312 and A00.FR.416, would let a central system
    admit legacy charge points on TLS 1.0/1.1, which this one does not), Python's default ciphers plus the
    OCPP-mandated RSA suites (``_OCPP_CIPHERS``).
    With ``client_cafile`` (PEM CA bundle) a client certificate is required and verified against it during
    the handshake (chain and validity period): a charger without one, or with an unknown, expired or
    otherwise invalid one, is refused before HTTP (A00.FR.407). The identity check on the verified
    certificate happens at the upgrade (:class:`OcppServer`). Raises ``ssl.SSLError`` or ``OSError`` for
    unreadable files.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    context.set_ciphers(":".join([*tls12, _OCPP_CIPHERS]))
    context.load_cert_chain(certfile, keyfile)
    if client_cafile is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_cafile)
    return context


def certificate_common_name(peercert: Mapping | None) -> str | None:
    """The subject commonName of a verified peer certificate (``ssl.SSLSocket.getpeercert()`` form), or
    ``None`` when there is no certificate or no commonName."""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def _text_response(connection: ServerConnection, status: HTTPStatus, body: str, content_type: str) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


class OcppServer:
    """Serve OCPP-J on ``host:port`` (``port=0`` binds an ephemeral port; read :attr:`port` after start).

    ``protocols`` maps subprotocol names to station factories, most preferred first. ``on_connect(id,
    station)`` is called when a charger's connection is open (after any older one was told to close) and
    ``on_disconnect(id, station)`` when the charger's current connection ends; both are synchronous.
    ``authenticator=None`` is open mode (no credentials asked). ``ssl_context`` turns on TLS (wss); when it
    requires a client certificate (``verify_mode == CERT_REQUIRED``, security profile 3) the certificate's
    commonName must be the charger's identity. ``on_refused(reason)`` counts refusals (``not_found``,
    ``unauthorized``, ``certificate``, ``subprotocol``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        protocols: Mapping[str, StationFactory],
        events: StationEvents,
        options: StationOptions,
        on_connect: Callable[[str, Station], None],
        on_disconnect: Callable[[str, Station], None],
        *,
        authenticator: Authenticator | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        if not protocols:
            raise ValueError("at least one OCPP version module is needed")
        self.host = host
        self.port = port
        self._protocols = dict(protocols)
        self._events = events
        self._options = options
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._auth = authenticator
        self._ssl = ssl_context
        self._client_certs = ssl_context is not None and ssl_context.verify_mode == ssl.CERT_REQUIRED
        self._on_refused = on_refused
        self._server: Server | None = None
        self._live: dict[str, tuple[ServerConnection, Station]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def scheme(self) -> str:
        return "wss" if self._ssl is not None else "ws"

    @property
    def stations(self) -> dict[str, Station]:
        """The current station per connected charge point id."""
        return {cp: station for cp, (_, station) in self._live.items()}

    @property
    def connected(self) -> int:
        """How many charge points have a live connection (O(1), unlike ``len(stations)``)."""
        return len(self._live)

    def is_connected(self, charge_point_id: str) -> bool:
        """Whether ``charge_point_id`` has a live connection (O(1))."""
        return charge_point_id in self._live

    async def start(self) -> None:
        """Bind and start accepting connections; sets :attr:`port` to the bound port."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            ssl=self._ssl,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        charger_auth = (
            " and ".join(
                (["client certificates"] if self._client_certs else []) + (["Basic auth"] if self._auth else [])
            )
            or "open mode: no charger auth"
        )
        log.info(
            "OCPP server listening on %s://%s:%s/ocpp/{id} (%s; %s)",
            self.scheme,
            self.host,
            self.port,
            ", ".join(self._protocols),
            charger_auth,
        )

    async def stop(self) -> None:
        """Stop accepting, close every connection with 1001 (going away) and wait for handlers; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            await server.wait_closed()
        for task in list(self._closing):
            task.cancel()
        self._closing.clear()

    def _select_subprotocol(self, connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        """The first of our versions (in preference order) the client offers; ``None``: no header (closed)."""
        return next((Subprotocol(name) for name in self._protocols if name in offered), None)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == HEALTH_PATH:
            return connection.respond(HTTPStatus.OK, "ok\n")
        cp_id = charge_point_id_from_path(request.path)
        if cp_id is None:
            self._on_refused("not_found")
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found: connect to /ocpp/{charge_point_id}\n")
        if self._client_certs:
            common_name = certificate_common_name(connection.transport.get_extra_info("peercert"))
            if common_name != cp_id:
                log.warning(
                    "%s: refused (403): client certificate is for %r, from %s",
                    cp_id,
                    common_name,
                    connection.remote_address,
                    extra={"charge_point_id": cp_id, "reason": "certificate"},
                )
                self._on_refused("certificate")
                return connection.respond(
                    HTTPStatus.FORBIDDEN, "Forbidden: the client certificate is not for this charge point\n"
                )
        if self._auth is not None:
            reason = await self._auth.check(cp_id, request.headers.get("Authorization"))
            if reason is not None:
                log.warning(
                    "%s: refused (401): %s, from %s",
                    cp_id,
                    reason,
                    connection.remote_address,
                    extra={"charge_point_id": cp_id, "reason": "unauthorized"},
                )
                self._on_refused("unauthorized")
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
                return response
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        cp_id = charge_point_id_from_path(connection.request.path if connection.request else "")
        factory = self._protocols.get(connection.subprotocol or "")
        if cp_id is None or factory is None:  # no common subprotocol (the path was checked before the upgrade)
            offered = connection.request.headers.get_all("Sec-WebSocket-Protocol") if connection.request else []
            log.warning(
                "%s: closed (%d): offered subprotocols %s, served %s",
                cp_id,
                NO_SUBPROTOCOL_CLOSE_CODE,
                ", ".join(offered) or "none",
                ", ".join(self._protocols),
                extra={"charge_point_id": cp_id, "reason": "subprotocol"},
            )
            self._on_refused("subprotocol")
            await connection.close(NO_SUBPROTOCOL_CLOSE_CODE, "no supported OCPP subprotocol offered")
            return
        station = factory(cp_id, connection, self._events, self._options)
        old = self._live.get(cp_id)
        self._live[cp_id] = (connection, station)
        if old is not None:
            log.info("%s: new connection replaces the previous one", cp_id, extra={"charge_point_id": cp_id})
            task = asyncio.create_task(old[0].close(REPLACED_CLOSE_CODE, "replaced by a newer connection"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        log.info(
            "%s: connected (%s) from %s",
            cp_id,
            connection.subprotocol,
            connection.remote_address,
            extra={"charge_point_id": cp_id, "subprotocol": connection.subprotocol},
        )
        self._on_connect(cp_id, station)
        try:
            await station.serve()
        finally:
            current = self._live.get(cp_id)
            if current is not None and current[0] is connection:
                del self._live[cp_id]
                self._on_disconnect(cp_id, station)
            log.info(
                "%s: connection closed (%s)",
                cp_id,
                connection.close_code,
                extra={"charge_point_id": cp_id, "close_code": connection.close_code},
            )


class HttpEndpoints:
    """Plain HTTP on ``host:port`` (``port=0``: an ephemeral port, read :attr:`port` after start) for
    operators: ``GET /metrics`` (``metrics()`` returns ``(content_type, body)``, the Prometheus text
    exposition), ``GET /status`` (``status()`` returns a JSON-able dict) and ``GET /healthz`` (``ok``); any
    other path gets 404. Nothing is ever upgraded to a websocket here.
    """

    def __init__(
        self, host: str, port: int, metrics: Callable[[], tuple[str, bytes]], status: Callable[[], dict]
    ) -> None:
        self.host = host
        self.port = port
        self._metrics = metrics
        self._status = status
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind; sets :attr:`port` to the bound port. Raises ``OSError`` if it cannot be bound."""
        self._server = await serve(self._refuse_upgrade, self.host, self.port, process_request=self._respond)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("status and metrics on http://%s:%s (/status, /metrics, /healthz)", self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            await server.wait_closed()

    @staticmethod
    async def _refuse_upgrade(connection: ServerConnection) -> None:  # pragma: no cover - _respond answers all
        await connection.close(1008, "no websocket here")

    def _respond(self, connection: ServerConnection, request: Request) -> Response:
        path = urlsplit(request.path).path
        if path == METRICS_PATH:
            content_type, body = self._metrics()
            return _text_response(connection, HTTPStatus.OK, body.decode(), content_type)
        if path == STATUS_PATH:
            return _text_response(connection, HTTPStatus.OK, json.dumps(self._status()) + "\n", "application/json")
        if path == HEALTH_PATH:
            return connection.respond(HTTPStatus.OK, "ok\n")
        return connection.respond(HTTPStatus.NOT_FOUND, "Not Found: GET /status, /metrics or /healthz\n")
