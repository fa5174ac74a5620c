"""What the OCPP-J version modules share: robust routing, call outcomes, timestamps.

The ``ocpp`` library frames, routes and validates messages against each version's JSON schemas, but it
drops a frame it cannot parse without answering, and an exception thrown by a malformed CALL (for example
``[2, "id", [], {}]``) escapes its router and would end the connection. :class:`RobustRouting` answers
every such frame with a CALLERROR instead (OCPP-J 1.6 and 2.0.1, section 4.2.3), so bad input never closes
a charger's connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from datetime import datetime, timezone
from typing import Any

from ocpp import messages as ocpp_messages
from ocpp.exceptions import (
    InternalError,
    OCPPError,
    PropertyConstraintViolationError,
    UnknownCallErrorCodeError,
)
from ocpp.messages import CallError, MessageType, unpack
from websockets.exceptions import ConnectionClosed

from executor.station import CallOutcome

__all__ = ["FRAME_LOG", "RobustRouting", "iso_utc", "outcome_of", "parse_timestamp"]

log = logging.getLogger(__name__)

# The library validates every payload against its JSON schema in the default thread pool unless told not to.
# jsonschema is pure Python, so those threads only fight the event loop for the GIL: validating on the loop
# costs a third of the CPU per message under load (benchmarks/scale.py, 10,000 chargers at real rates:
# 1,279 answers/s instead of 419). It is a library-wide switch: every ocpp ChargePoint in the process.
ocpp_messages.ASYNC_VALIDATION = False

FRAME_LOG = logging.getLogger("ocpp.frames")
"""Given to the ``ocpp`` library, which logs every frame sent and received at INFO: a child of the library's
own ``ocpp`` logger, so what quiets the library (``pipeline --log-level`` above debug) quiets the frames."""
_MESSAGE_TYPES = {2: "Call", 3: "CallResult", 4: "CallError"}


def iso_utc(when: datetime) -> str:
    """``when`` as ISO-8601 UTC with millisecond precision and a ``Z`` suffix (the OCPP dateTime type)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: Any) -> datetime:
    """Parse an OCPP dateTime into an aware UTC datetime (naive input is taken as UTC).

    Raises ``PropertyConstraintViolationError`` (answered as a CALLERROR) when it is not ISO-8601; the
    library's schema check does not enforce ``format: date-time``.
    """
    try:
        parsed = datetime.fromisoformat(str(value).replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        cause = f"not an ISO-8601 timestamp: {value!r}"
        raise PropertyConstraintViolationError(details={"cause": cause}) from None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def _frame_message_id(raw: Any) -> str:
    """The messageId (second element) of a frame if it can be read, else ``"-1"``."""
    try:
        frame = json.loads(raw)
    except Exception:  # not JSON, or nested too deep to parse
        return "-1"
    if isinstance(frame, list) and len(frame) >= 2 and isinstance(frame[1], str):
        return frame[1]
    return "-1"


async def outcome_of(call: Awaitable[Any], timeout_s: float) -> tuple[CallOutcome, Any]:
    """Await a library ``call(..., suppress=False)`` and classify it: ``(outcome, result or None)``.

    A missing answer is ``Timeout``, a CALLERROR (or an answer failing schema validation) ``CallError``;
    otherwise the outcome is ``Accepted`` with the result for the caller to read its status.
    ``ConnectionClosed`` propagates.
    """
    try:
        result = await call
    except asyncio.TimeoutError:
        return CallOutcome("Timeout", f"no answer within {timeout_s}s"), None
    except OCPPError as exc:
        return CallOutcome("CallError", f"{exc.code}: {exc.description}"), None
    except UnknownCallErrorCodeError as exc:
        return CallOutcome("CallError", str(exc)), None
    return CallOutcome("Accepted"), result


class RobustRouting:
    """Mixin for an ``ocpp`` ChargePoint subclass: every failure is answered, none propagates.

    Subclasses set :meth:`wire_error` (rename an error to the version's spelling) and
    :meth:`unparseable_error` (the error for a frame that is not an OCPP message). The first CALL that
    was answered sets :attr:`first_message` (the dispatcher waits for it before its first call).
    """

    first_message: asyncio.Event
    last_message_at: datetime | None = None
    """Clock time of the last frame received from the charger (``GET /status``); ``None`` before any."""

    def wire_error(self, error: OCPPError) -> OCPPError:
        return error

    def unparseable_error(self, exc: Exception, raw: Any) -> OCPPError:  # pragma: no cover - overridden
        raise NotImplementedError

    async def serve(self) -> None:
        """Handle messages until the websocket closes; a close (clean or not) returns normally."""
        try:
            await self.start()  # type: ignore[attr-defined]
        except ConnectionClosed:
            return

    async def wait_first_message(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.first_message.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def route_message(self, raw_msg: Any) -> None:
        """Route one frame (OCPP-J section 4): a CALL is answered with its CALLRESULT or a CALLERROR,
        a CALLRESULT or CALLERROR goes to the waiting call. Unexpected exceptions get ``InternalError``."""
        clock = getattr(self, "_clock", None)
        self.last_message_at = clock.now() if clock is not None else datetime.now(timezone.utc)
        try:
            msg = unpack(raw_msg)
        except Exception as exc:  # OCPPError from the library; anything else (e.g. RecursionError) too
            log.warning("%s: unparseable frame %.200r: %s", self.id, raw_msg, exc)  # type: ignore[attr-defined]
            error = self.unparseable_error(exc, raw_msg)
            reply = CallError(_frame_message_id(raw_msg), error.code, error.description, error.details)
            await self._send(reply.to_json())  # type: ignore[attr-defined]
            return
        if log.isEnabledFor(logging.DEBUG):
            kind, action = _MESSAGE_TYPES.get(msg.message_type_id, "?"), getattr(msg, "action", None)
            log.debug("%s: received %s %s", self.id, kind, action or msg.unique_id,  # type: ignore[attr-defined]
                      extra={"charge_point_id": self.id, "action": action,  # type: ignore[attr-defined]
                             "message_type": kind, "unique_id": msg.unique_id})
        if msg.message_type_id != MessageType.Call:
            self._response_queue.put_nowait(msg)  # type: ignore[attr-defined]
            return
        try:
            await self._handle_call(msg)  # type: ignore[attr-defined]
        except ConnectionClosed:
            raise
        except OCPPError as error:
            log.warning("%s: CALLERROR %s for %s: %s", self.id, error.code, msg.action,  # type: ignore[attr-defined]
                        error.details)
            await self._send(msg.create_call_error(self.wire_error(error)).to_json())  # type: ignore[attr-defined]
        except Exception:  # a frame like [2, "id", [], {}] makes the library raise TypeError
            log.exception("%s: unexpected error handling %r", self.id, msg)  # type: ignore[attr-defined]
            await self._send(msg.create_call_error(InternalError()).to_json())  # type: ignore[attr-defined]
        self.first_message.set()
