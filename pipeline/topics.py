"""Topic contracts: the one place where every topic's name, key and JSON value schema is written down.

The executor and the engine never import each other; they share only these topics. A record is a
``(key, value)`` pair where the key is the entity id named in :data:`TOPICS` and the value is the JSON
form of the topic's pydantic model (``None`` is a tombstone on an upsert topic).

Units are in the field names (``_kw``, ``_a``, ``_v``, ``_pct``, ``_kwh``); timestamps are ISO-8601 UTC.
Names follow the seed tutorial and ``DESIGN.md`` ("Topic contracts").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ActiveSession",
    "Alert",
    "ControlRule",
    "DRSignal",
    "PriceSignal",
    "PriceTier",
    "SetpointAck",
    "SetpointCommand",
    "SiteDemand",
    "TopicSpec",
    "TopologyNode",
    "TOPICS",
    "RecordError",
    "decode",
    "dlq_topic",
    "encode",
]


def _utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive input is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class _Record(BaseModel):
    """Base for topic values: unknown fields are rejected, datetimes are normalised to UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _to_utc(cls, value: Any) -> Any:
        return _utc(value) if isinstance(value, datetime) else value


class PriceTier(str, Enum):
    """Tariff tiers of ``tariff.price.signals`` (DESIGN.md)."""

    OFF_PEAK = "OFF_PEAK"
    MID_PEAK = "MID_PEAK"
    ON_PEAK = "ON_PEAK"
    CRITICAL_PEAK = "CRITICAL_PEAK"


class ActiveSession(_Record):
    """``ocpp.active.sessions`` (key ``session_id``, upsert, tombstone at session end).

    Published by the executor at StartTransaction and on every MeterValues; the charger's static facts
    (site, node, rating, phases, voltage) come from ``site.topology``.
    """

    session_id: str
    charge_point_id: str
    connector_id: int = Field(ge=0, description="OCPP 1.6 connectorId, or evseId on 2.0.1")
    transaction_id: str
    site_id: str | None = None
    node_id: str | None = Field(None, description="the breaker (panel) the charger hangs on")
    rated_power_kw: float = Field(gt=0, description="EVSE rating")
    ev_max_power_kw: float | None = Field(None, gt=0, description="EV acceptance, when the charger reports it")
    min_power_kw: float | None = Field(None, ge=0, description="minimum charge rate; default 6 A x phases x V")
    phases: int = Field(3, ge=1, le=3)
    voltage_v: float = Field(230.0, gt=0)
    priority: int = 0
    weight: float = Field(1.0, gt=0)
    flexible: bool = Field(False, description="price tiers may slow this session (tariff shaping)")
    started_at: datetime
    current_power_kw: float | None = Field(None, ge=0)
    energy_kwh: float | None = Field(None, ge=0)
    soc_pct: float | None = Field(None, ge=0, le=100)
    sampled_at: datetime | None = None


class SiteDemand(_Record):
    """``bems.site.demand`` (key ``site_id``, append): the site meter, all loads including EVs."""

    site_id: str
    demand_limit_kw: float | None = Field(None, gt=0, description="contracted site limit, if the BEMS sets one")
    current_demand_kw: float = Field(ge=0, description="total site load, EVs included")
    ev_load_kw: float = Field(0.0, ge=0, description="the EV part of current_demand_kw")
    measured_at: datetime

    @model_validator(mode="after")
    def _ev_within_total(self) -> SiteDemand:
        if self.ev_load_kw > self.current_demand_kw + 1e-6:
            raise ValueError("ev_load_kw cannot exceed current_demand_kw (it is part of it)")
        return self


class PriceSignal(_Record):
    """``tariff.price.signals`` (key ``site_id``, append): a price valid on ``[valid_from, valid_to)``."""

    site_id: str
    tariff_id: str = "default"
    price_per_kwh: float
    currency: str = Field("EUR", min_length=3, max_length=3)
    price_tier: PriceTier
    valid_from: datetime
    valid_to: datetime

    @model_validator(mode="after")
    def _window(self) -> PriceSignal:
        if self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        return self


