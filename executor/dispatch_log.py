"""Debug records of the dispatcher's decisions and of every OCPP call it makes.

Why a charger holds what it holds is the question operators ask most, so each decision of
:mod:`executor.dispatch` (and a collapsed update in :mod:`executor.desired`) is one DEBUG record on the
``executor.dispatch`` logger, with ``charge_point_id`` and ``reason`` as ``extra`` fields (JSON logs carry
them as keys; see :mod:`pipeline.app.logs`, which this package does not import). Reasons:

- a profile sent now: ``decrease``, ``resend`` (the same limit again, after a reconnect), ``increase``,
  ``ttl_fallback`` (the setpoint is older than the TTL: at most the safe share), ``failsafe`` (station
  maximum at the safe share, TxDefaultProfile at the floor), ``lift`` / ``clear_lift`` (the station
  maximum at the rating, renewed, or cleared when setpoints went stale), ``clear_tx`` (setpoint withdrawn),
  ``rate_unit`` (GetConfiguration / GetVariables);
- ``held_back``: an increase waits (:attr:`executor.planning.Plan.held_back`), ``wait`` = ``debounce``,
  ``lag`` (break before make: a cut on the same breaker is not followed yet) or ``headroom``, with
  ``limit_scope`` (``node`` or ``site``), ``limit_id``, ``needed_kw`` (what every connector there may draw,
  in-flight limits included, plus the increase) and ``limit_kw``; logged when it starts or its reason
  changes;
- ``deadband``: an increase smaller than the deadband was not sent;
- ``collapsed``: a newer setpoint replaced one that was not sent yet;
- ``retry`` (``failures``, ``delay_s``) or ``not_retried`` (NotSupported) after a failed call.

Each call is logged when sent (``action``, ``connector_id``, the profile's ``purpose``, ``limit``,
``unit``, ``stack_level``, ``transaction_id``) and answered (``status``, ``error``, ``duration_ms``).
With DEBUG off every function here returns after one ``isEnabledFor`` check; nothing is formatted.
"""

from __future__ import annotations

import logging
from typing import Any

from executor.ledger import Blocked
from executor.ocpp.station import CallOutcome, ClearRequest, ProfileRequest

__all__ = [
    "call_answered",
    "call_sent",
    "deadband_skipped",
    "decision",
    "held_back",
    "hold",
    "retry_scheduled",
]

log = logging.getLogger("executor.dispatch")


def decision(charge_point_id: str, reason: str, text: str, *args: Any, **fields: Any) -> None:
    """One DEBUG record ``"<charge_point_id>: <text % args>"`` with ``charge_point_id``, ``reason`` and
    ``fields`` as extras (plain values only: they are serialised as they are)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s: " + text,
            charge_point_id,
            *args,
            extra={"charge_point_id": charge_point_id, "reason": reason, **fields},
        )


def hold(
    charge_point_id: str,
    held: dict[int, str],
    previous: dict[int, str],
    connector_id: int,
    why: str,
    blocked: Blocked | None = None,
) -> None:
    """Hold an increase on ``connector_id`` back: ``held[connector_id] = why`` (the dispatcher's
    ``held_back``), logged when ``previous`` (the last plan's) did not hold it for the same reason."""
    held[connector_id] = why
    if previous.get(connector_id) != why:
        held_back(charge_point_id, connector_id, why, blocked)


def held_back(charge_point_id: str, connector_id: int, why: str, blocked: Blocked | None) -> None:
    """An increase on ``connector_id`` waits (``why`` as in :attr:`ChargerDispatcher.held_back`)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    fields: dict[str, Any] = {"connector_id": connector_id, "wait": why.split(":", 1)[0]}
    if blocked is not None and blocked.phase is not None:
        fields.update(
            limit_scope=blocked.level,
            limit_id=blocked.group,
            phase=blocked.phase,
            needed_a=None if blocked.needed_a is None else round(blocked.needed_a, 1),
            limit_a=blocked.limit_a,
        )
    elif blocked is not None:
        fields.update(
            limit_scope=blocked.level,
            limit_id=blocked.group,
            needed_kw=round(blocked.needed_kw, 3),
            limit_kw=round(blocked.limit_kw, 3),
        )
    decision(charge_point_id, "held_back", "connector %s: increase held back (%s)", connector_id, why, **fields)


def deadband_skipped(charge_point_id: str, connector_id: int, held: float, wanted: float, unit: str) -> None:
    """An increase from ``held`` to ``wanted`` (in ``unit``) is within the deadband and not sent."""
    decision(
        charge_point_id,
        "deadband",
        "connector %s: %s -> %s%s is within the deadband",
        connector_id,
        held,
        wanted,
        unit,
        connector_id=connector_id,
        limit=wanted,
        held=held,
        unit=unit,
    )


def retry_scheduled(
    charge_point_id: str, kind: str, connector_id: int | None, status: str, failures: int, delay_s: float | None
) -> None:
    """A call failed for the ``failures``-th time; it is retried after ``delay_s`` real seconds, or never
    (``None``: the charger does not support it)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    then = "not retried" if delay_s is None else f"retry in {delay_s:g}s"
    decision(
        charge_point_id,
        "not_retried" if delay_s is None else "retry",
        "%s connector %s: %s, failure %d, %s",
        kind,
        connector_id,
        status,
        failures,
        then,
        connector_id=connector_id,
        status=status,
        failures=failures,
        delay_s=delay_s,
    )


def _summary(request: ProfileRequest | ClearRequest | None) -> dict[str, Any]:
    if isinstance(request, ProfileRequest):
        return {
            "connector_id": request.connector_id,
            "purpose": request.purpose,
            "limit": request.limit,
            "unit": request.unit,
            "stack_level": request.stack_level,
            "profile_id": request.profile_id,
            "transaction_id": request.transaction_id,
        }
    if isinstance(request, ClearRequest):
        return {"connector_id": request.connector_id, "profile_id": request.profile_id}
    return {}


def _what(fields: dict[str, Any]) -> str:
    if not fields:
        return ""
    purpose = f" {fields['purpose']}" if "purpose" in fields else ""
    limit = f" {fields['limit']}{fields['unit']}" if "limit" in fields else ""
    return f"{purpose} connector {fields['connector_id']}{limit}"


def call_sent(charge_point_id: str, action: str, request: ProfileRequest | ClearRequest | None, reason: str) -> None:
    """An OCPP call goes out to the charger now, because of ``reason``."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    fields = _summary(request)
    decision(charge_point_id, reason, "%s%s (%s)", action, _what(fields), reason, action=action, **fields)


def call_answered(
    charge_point_id: str,
    action: str,
    request: ProfileRequest | ClearRequest | None,
    outcome: CallOutcome | str,
    duration_s: float,
) -> None:
    """The charger answered ``action`` (or it timed out) after ``duration_s`` real seconds."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    status = outcome.status if isinstance(outcome, CallOutcome) else outcome
    error = outcome.error if isinstance(outcome, CallOutcome) else None
    fields = _summary(request)
    log.debug(
        "%s: %s%s answered %s%s in %.1f ms",
        charge_point_id,
        action,
        _what(fields),
        status,
        f" ({error})" if error else "",
        duration_s * 1000.0,
        extra={
            "charge_point_id": charge_point_id,
            "action": action,
            "status": status,
            "error": error,
            "duration_ms": round(duration_s * 1000.0, 3),
            **fields,
        },
    )
