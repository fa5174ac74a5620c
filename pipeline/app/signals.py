"""``pipeline signal``: build one utility or operator signal, validated against its topic's contract.

Each builder returns the topic name and the pydantic record; validation errors surface as
:class:`pipeline.contracts.topics.RecordError` with a one-line message naming the field.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from pipeline.contracts.topics import (
    CONTROL_RULES,
    DR_SIGNALS,
    PARAMS,
    PRICE_SIGNALS,
    SESSION_PLANS,
    SITE_DEMAND,
    ControlRule,
    DRSignal,
    Parameter,
    PriceSignal,
    RecordError,
    SessionPlan,
    SiteDemand,
    plan_key,
)


@contextlib.contextmanager
def _checked() -> Iterator[None]:
    """A :class:`pydantic.ValidationError` inside becomes a one-line :class:`RecordError` naming the field."""
    try:
        yield
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise RecordError(f"{where + ': ' if where else ''}{err['msg']}") from None


def _now() -> datetime:
    return datetime.now(UTC)


def dr_signal(
    site_id: str,
    *,
    curtailment_pct: float | None = None,
    limit_kw: float | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    duration_min: float | None = None,
    event_id: str | None = None,
) -> tuple[str, DRSignal]:
    """A DR event on ``utility.dr.signals``: starts at ``start`` (default now) and ends at ``end`` or
    after ``duration_min`` minutes (default 60)."""
    signal_at = _now()
    start = start or signal_at
    if end is None:
        end = start + timedelta(minutes=60 if duration_min is None else duration_min)
    with _checked():
        return DR_SIGNALS, DRSignal(
            site_id=site_id,
            dr_event_id=event_id or f"dr-{uuid.uuid4().hex[:8]}",
            curtailment_pct=curtailment_pct,
            limit_kw=limit_kw,
            event_start=start,
            event_end=end,
            signal_at=signal_at,
        )


def dr_cancel(site_id: str, event_id: str, *, now: datetime | None = None) -> tuple[str, DRSignal]:
    """Cancel DR event ``event_id`` of ``site_id``: a signal with the same id whose window ended at
    ``now`` and curtails nothing. The latest signal of an event wins (the ``active_dr`` view), so from
    ``now`` on the event is not in force, wherever and however it was announced (OpenADR 2.0b lets a
    utility cancel an event the same way, by a newer version of it)."""
    now = now or _now()
    with _checked():
        return DR_SIGNALS, DRSignal(
            site_id=site_id,
            dr_event_id=event_id,
            curtailment_pct=0.0,
            event_start=now - timedelta(seconds=1),
            event_end=now,
            signal_at=now,
        )


def control_rule(
    scope: str,
    scope_id: str,
    action: str,
    *,
    source: str = "operator",
    limit_kw: float | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    reason: str | None = None,
) -> tuple[str, ControlRule]:
    """A rule on ``control.rules``: ``action`` (cap, pause, reserve, override) by ``source`` on a site,
    node, charger or session, in force on ``[valid_from, valid_to)`` (open bounds allowed). Its id is
    ``{source}:{scope}:{scope_id}``: setting it again replaces it (see :func:`rule_id`)."""
    with _checked():
        return CONTROL_RULES, ControlRule(
            rule_id=rule_id(source, scope, scope_id),
            source=source,
            scope=scope,
            scope_id=scope_id,
            action=action,
            limit_kw=limit_kw,
            valid_from=valid_from,
            valid_to=valid_to,
            reason=reason,
            created_at=_now(),
        )


def parameter(name: str, value: float, *, reason: str | None = None) -> tuple[str, Parameter]:
    """A tunable parameter on ``pipeline.params`` (one of :data:`pipeline.contracts.topics.PARAMETERS`,
    within its bounds)."""
    with _checked():
        return PARAMS, Parameter(name=name, value=value, updated_at=_now(), reason=reason)


def session_plan(
    *,
    session_id: str | None = None,
    charge_point_id: str | None = None,
    departure_at: datetime,
    energy_needed_kwh: float | None = None,
    target_soc_pct: float | None = None,
    battery_kwh: float | None = None,
    source: str = "operator",
) -> tuple[str, SessionPlan]:
    """A plan on ``session.plans`` for one session or one charger (exactly one of the ids): it leaves at
    ``departure_at`` needing ``energy_needed_kwh`` (from the session's start) or ``target_soc_pct`` of a
    ``battery_kwh`` battery. Its key is :func:`pipeline.contracts.topics.plan_key`: setting it again
    replaces it. Raises :class:`RecordError` naming the field."""
    with _checked():
        return SESSION_PLANS, SessionPlan(
            plan_id=plan_key(session_id, charge_point_id),
            session_id=session_id,
            charge_point_id=charge_point_id,
            departure_at=departure_at,
            energy_needed_kwh=energy_needed_kwh,
            target_soc_pct=target_soc_pct,
            battery_kwh=battery_kwh,
            source=source,
            updated_at=_now(),
        )


def rule_id(source: str, scope: str, scope_id: str) -> str:
    """The key of a rule: one rule per source and scope (``control.rules``)."""
    return f"{source}:{scope}:{scope_id}"


def price_signal(
    site_id: str,
    *,
    price_per_kwh: float,
    tier: str,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    currency: str = "EUR",
    tariff_id: str = "default",
) -> tuple[str, PriceSignal]:
    """A price on ``tariff.price.signals`` valid from ``valid_from`` (default now) for one hour unless
    ``valid_to`` is given."""
    valid_from = valid_from or _now()
    with _checked():
        return PRICE_SIGNALS, PriceSignal(
            site_id=site_id,
            tariff_id=tariff_id,
            price_per_kwh=price_per_kwh,
            currency=currency,
            price_tier=tier.upper(),
            valid_from=valid_from,
            valid_to=valid_to or valid_from + timedelta(hours=1),
        )


def demand_signal(
    site_id: str,
    *,
    current_demand_kw: float,
    ev_load_kw: float = 0.0,
    demand_limit_kw: float | None = None,
    measured_at: datetime | None = None,
) -> tuple[str, SiteDemand]:
    """A site meter reading on ``bems.site.demand``."""
    with _checked():
        return SITE_DEMAND, SiteDemand(
            site_id=site_id,
            current_demand_kw=current_demand_kw,
            ev_load_kw=ev_load_kw,
            demand_limit_kw=demand_limit_kw,
            measured_at=measured_at or _now(),
        )
