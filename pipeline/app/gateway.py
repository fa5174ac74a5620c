"""A small topic gateway, so operators and utilities can publish signals into a running pipeline.

On the memory transport the topics live inside the ``pipeline run`` process; this websocket endpoint
(``ws://HOST:PORT/topics/{topic}``) takes one JSON record per message, validates it against the topic's
contract, publishes it and answers ``{"ok": true}`` or ``{"ok": false, "error": "..."}``. Only the
signal topics are open: site demand, tariff prices and DR signals.
"""

from __future__ import annotations

import json
import logging

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from pipeline.contracts.errors import PipelineError
from pipeline.contracts.topics import DR_SIGNALS, PRICE_SIGNALS, SITE_DEMAND, TOPICS, RecordError, decode
from pipeline.transport.base import Transport

log = logging.getLogger(__name__)

SIGNAL_TOPICS = (SITE_DEMAND, PRICE_SIGNALS, DR_SIGNALS)
PREFIX = "/topics/"


class GatewayError(PipelineError):
    """The gateway could not be reached or refused the record."""


async def serve_gateway(transport: Transport, host: str = "127.0.0.1", port: int = 9001) -> Server:
    """Start the gateway; returns the websockets server (``server.close()`` to stop)."""

    def check_path(connection: ServerConnection, request: Request) -> Response | None:
        topic = request.path.removeprefix(PREFIX)
        if not request.path.startswith(PREFIX) or topic not in SIGNAL_TOPICS:
            return connection.respond(404, f"no such topic; open topics: {', '.join(SIGNAL_TOPICS)}\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        if ws.request is None:  # websockets runs the handler only after the opening handshake set it
            return
        topic = ws.request.path.removeprefix(PREFIX)
        async for message in ws:
            raw = message.encode() if isinstance(message, str) else message
            try:
                record = decode(topic, None, raw)
            except RecordError as exc:
                await ws.send(json.dumps({"ok": False, "error": str(exc)}))
                continue
            await transport.send(topic, str(getattr(record, TOPICS[topic].key)), raw)
            await ws.send(json.dumps({"ok": True}))

    return await serve(handler, host, port, process_request=check_path)


async def send_record(url: str, topic: str, value: bytes) -> None:
    """Publish one record through a gateway at ``url`` (``ws://HOST:PORT``); raises :class:`GatewayError`."""
    try:
        async with connect(f"{url.rstrip('/')}{PREFIX}{topic}", open_timeout=5) as ws:
            await ws.send(value.decode())
            answer = json.loads(await ws.recv())
    except (OSError, TimeoutError) as exc:
        raise GatewayError(f"cannot reach the gateway at {url}: {exc}") from None
    except Exception as exc:  # websockets handshake errors (404 and the like)
        raise GatewayError(f"gateway at {url} refused {topic}: {exc}") from None
    if not answer.get("ok"):
        raise GatewayError(f"gateway rejected the record: {answer.get('error')}")


__all__ = ["GatewayError", "SIGNAL_TOPICS", "send_record", "serve_gateway"]
