"""The websocket side of the central system: who may connect, which OCPP version they speak, one link each.

Chargers connect to ``ws://HOST:PORT/ocpp/{charge_point_id}`` (OCPP-J 1.6 section 3.1, client request:
the identity is the last path segment). The server

- answers any other path with HTTP 404 before the upgrade (``process_request``);
- negotiates the websocket subprotocol (OCPP-J 1.6 section 3.1, ``Sec-WebSocket-Protocol: ocpp1.6``)
  among the version modules it was given, in preference order, and refuses a client that offers none
  of them with HTTP 400 (websockets' own negotiation: nothing is upgraded, so no OCPP frame is ever
  exchanged with such a client);
- keeps one live connection per charger: a new connection for an identity closes the old one
  (code 1000), and only the newest connection's end is reported as a disconnect.

Version modules are plain :data:`executor.station.StationFactory` callables keyed by subprotocol, so OCPP
2.0.1 is one more entry (``{"ocpp2.0.1": v201.CentralSystemV201, "ocpp1.6": v16.CentralSystemV16}``,
see :data:`executor.service.PROTOCOLS`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from executor.station import Station, StationEvents, StationFactory, StationOptions

__all__ = ["OcppServer", "charge_point_id_from_path"]

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/ocpp/([^/]+)/?$")
REPLACED_CLOSE_CODE = 1000


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
        self._server: Server | None = None
        self._live: dict[str, tuple[ServerConnection, Station]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def stations(self) -> dict[str, Station]:
        """The current station per connected charge point id."""
        return {cp: station for cp, (_, station) in self._live.items()}

    async def start(self) -> None:
        """Bind and start accepting connections; sets :attr:`port` to the bound port."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=list(self._protocols),  # type: ignore[arg-type]
            process_request=self._process_request,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("OCPP server listening on ws://%s:%s/ocpp/{id} (%s)",
                 self.host, self.port, ", ".join(self._protocols))

    async def stop(self) -> None:
        """Stop accepting, close every connection with 1001 (going away) and wait for handlers; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            await server.wait_closed()
        for task in list(self._closing):
            task.cancel()
        self._closing.clear()

    @staticmethod
    def _process_request(connection: ServerConnection, request: Request) -> Response | None:
        if charge_point_id_from_path(request.path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found: connect to /ocpp/{charge_point_id}\n")
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
            log.info("%s: new connection replaces the previous one", cp_id)
            task = asyncio.create_task(old[0].close(REPLACED_CLOSE_CODE, "replaced by a newer connection"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        log.info("%s: connected (%s) from %s", cp_id, connection.subprotocol, connection.remote_address)
        self._on_connect(cp_id, station)
        try:
            await station.serve()
        finally:
            current = self._live.get(cp_id)
            if current is not None and current[0] is connection:
                del self._live[cp_id]
                self._on_disconnect(cp_id, station)
            log.info("%s: connection closed (%s)", cp_id, connection.close_code)
