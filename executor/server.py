"""The websocket side of the central system: who may connect, which OCPP version they speak, one link each.

Chargers connect to ``ws[s]://HOST:PORT/ocpp/{charge_point_id}`` (OCPP-J 1.6 section 3.1 and 2.0.1 section
3.1: the identity is the last path segment). Before any upgrade, in ``process_request``, the server

- answers ``GET /metrics`` with the Prometheus text exposition of the executor's registry (when a
  ``metrics`` callable is given), ``GET /status`` with the connected chargers as JSON (when a ``status``
  callable is given) and ``GET /healthz`` with ``ok``;
- answers any other path with HTTP 404;
- when an :class:`executor.auth.Authenticator` is given, checks HTTP Basic credentials (security profile
  1, or 2 over TLS): a missing or malformed header, an unknown identity, a username other than the URL's
  identity or a wrong password get HTTP 401 with ``WWW-Authenticate: Basic`` (OCPP 1.6 Security Whitepaper
  section 2.1; OCPP 2.0.1 A00.FR.205, A00.FR.306-307), so nothing is upgraded and a live connection is
  never displaced by a caller who cannot prove the identity.

It then negotiates the websocket subprotocol (OCPP-J section 3.1.2 / 2.0.1 section 3.1.2:
``Sec-WebSocket-Protocol``) among the version modules it was given, in preference order; a client that
offers none of them, or no subprotocol at all, is refused with HTTP 400 by websockets' own negotiation.

One live connection per charger: a new (authenticated) connection for an identity closes the old one
(code 1000), and only the newest connection's end is reported as a disconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Callable, Mapping
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from executor.auth import Authenticator
from executor.station import Station, StationEvents, StationFactory, StationOptions

__all__ = ["OcppServer", "charge_point_id_from_path"]

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/ocpp/([^/]+)/?$")
REPLACED_CLOSE_CODE = 1000
METRICS_PATH, HEALTH_PATH, STATUS_PATH = "/metrics", "/healthz", "/status"


def charge_point_id_from_path(path: str) -> str | None:
    """The charge point id of a request path ``/ocpp/{id}`` (percent-decoded, query ignored), else ``None``."""
    match = _PATH.match(urlsplit(path).path)
    if match is None:
        return None
    ident = unquote(match.group(1))
    return ident if ident.strip() else None


class OcppServer:
    """Serve OCPP-J on ``host:port`` (``port=0`` binds an ephemeral port; read :attr:`port` after start).

    ``protocols`` maps subprotocol names to station factories, most preferred first. ``on_connect(id,
    station)`` is called when a charger's connection is open (after any older one was told to close) and
    ``on_disconnect(id, station)`` when the charger's current connection ends; both are synchronous.
    ``authenticator=None`` is open mode (no credentials asked). ``ssl_context`` turns on TLS (wss).
    ``metrics()`` returns ``(content_type, body)`` for ``GET /metrics``; ``status()`` a JSON-able dict for
    ``GET /status``; ``on_refused(reason)`` counts refusals.
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
        metrics: Callable[[], tuple[str, bytes]] | None = None,
        status: Callable[[], dict] | None = None,
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
        self._metrics = metrics
        self._status = status
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
            subprotocols=list(self._protocols),  # type: ignore[arg-type]
            process_request=self._process_request,
            ssl=self._ssl,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("OCPP server listening on %s://%s:%s/ocpp/{id} (%s; %s)", self.scheme, self.host, self.port,
                 ", ".join(self._protocols), "Basic auth" if self._auth else "open mode: no charger auth")

    async def stop(self) -> None:
        """Stop accepting, close every connection with 1001 (going away) and wait for handlers; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            await server.wait_closed()
        for task in list(self._closing):
            task.cancel()
        self._closing.clear()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == METRICS_PATH and self._metrics is not None:
            content_type, body = self._metrics()
            response = connection.respond(HTTPStatus.OK, body.decode())
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = content_type
            return response
        if path == STATUS_PATH and self._status is not None:
            response = connection.respond(HTTPStatus.OK, json.dumps(self._status()) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        if path == HEALTH_PATH:
            return connection.respond(HTTPStatus.OK, "ok\n")
        cp_id = charge_point_id_from_path(request.path)
        if cp_id is None:
            self._on_refused("not_found")
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found: connect to /ocpp/{charge_point_id}\n")
        if self._auth is not None:
            reason = await self._auth.check(cp_id, request.headers.get("Authorization"))
            if reason is not None:
                log.warning("%s: refused (401): %s, from %s", cp_id, reason, connection.remote_address,
                            extra={"charge_point_id": cp_id, "reason": "unauthorized"})
                self._on_refused("unauthorized")
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
                return response
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        cp_id = charge_point_id_from_path(connection.request.path if connection.request else "")
        factory = self._protocols.get(connection.subprotocol or "")
        if cp_id is None or factory is None:  # unreachable: the handshake enforces both
            await connection.close(1002, "no OCPP subprotocol")
            return
        station = factory(cp_id, connection, self._events, self._options)
        old = self._live.get(cp_id)
        self._live[cp_id] = (connection, station)
        if old is not None:
            log.info("%s: new connection replaces the previous one", cp_id, extra={"charge_point_id": cp_id})
            task = asyncio.create_task(old[0].close(REPLACED_CLOSE_CODE, "replaced by a newer connection"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        log.info("%s: connected (%s) from %s", cp_id, connection.subprotocol, connection.remote_address,
                 extra={"charge_point_id": cp_id, "subprotocol": connection.subprotocol})
        self._on_connect(cp_id, station)
        try:
            await station.serve()
        finally:
            current = self._live.get(cp_id)
            if current is not None and current[0] is connection:
                del self._live[cp_id]
                self._on_disconnect(cp_id, station)
            log.info("%s: connection closed (%s)", cp_id, connection.close_code,
                     extra={"charge_point_id": cp_id, "close_code": connection.close_code})