class DRSignal(_Record):
    """``utility.dr.signals`` (key ``site_id``, append): curtail by a percentage or to an absolute limit.

    Exactly one of ``curtailment_pct`` (0-100, reduces the site limit) and ``limit_kw`` is set; the event
    is active on ``[event_start, event_end)``.
    """

    site_id: str
    dr_event_id: str
    curtailment_pct: float | None = Field(None, ge=0, le=100)
    limit_kw: float | None = Field(None, ge=0)
    event_start: datetime
    event_end: datetime
    signal_at: datetime

    @model_validator(mode="after")
    def _one_of(self) -> DRSignal:
        if (self.curtailment_pct is None) == (self.limit_kw is None):
            raise ValueError("set exactly one of curtailment_pct and limit_kw")
        if self.event_end <= self.event_start:
            raise ValueError("event_end must be after event_start")
        return self


class TopologyNode(_Record):
    """``site.topology`` (key ``node_id``, upsert): the breaker tree, and the chargers as its leaves.

    ``kind='site'`` is the grid connection (its ``limit_kw`` is the main breaker or contracted limit),
    ``kind='panel'`` a sub-panel, ``kind='charger'`` a charge point whose ``limit_kw`` is its rating.
    """

    node_id: str
    site_id: str
    parent_id: str | None = None
    kind: Literal["site", "panel", "charger"]
    limit_kw: float = Field(gt=0)
    managed: bool = True
    phases: int = Field(3, ge=1, le=3)
    voltage_v: float = Field(230.0, gt=0)
    connectors: int = Field(1, ge=1, description="chargers only: number of connectors")


RULE_SOURCES = {"safety": 4, "utility": 3, "partner": 2, "operator": 1}
"""Rule precedence, highest first (issue 5): safety > utility > partner > operator."""


class ControlRule(_Record):
    """``control.rules`` (key ``rule_id``, upsert; a tombstone withdraws the rule).

    ``rule_id`` must be ``"{source}:{scope}:{scope_id}"``, so there is one rule per source and scope.
    Actions: ``cap`` (``limit_kw`` on a session or charger; on a node or site it lowers the breaker limit),
    ``pause`` (sessions get 0), ``reserve`` (hold ``limit_kw`` of headroom for an idle charger) and
    ``override`` (a session or charger runs at ``limit_kw``, above caps and pauses of lower precedence).
    The rule is in force on ``[valid_from, valid_to)``; either bound may be open.
    """

    rule_id: str
    source: Literal["safety", "utility", "partner", "operator"]
    scope: Literal["site", "node", "charger", "session"]
    scope_id: str = Field(min_length=1)
    action: Literal["cap", "pause", "reserve", "override"]
    limit_kw: float | None = Field(None, ge=0)
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    reason: str | None = None
    created_at: datetime

    @model_validator(mode="after")
    def _consistent(self) -> ControlRule:
        if self.rule_id != f"{self.source}:{self.scope}:{self.scope_id}":
            raise ValueError("rule_id must be '{source}:{scope}:{scope_id}' (one rule per source and scope)")
        if (self.action == "pause") != (self.limit_kw is None):
            raise ValueError("limit_kw is required for cap, reserve and override, and not allowed for pause")
        if self.action == "reserve" and self.scope != "charger":
            raise ValueError("reserve holds headroom for a charger: scope must be charger")
        if self.action == "override" and self.scope not in ("session", "charger"):
            raise ValueError("override applies to a session or a charger")
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        return self


class SetpointCommand(_Record):
    """``ocpp.setpoint.commands`` (key ``session_id``, upsert sink; tombstone when the session ends).

    ``setpoint_a`` is per phase: ``setpoint_kw * 1000 / (phases * voltage_v)``. ``node_limit_kw`` is the
    EV headroom of ``node_id`` (the breaker the charger hangs on) and ``site_limit_kw`` that of the whole
    site, so the executor can keep the sums of what is in force and in flight within both.
    """

    session_id: str
    charge_point_id: str
    connector_id: int
    transaction_id: str
    site_id: str
    node_id: str | None = None
    setpoint_kw: float = Field(ge=0)
    setpoint_a: float = Field(ge=0)
    phases: int = Field(ge=1, le=3)
    voltage_v: float = Field(gt=0)
    node_limit_kw: float | None = Field(None, ge=0)
    site_limit_kw: float | None = Field(None, ge=0)
    binding: str = Field(description="what limited it: cap, tariff, stale, paused, a node id, dr or a rule id")
    price_tier: PriceTier | None = None
    computed_at: datetime


