"""What the OCPP-J version modules share: spec-exact framing and routing, call outcomes, timestamps.

The ``ocpp`` library validates payloads against each version's JSON schemas and runs the handlers, but its
frame reading departs from OCPP-J in ways a charger can see, so :class:`RobustRouting` reads every frame
itself before the library routes it:

- a frame that is not JSON or not an OCPP message array is answered with a CALLERROR (the library drops it
  silently), with messageId ``"-1"`` when the id cannot be read (OCPP 2.0.1 Part 4 section 4.2.3);
- a message type other than 2, 3 or 4 is ignored in 1.6 (OCPP-J 1.6 section 4.1.3) and answered
  ``MessageTypeNotSupported`` in 2.0.1 (Part 4 section 4.4); the version module decides;
- a malformed CALL (``[2, "id", [], {}]``, a missing payload, a messageId that is not a string) is answered
  with a CALLERROR rather than escaping the library's router and ending the connection (OCPP-J 1.6 and
  2.0.1 section 4.2.3);
- an action is answered ``NotImplemented`` when the version does not define it and ``NotSupported`` when it
  does but nothing here serves it (OCPP-J 1.6 section 4.2.3 table 7; 2.0.1 Part 4 section 4.3). The
  library answers with the two codes the other way round, so an action missing from ``route_map`` never
  reaches it;
- a malformed CALLRESULT or CALLERROR is dropped with a warning: a CALLERROR answers a CALL only, and the
  call it may have answered times out like any unanswered one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ocpp import messages as ocpp_messages
from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import (
    InternalError,
    OCPPError,
    PropertyConstraintViolationError,
    UnknownCallErrorCodeError,
)
from ocpp.messages import Call, CallError, CallResult, MessageType
from websockets.exceptions import ConnectionClosed

from executor.ocpp.station import CallOutcome

__all__ = [
    "FRAME_LOG",
    "ActionNotKnownError",
    "ActionNotSupportedError",
    "RobustRouting",
    "iso_utc",
    "outcome_of",
    "parse_timestamp",
    "positive_int",
]

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


class ActionNotKnownError(OCPPError):
    """``NotImplemented``: the action is not one the version defines (OCPP-J 1.6 section 4.2.3 table 7;
    OCPP 2.0.1 Part 4 section 4.3)."""

    code = "NotImplemented"
    default_description = "Requested Action is not known by receiver"


class ActionNotSupportedError(OCPPError):
    """``NotSupported``: the version defines the action but this receiver does not serve it (same tables)."""

    code = "NotSupported"
    default_description = "Requested Action is recognized but not supported by the receiver"


def iso_utc(when: datetime) -> str:
    """``when`` as ISO-8601 UTC with millisecond precision and a ``Z`` suffix (the OCPP dateTime type)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


async def outcome_of(call: Awaitable[Any], timeout_s: float) -> tuple[CallOutcome, Any]:
    """Await a library ``call(..., suppress=False)`` and classify it: ``(outcome, result or None)``.

    A missing answer is ``Timeout``, a CALLERROR (or an answer failing schema validation) ``CallError``;
    otherwise the outcome is ``Accepted`` with the result for the caller to read its status.
    ``ConnectionClosed`` propagates.
    """
    try:
        result = await call
    except TimeoutError:
        return CallOutcome("Timeout", f"no answer within {timeout_s}s"), None
    except OCPPError as exc:
        return CallOutcome("CallError", f"{exc.code}: {exc.description}"), None
    except UnknownCallErrorCodeError as exc:
        return CallOutcome("CallError", str(exc)), None
    return CallOutcome("Accepted"), result


