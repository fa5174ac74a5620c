"""A small topic gateway, so operators and utilities can publish signals into a running pipeline.

On the memory transport the topics live inside the ``pipeline run`` process; this websocket endpoint
(``ws://HOST:PORT/topics/{topic}``) takes one JSON record per message, validates it against the topic's
contract and against the sites ``site.topology`` names, publishes it and answers ``{"ok": true}`` or
``{"ok": false, "error": "..."}``. Only the signal topics are open: site demand, tariff prices and DR
signals, and the operator's rules, parameters and plans.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from pipeline.contracts.errors import PipelineError
from pipeline.contracts.topics import (
    CONTROL_RULES,
    DR_SIGNALS,
    PARAMS,
    PRICE_SIGNALS,
    SESSION_PLANS,
    SITE_DEMAND,
    SITE_TOPOLOGY,
    TOPICS,
    ControlRule,
    RecordError,
    SessionPlan,
    TopologyNode,
    decode,
)
from pipeline.transport.base import Record, Transport

log = logging.getLogger(__name__)

SIGNAL_TOPICS = (SITE_DEMAND, PRICE_SIGNALS, DR_SIGNALS, CONTROL_RULES, PARAMS, SESSION_PLANS)
"""The topics the gateway opens: the signals, and the operator's rules, parameters and plans (whose
tombstones it also takes)."""
PREFIX = "/topics/"
ANSWER_TIMEOUT_S = 10.0  # real seconds a client waits for the gateway to say the transport took a record


class GatewayError(PipelineError):
    """The gateway could not be reached or refused the record."""


class KnownSites:
    """The sites ``site.topology`` names, followed from the topic, to refuse a signal for a site nobody
    declared (a typo would otherwise be accepted and sit in ``active_dr`` for nothing)."""

    def __init__(self) -> None:
        self._site_of: dict[str, str] = {}  # node_id -> site_id

    def apply(self, key: str | None, node: TopologyNode | None) -> None:
        if node is None:
            self._site_of.pop(key or "", None)
        else:
            self._site_of[node.node_id] = node.site_id

    @property
    def sites(self) -> list[str]:
        return sorted(set(self._site_of.values()))

    def check(self, site_id: str) -> None:
        """Raises :class:`RecordError` naming the known sites when ``site_id`` is not one of them."""
        if site_id not in self._site_of.values():
            known = ", ".join(self.sites) or "none yet"
            raise RecordError(f"unknown site {site_id!r} (known: {known}); --force sends it anyway")

    def check_node(self, kind: str, node_id: str) -> None:
        """Raises :class:`RecordError` naming the known ones when ``node_id`` (a node or charger) is not
        in the topology."""
        if node_id not in self._site_of:
            known = ", ".join(sorted(self._site_of)) or "none yet"
            raise RecordError(f"unknown {kind} {node_id!r} (known: {known}); --force sends it anyway")

    def check_record(self, record: object) -> None:
        """The site, node or charger ``record`` names must be in the topology (a session cannot be checked)."""
        if isinstance(record, SessionPlan):
            if record.charge_point_id is not None:
                self.check_node("charger", record.charge_point_id)
            return
        if isinstance(record, ControlRule):
            if record.scope == "site":
                self.check(record.scope_id)
            elif record.scope in ("node", "charger"):
                self.check_node(record.scope, record.scope_id)
            return
        site_id = getattr(record, "site_id", None)
        if site_id is not None:
            self.check(str(site_id))

    def apply_record(self, record: Record) -> None:
        """One ``site.topology`` record; a bad one is skipped (its consumers in the loop dead-letter it)."""
        try:
            node = decode(record.topic, record.key, record.value)
        except RecordError:
            return
        self.apply(record.key, node if isinstance(node, TopologyNode) else None)


async def follow_topology(transport: Transport, known: KnownSites, group: str) -> None:
    """Apply ``site.topology`` to ``known`` from the beginning, for as long as the task runs."""
    consumer = await transport.consumer([SITE_TOPOLOGY], group, from_beginning=True)
    try:
        while True:
            for rec in await consumer.getmany(timeout_s=1.0):
                known.apply_record(rec)
    finally:
        await consumer.close()


async def read_known_sites(transport: Transport) -> KnownSites:
    """``site.topology`` read once to its end (for a one-shot command publishing straight to Kafka)."""
    known = KnownSites()
    consumer = await transport.consumer([SITE_TOPOLOGY], f"signal-{uuid.uuid4().hex[:8]}", from_beginning=True)
    try:
        for rec in await consumer.read_to_end():
            known.apply_record(rec)
    finally:
        await consumer.close()
    return known


@dataclass
class Gateway:
    """A running gateway: the websockets server and the task that follows the topology."""

    server: Server
    follower: asyncio.Task[None]
    known: KnownSites

    @property
    def port(self) -> int:
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        self.follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.follower


async def serve_gateway(transport: Transport, host: str = "127.0.0.1", port: int = 9001) -> Gateway:
    """Start the gateway (``await gateway.close()`` to stop).

    A record for a site that ``site.topology`` does not name is refused with the known sites, unless the
    connection asked ``?force=1`` (a site not yet published). Raises ``OSError`` if the port cannot be
    bound.
    """
    known = KnownSites()
    follower = asyncio.create_task(
        follow_topology(transport, known, f"gateway-{uuid.uuid4().hex[:8]}"), name="gateway-topology"
    )

    def split(path: str) -> tuple[str, bool]:
        parts = urlsplit(path)
        force = parse_qs(parts.query).get("force", ["0"])[0] in ("1", "true", "yes")
        return parts.path.removeprefix(PREFIX), force

    def check_path(connection: ServerConnection, request: Request) -> Response | None:
        topic, _ = split(request.path)
        if not request.path.startswith(PREFIX) or topic not in SIGNAL_TOPICS:
            return connection.respond(404, f"no such topic; open topics: {', '.join(SIGNAL_TOPICS)}\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        if ws.request is None:  # websockets runs the handler only after the opening handshake set it
            return
        topic, force = split(ws.request.path)
        async for message in ws:
            raw = message.encode() if isinstance(message, str) else message
            try:
                delete = _tombstone_key(topic, raw)
                if delete is not None:
                    await transport.send(topic, delete, None)
                    await ws.send(json.dumps({"ok": True}))
                    continue
                record = decode(topic, None, raw)
                if record is None:
                    raise RecordError("a signal cannot be a tombstone")
                if not force:
                    known.check_record(record)
            except RecordError as exc:
                await ws.send(json.dumps({"ok": False, "error": str(exc)}))
                continue
            await transport.send(topic, str(getattr(record, TOPICS[topic].key)), raw)
            await ws.send(json.dumps({"ok": True}))

    try:
        server = await serve(handler, host, port, process_request=check_path)
    except BaseException:
        follower.cancel()
        raise
    return Gateway(server, follower, known)


def _tombstone_key(topic: str, raw: bytes) -> str | None:
    """``{"delete": KEY}`` on an upsert topic asks for a tombstone of ``KEY``; anything else is a record."""
    if TOPICS[topic].kind != "upsert" or b'"delete"' not in raw:
        return None
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, dict) and set(message) == {"delete"}:
        if not isinstance(message["delete"], str) or not message["delete"]:
            raise RecordError("delete: the key of the record to withdraw, a non-empty string")
        return message["delete"]
    return None


async def delete_record(url: str, topic: str, key: str) -> None:
    """Withdraw ``key`` from an upsert topic (a tombstone) through a gateway at ``url``; raises
    :class:`GatewayError`."""
    await send_record(url, topic, json.dumps({"delete": key}).encode(), force=True)


async def send_record(
    url: str, topic: str, value: bytes, *, force: bool = False, timeout_s: float = ANSWER_TIMEOUT_S
) -> None:
    """Publish one record through a gateway at ``url`` (``ws://HOST:PORT``); ``force`` sends it even for a
    site the topology does not name. The gateway answers once the transport took the record; without an
    answer in ``timeout_s`` real seconds (or a connection in 5) it raises :class:`GatewayError`, as for a
    refusal."""
    query = "?force=1" if force else ""
    try:
        async with connect(f"{url.rstrip('/')}{PREFIX}{topic}{query}", open_timeout=5) as ws:
            await ws.send(value.decode())
            try:
                answer = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
            except TimeoutError:
                raise GatewayError(f"no answer from the gateway at {url} in {timeout_s:g} s") from None
    except GatewayError:
        raise
    except (OSError, TimeoutError) as exc:
        raise GatewayError(f"cannot reach the gateway at {url}: {exc}") from None
    except Exception as exc:  # websockets handshake errors (404 and the like)
        raise GatewayError(f"gateway at {url} refused {topic}: {exc}") from None
    if not answer.get("ok"):
        raise GatewayError(f"gateway rejected the record: {answer.get('error')}")


__all__ = [
    "Gateway",
    "GatewayError",
    "KnownSites",
    "SIGNAL_TOPICS",
    "delete_record",
    "read_known_sites",
    "send_record",
    "serve_gateway",
]