class SetpointAck(_Record):
    """``ocpp.setpoint.acks`` (key ``charge_point_id``, append): one record per profile call the executor made.

    ``purpose`` is ``Tx`` (a setpoint's TxProfile), ``TxDefault``, ``StationMax`` (the safe-share station
    maximum) or ``StationMaxLift`` (its lift while setpoints are fresh); ``connector_id`` 0 is station-wide.
    """

    charge_point_id: str
    connector_id: int
    session_id: str | None = None
    action: str = "SetChargingProfile"
    purpose: str | None = None
    setpoint_kw: float | None = None
    limit: float | None = None
    charging_rate_unit: Literal["A", "W"] | None = None
    status: Literal["Accepted", "Rejected", "NotSupported", "CallError", "Timeout"]
    error: str | None = None
    computed_at: datetime | None = None
    sent_at: datetime
    answered_at: datetime | None = None


class Alert(_Record):
    """``pipeline.alerts`` (key ``alert_id``, upsert; a tombstone clears the alert).

    ``alert_id`` is ``"{kind}:{subject_id}"``. Kinds: ``setpoint_deviation`` (a session draws well above
    its setpoint a minute after it was set), ``node_over_limit`` (measured load above a breaker's limit),
    ``stale_session_meter``, ``stale_site_meter`` and ``topology_too_deep`` (a node below depth 5).
    """

    alert_id: str
    kind: Literal["setpoint_deviation", "node_over_limit", "stale_session_meter", "stale_site_meter",
                  "topology_too_deep"]
    severity: Literal["warning", "critical"]
    site_id: str | None = None
    subject_id: str
    value_kw: float | None = None
    limit_kw: float | None = None
    since: datetime | None = None
    message: str


@dataclass(frozen=True)
class TopicSpec:
    """A topic's contract: ``key`` names the model field used as the record key."""

    name: str
    key: str
    kind: Literal["upsert", "append"]
    model: type[_Record]


TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec("ocpp.active.sessions", "session_id", "upsert", ActiveSession),
        TopicSpec("bems.site.demand", "site_id", "append", SiteDemand),
        TopicSpec("tariff.price.signals", "site_id", "append", PriceSignal),
        TopicSpec("utility.dr.signals", "site_id", "append", DRSignal),
        TopicSpec("site.topology", "node_id", "upsert", TopologyNode),
        TopicSpec("control.rules", "rule_id", "upsert", ControlRule),
        TopicSpec("ocpp.setpoint.commands", "session_id", "upsert", SetpointCommand),
        TopicSpec("ocpp.setpoint.acks", "charge_point_id", "append", SetpointAck),
        TopicSpec("pipeline.alerts", "alert_id", "upsert", Alert),
    )
}


def dlq_topic(topic: str) -> str:
    """The dead-letter topic for ``topic``: records that failed to decode land there unchanged."""
    return f"{topic}.dlq"


class RecordError(ValueError):
    """A record that does not fit its topic's contract (bad JSON, wrong shape, wrong key)."""


def encode(record: _Record) -> bytes:
    """Serialise a topic model to its JSON value bytes (ISO-8601 UTC timestamps, no nulls dropped)."""
    return record.model_dump_json().encode()


def decode(topic: str, key: str | None, value: bytes | None) -> _Record | None:
    """Parse and validate a record of ``topic``; ``None`` for a tombstone.

    Raises :class:`RecordError` when the value is not JSON, does not validate against the topic's
    model, or its key field differs from the record key.
    """
    spec = TOPICS.get(topic)
    if spec is None:
        raise RecordError(f"unknown topic {topic!r}")
    if value is None:
        if spec.kind != "upsert":
            raise RecordError(f"tombstone on append topic {topic!r}")
        return None
    try:
        data = json.loads(value, parse_constant=_refuse_constant)
    except RecordError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one record is that record's dead letter:
        # JSONDecodeError, UnicodeDecodeError, ValueError past the int-string limit, RecursionError ...
        raise RecordError(f"not JSON: {type(exc).__name__}: {_short(exc)}") from exc
    if not isinstance(data, dict):
        raise RecordError("value is not a JSON object")
    try:
        record = spec.model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        raise RecordError(f"{where}: {first['msg']}") from exc
    except Exception as exc:  # noqa: BLE001 - a validator that fails in an unforeseen way is still one record
        raise RecordError(f"invalid: {type(exc).__name__}: {_short(exc)}") from exc
    if key is not None and str(getattr(record, spec.key)) != key:
        raise RecordError(f"key {key!r} does not match {spec.key}={getattr(record, spec.key)!r}")
    return record


def _refuse_constant(name: str) -> float:
    """``json.loads`` hook for the non-standard ``NaN``, ``Infinity`` and ``-Infinity`` (RFC 8259 has none)."""
    raise RecordError(f"not JSON: {name} is not a number")


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."