class RobustRouting:
    """Mixin for an ``ocpp`` ChargePoint subclass: every frame is read as OCPP-J says, no failure propagates.

    Subclasses set :attr:`version` (``"1.6"`` or ``"2.0.1"``, for messages) and :attr:`known_actions` (every
    action the version defines, both directions), and implement :meth:`wire_error` (rename an error to the
    version's spelling), :meth:`unparseable_error` (the error for a frame that is not an OCPP message) and
    :meth:`unknown_message_type` (the error for a message type other than 2, 3 or 4, or ``None`` to ignore
    the frame). The first CALL that was answered sets :attr:`first_message` (the dispatcher waits for it
    before its first call).
    """

    version: str
    known_actions: frozenset[str]
    first_message: asyncio.Event
    # What the mixin uses of ``ocpp.charge_point.ChargePoint`` (untyped: the library ships no type
    # information), declared as annotations only so the library's own definitions stay in force.
    id: str
    route_map: dict[str, Any]
    _response_queue: asyncio.Queue[Any]
    start: Callable[[], Awaitable[None]]
    _send: Callable[[str], Awaitable[None]]
    _call_lock: asyncio.Lock
    _unique_id_generator: Callable[[], Any]
    _get_specific_response: Callable[[str, float], Awaitable[Any]]
    _response_timeout: float
    _ocpp_version: str
    _call_result: Any
    logger: logging.Logger
    _handle_call: Callable[[Any], Awaitable[None]]
    last_message_at: datetime | None = None
    """Clock time of the last frame received from the charger (``GET /status``); ``None`` before any."""

    def wire_error(self, error: OCPPError) -> OCPPError:
        return error

    def unparseable_error(self, cause: str) -> OCPPError:  # pragma: no cover - overridden
        raise NotImplementedError

    def unknown_message_type(self, type_id: Any, cause: str) -> OCPPError | None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def serve(self) -> None:
        """Handle messages until the websocket closes; a close (clean or not) returns normally."""
        try:
            await self.start()
        except ConnectionClosed:
            return

    async def call(self, payload: Any, suppress: bool = True, unique_id: Any = None, skip_schema_validation=False):
        """The library's ``ChargePoint.call`` (same arguments, answer and errors), except that the request
        is not validated against its JSON schema before it is sent; the charger's answer still is.

        Every request this central system sends is built here from the library's typed payloads
        (:meth:`build_set_charging_profile` and the like), and the test charge points validate each one
        against the schema as they receive it. Validating it again on every call cost more than half of
        the central side's CPU per SetChargingProfile (``benchmarks/latency.py``, executor dispatch), on
        the path a fan-out of new limits waits for.
        """
        wire = remove_nones(snake_to_camel_case(serialize_as_dict(payload)))
        message = Call(
            unique_id=unique_id if unique_id is not None else str(self._unique_id_generator()),
            action=payload.__class__.__name__,
            payload=wire,
        )
        async with self._call_lock:
            await self._send(message.to_json())
            try:
                response = await self._get_specific_response(message.unique_id, self._response_timeout)
            except TimeoutError:
                raise TimeoutError(f"Waited {self._response_timeout}s for response on {message.to_json()}.") from None
        if response.message_type_id == MessageType.CallError:
            self.logger.warning("Received a CALLError: %s'", response)
            if suppress:
                return None
            raise response.to_exception()
        if not skip_schema_validation:
            response.action = message.action
            await ocpp_messages.validate_payload(response, self._ocpp_version)
        return getattr(self._call_result, message.action)(**camel_to_snake_case(response.payload))

    async def wait_first_message(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.first_message.wait(), timeout_s)
        except TimeoutError:
            pass

    async def _send_error(self, message_id: str, error: OCPPError) -> None:
        reply = CallError(message_id, error.code, error.description, error.details)
        await self._send(reply.to_json())

    def _read(self, raw_msg: Any) -> tuple[Any, str | None, OCPPError | None]:
        """``(message, None, None)`` for a well-formed frame; else ``(None, message id to answer with,
        error)``, where an error of ``None`` means the frame is dropped without an answer."""
        cp = self.id
        try:
            frame = json.loads(raw_msg)
        except Exception:  # not JSON, not UTF-8, or nested too deep to parse (RecursionError)
            return None, "-1", self.unparseable_error("not valid JSON")
        if not isinstance(frame, list) or not frame:
            return None, "-1", self.unparseable_error("not a JSON array [messageTypeId, messageId, ...]")
        type_id = frame[0]
        message_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
        if type(type_id) is not int or type_id not in _MESSAGE_TYPES:
            cause = f"message type {json.dumps(type_id)} is not 2, 3 or 4"
            error = self.unknown_message_type(type_id, cause)
            if error is None:
                log.warning("%s: ignored a frame of %s: %.200r", cp, cause, raw_msg)
            return None, message_id or "-1", error
        if type_id == MessageType.Call:
            if message_id is None:
                return None, "-1", self.unparseable_error("the messageId is missing or not a string")
            if len(frame) != 4 or not isinstance(frame[2], str):
                cause = "a CALL is [2, messageId, action (a string), payload]"
                return None, message_id, self.unparseable_error(cause)
            return Call(message_id, frame[2], frame[3]), None, None
        # [3, messageId, payload]; [4, messageId, errorCode, errorDescription, errorDetails], the details
        # taken as {} when a charger leaves them out (the call fails the same either way)
        sizes = (3,) if type_id == MessageType.CallResult else (4, 5)
        if message_id is None or len(frame) not in sizes:
            log.warning("%s: dropped a malformed %s: %.200r", cp, _MESSAGE_TYPES[type_id], raw_msg)
            return None, None, None
        return (CallResult(*frame[1:]) if type_id == MessageType.CallResult else CallError(*frame[1:])), None, None

    async def route_message(self, raw_msg: Any) -> None:
        """Route one frame (OCPP-J section 4): a CALL is answered with its CALLRESULT or a CALLERROR, a
        CALLRESULT or CALLERROR goes to the waiting call, anything else as the module docstring says.
        Unexpected exceptions get ``InternalError``."""
        clock = getattr(self, "_clock", None)
        self.last_message_at = clock.now() if clock is not None else datetime.now(UTC)
        msg, answer_id, error = self._read(raw_msg)
        if msg is None:
            if error is not None and answer_id is not None:
                log.warning(
                    "%s: %s for the frame %.200r: %s",
                    self.id,
                    error.code,
                    raw_msg,
                    error.details.get("cause"),
                )
                await self._send_error(answer_id, error)
            return
        if log.isEnabledFor(logging.DEBUG):
            kind, action = _MESSAGE_TYPES.get(msg.message_type_id, "?"), getattr(msg, "action", None)
            log.debug(
                "%s: received %s %s",
                self.id,
                kind,
                action or msg.unique_id,
                extra={
                    "charge_point_id": self.id,
                    "action": action,
                    "message_type": kind,
                    "unique_id": msg.unique_id,
                },
            )
        if msg.message_type_id != MessageType.Call:
            self._response_queue.put_nowait(msg)
            return
        try:
            if msg.action not in self.route_map:
                if msg.action in self.known_actions:
                    raise ActionNotSupportedError(
                        details={"cause": f"{msg.action} is not served by this central system"}
                    )
                raise ActionNotKnownError(details={"cause": f"{msg.action} is not an OCPP {self.version} action"})
            await self._handle_call(msg)
        except ConnectionClosed:
            raise
        except OCPPError as error:
            log.warning(
                "%s: CALLERROR %s for %s: %s",
                self.id,
                error.code,
                msg.action,
                error.details,
            )
            await self._send(msg.create_call_error(self.wire_error(error)).to_json())
        except Exception:
            log.exception("%s: unexpected error handling %r", self.id, msg)
            await self._send(msg.create_call_error(InternalError()).to_json())
        self.first_message.set()


def positive_int(value: object) -> int:
    """A configuration or variable value as a count of at least 1 (1 when it is missing or not a positive
    integer), e.g. 1.6 ``ChargingScheduleMaxPeriods`` or 2.0.1 ``SmartChargingCtrlr.PeriodsPerSchedule``."""
    try:
        count = int(str(value).strip())
    except ValueError:
        return 1
    return max(1, count)
