"""Topic contracts: the one place where every topic's name, key and JSON value schema is written down.

The executor and the engine never import each other; they share only these topics. A record is a
``(key, value)`` pair where the key is the entity id named in :data:`TOPICS` and the value is the JSON
form of the topic's pydantic model (``None`` is a tombstone on an upsert topic).

Units are in the field names (``_kw``, ``_a``, ``_v``, ``_pct``, ``_kwh``); timestamps are ISO-8601 UTC.
docs/architecture.md ("Topic contracts") describes each topic; this module is its definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.contracts.errors import RecordError
from pipeline.contracts.parameters import PARAMETERS, ParameterName
from pipeline.contracts.units import (
    BOUNDS,
    Amps,
    ChargerKw,
    ConnectorId,
    Kwh,
    Pct,
    PhaseRotation,
    Phases,
    SiteKw,
    Volts,
    to_utc,
)

__all__ = [
    "ActiveSession",
    "Alert",
    "ControlRule",
    "DRSignal",
    "PriceSignal",
    "PriceTier",
    "SetpointAck",
    "SetpointCommand",
    "SessionPlan",
    "SiteDemand",
    "TopicSpec",
    "TopologyNode",
    "TransactionEvent",
    "TOPICS",
    "PARAMETERS",
    "PARAMS",
    "Parameter",
    "ACTIVE_SESSIONS",
    "SITE_DEMAND",
    "PRICE_SIGNALS",
    "DR_SIGNALS",
    "SITE_TOPOLOGY",
    "CONTROL_RULES",
    "SETPOINT_COMMANDS",
    "SETPOINT_ACKS",
    "TRANSACTION_EVENTS",
    "ALERTS",
    "SESSION_PLANS",
    "BOUNDS",
    "RecordError",
    "decode",
    "dlq_topic",
    "encode",
    "plan_key",
    "session_key",
]


class _Record(BaseModel):
    """Base for topic values: unknown fields are rejected, NaN and infinities too, datetimes are normalised
    to UTC and must fall within ``BOUNDS['year_min'] .. BOUNDS['year_max']``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _toto_utc(cls, value: Any) -> Any:
        if not isinstance(value, datetime):
            return value
        if not BOUNDS["year_min"] <= value.year <= BOUNDS["year_max"]:
            raise ValueError(f"year {value.year} outside {BOUNDS['year_min']}..{BOUNDS['year_max']}")
        return to_utc(value)


def _window(start: datetime, end: datetime, days: float, what: str) -> None:
    if end <= start:
        raise ValueError(f"{what}: the end must be after the start")
    if end - start > timedelta(days=days):
        raise ValueError(f"{what}: longer than {days:g} days")


class PriceTier(str, Enum):
    """Tariff tiers of ``tariff.price.signals``."""

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
    connector_id: ConnectorId = Field(description="OCPP 1.6 connectorId, or evseId on 2.0.1")
    transaction_id: str
    site_id: str | None = None
    node_id: str | None = Field(None, description="the breaker (panel) the charger hangs on")
    rated_power_kw: float = Field(gt=0, le=BOUNDS["charger_kw"], description="EVSE rating")
    ev_max_power_kw: float | None = Field(
        None, gt=0, le=BOUNDS["charger_kw"], description="EV acceptance, when the charger reports it"
    )
    min_power_kw: ChargerKw | None = Field(
        None, description="minimum charge rate; default 6 A x ev_phases x V (IEC 61851-1)"
    )
    phases: Phases = Field(3, description="the charger's phases")
    ev_phases: Phases | None = Field(
        None,
        description="phases the EV draws on (per-phase Current.Import, NotifyEVChargingNeeds); None: the charger's",
    )
    phase_rotation: PhaseRotation | None = Field(None, description="the charger's wiring; None: RST")
    voltage_v: Volts = 230.0
    priority: int = Field(0, ge=-BOUNDS["priority"], le=BOUNDS["priority"])
    weight: float = Field(1.0, gt=0, le=BOUNDS["weight"])
    flexible: bool = Field(False, description="price tiers may slow this session (tariff shaping)")
    started_at: datetime
    current_power_kw: ChargerKw | None = None
    energy_kwh: Kwh | None = None
    soc_pct: Pct | None = None
    sampled_at: datetime | None = Field(
        None, description="when the executor received the latest reading (its own clock: the engine computes on it)"
    )
    charger_sampled_at: datetime | None = Field(
        None, description="the latest reading's timestamp on the charger's clock (MeterValue.timestamp)"
    )
    learned_cap_kw: ChargerKw | None = Field(
        None, description="what the EV has shown it takes (meter draw plus a margin); None: nothing learned"
    )
    ev_rate_kw: ChargerKw | None = Field(
        None,
        description="the rate the EV last showed it charges at (its largest draw, or its draw in the last sustained "
        "under-draw against its limit; no margin, kept through the probe); plans time the remaining need at it; "
        "None: it has not drawn yet",
    )
    departure_at: datetime | None = Field(None, description="when the EV leaves (NotifyEVChargingNeeds or a plan)")
    energy_needed_kwh: Kwh | None = Field(None, description="energy still wanted at departure_at")


class SiteDemand(_Record):
    """``bems.site.demand`` (key ``site_id``, append): the site meter, all loads including EVs."""

    site_id: str
    demand_limit_kw: float | None = Field(
        None, gt=0, le=BOUNDS["site_kw"], description="contracted site limit, if the BEMS sets one"
    )
    current_demand_kw: SiteKw = Field(description="total site load, EVs included")
    ev_load_kw: SiteKw = Field(0.0, description="the EV part of current_demand_kw")
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
    price_per_kwh: float = Field(ge=-BOUNDS["price_per_kwh"], le=BOUNDS["price_per_kwh"])
    currency: str = Field("EUR", min_length=3, max_length=3)
    price_tier: PriceTier
    valid_from: datetime
    valid_to: datetime

    @model_validator(mode="after")
    def _window(self) -> PriceSignal:
        _window(self.valid_from, self.valid_to, BOUNDS["price_slot_days"], "valid_from .. valid_to")
        return self


class DRSignal(_Record):
    """``utility.dr.signals`` (key ``site_id``, append): curtail by a percentage or to an absolute limit.

    Exactly one of ``curtailment_pct`` (0-100, reduces the site limit) and ``limit_kw`` is set; the event
    is active on ``[event_start, event_end)``.
    """

    site_id: str
    dr_event_id: str
    curtailment_pct: Pct | None = None
    limit_kw: SiteKw | None = None
    event_start: datetime
    event_end: datetime
    signal_at: datetime

    @model_validator(mode="after")
    def _one_of(self) -> DRSignal:
        if (self.curtailment_pct is None) == (self.limit_kw is None):
            raise ValueError("set exactly one of curtailment_pct and limit_kw")
        if self.event_end <= self.event_start:
            raise ValueError("event_end must be after event_start")
        _window(self.event_start, self.event_end, BOUNDS["dr_event_days"], "event_start .. event_end")
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
    limit_kw: float = Field(gt=0, le=BOUNDS["site_kw"], description="a charger's rating is at most charger_kw")
    limit_a: float | None = Field(
        None, gt=0, le=BOUNDS["current_a"], description="current rating per phase (A); None: limit_kw alone"
    )
    managed: bool = True
    phases: Phases = 3
    phase_rotation: PhaseRotation | None = Field(None, description="chargers only: the wiring; None: RST")
    voltage_v: Volts = 230.0
    connectors: int = Field(1, ge=1, le=BOUNDS["connector_id"], description="chargers only: number of connectors")
    priority: int = Field(
        0,
        ge=-BOUNDS["priority"],
        le=BOUNDS["priority"],
        description="chargers only: admission priority of its sessions (higher first)",
    )
    weight: float = Field(
        1.0, gt=0, le=BOUNDS["weight"], description="chargers only: fair-share weight of its sessions"
    )
    flexible: bool = Field(False, description="chargers only: price tiers may slow its sessions (tariff shaping)")
    default_departure_min: int | None = Field(
        None,
        ge=0,
        le=1439,
        description="sites and chargers: the daily departure of their sessions without a plan of their own "
        "(minute of the day, UTC; the next one after the session starts)",
    )
    default_energy_kwh: Kwh | None = Field(
        None, description="sites and chargers: the energy their sessions need without a plan of their own"
    )

    @model_validator(mode="after")
    def _charger_rating(self) -> TopologyNode:
        if self.kind == "charger" and self.limit_kw > BOUNDS["charger_kw"]:
            raise ValueError(f"limit_kw: a charger's rating must be less than or equal to {BOUNDS['charger_kw']:g}")
        return self


RULE_SOURCES = {"safety": 4, "utility": 3, "partner": 2, "operator": 1}
"""Rule precedence, highest first: safety > utility > partner > operator (docs/architecture.md, "Rules")."""


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
    limit_kw: SiteKw | None = None
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


PLAN_SOURCES = ("driver", "operator", "fleet")
"""Who set a plan on ``session.plans``: the driver (an app), an operator (``pipeline plan set``) or a fleet
management system. All rank alike, below the EV's own figures on ``ocpp.active.sessions``."""


class SessionPlan(_Record):
    """``session.plans`` (key ``plan_id``, upsert; a tombstone withdraws the plan): when an EV leaves and
    what it needs by then, from the driver or the operator.

    ``plan_id`` is ``"session:{session_id}"`` (one session) or ``"charger:{charge_point_id}"`` (whatever
    session runs on that charger and started before ``departure_at``); exactly one of the two ids is
    set. The need is ``energy_needed_kwh`` (counted from the session's start: what ``energy_kwh`` on
    ``ocpp.active.sessions`` counts) or ``target_soc_pct`` with ``battery_kwh`` (the SoC the EV reports
    gives what is left). ``battery_kwh`` may come with ``energy_needed_kwh`` too: with the SoC the EV
    reports, it tells how much of the need falls where the EV's acceptance tapers (above about 80 % SoC),
    so the plan starts early enough. Trust, highest first: the EV's own ``departure_at`` /
    ``energy_needed_kwh`` (``ocpp.active.sessions``, OCPP 2.0.1 NotifyEVChargingNeeds), a session plan, a
    charger plan, the site file's defaults (docs/architecture.md, "Plans").
    """

    plan_id: str
    session_id: str | None = Field(None, min_length=1)
    charge_point_id: str | None = Field(None, min_length=1)
    departure_at: datetime
    energy_needed_kwh: Kwh | None = None
    target_soc_pct: Pct | None = None
    battery_kwh: Kwh | None = Field(None, gt=0)
    source: Literal["driver", "operator", "fleet"] = "operator"
    updated_at: datetime

    @model_validator(mode="after")
    def _consistent(self) -> SessionPlan:
        if (self.session_id is None) == (self.charge_point_id is None):
            raise ValueError("set exactly one of session_id and charge_point_id")
        if self.plan_id != plan_key(self.session_id, self.charge_point_id):
            raise ValueError("plan_id must be 'session:{session_id}' or 'charger:{charge_point_id}'")
        if (self.energy_needed_kwh is None) == (self.target_soc_pct is None):
            raise ValueError("set exactly one of energy_needed_kwh and target_soc_pct")
        if self.target_soc_pct is not None and self.battery_kwh is None:
            raise ValueError("target_soc_pct needs battery_kwh")
        _window(self.updated_at, self.departure_at, BOUNDS["plan_days"], "updated_at .. departure_at")
        return self


def session_key(charge_point_id: str, transaction_id: object) -> str:
    """A session's ``session_id`` (the key of ``ocpp.active.sessions`` and ``ocpp.setpoint.commands``):
    ``{charge_point_id}-{transaction_id}``, the OCPP transaction id as the charger or central system gave it."""
    return f"{charge_point_id}-{transaction_id}"


def plan_key(session_id: str | None, charge_point_id: str | None) -> str:
    """The key of a plan on ``session.plans``: ``session:{id}``, else ``charger:{id}``."""
    return f"session:{session_id}" if session_id is not None else f"charger:{charge_point_id}"


class SetpointCommand(_Record):
    """``ocpp.setpoint.commands`` (key ``session_id``, upsert sink; tombstone when the session ends).

    ``setpoint_a`` is per phase: ``setpoint_kw * 1000 / (phases * voltage_v)``, ``phases`` being the phases
    the EV draws on (``ActiveSession.ev_phases``, else the charger's), the ``numberPhases`` the executor
    sends. ``node_limit_kw`` is the EV headroom of ``node_id`` (the breaker the charger hangs on) and
    ``site_limit_kw`` that of the whole site, so the executor can keep the sums of what is in force and in
    flight within both.

    ``next_change_at`` / ``next_setpoint_kw`` / ``next_setpoint_a`` (all three or none) are the next known
    decrease within the schedule horizon, which the executor sends ahead as a later chargingSchedulePeriod
    (docs/architecture.md, "Schedule periods"); a next value above the current one is refused, since only
    decreases are scheduled. Raises ``ValueError`` (``RecordError`` through :func:`decode`) otherwise.
    """

    session_id: str
    charge_point_id: str
    connector_id: ConnectorId
    transaction_id: str
    site_id: str
    node_id: str | None = None
    setpoint_kw: ChargerKw
    setpoint_a: Amps
    phases: Phases
    voltage_v: Volts
    node_limit_kw: SiteKw | None = Field(None, description="None: no headroom known (increases are held)")
    site_limit_kw: SiteKw | None = Field(None, description="None: no headroom known (increases are held)")
    binding: str = Field(description="what limited it: cap, tariff, stale, paused, a node id, dr or a rule id")
    price_tier: PriceTier | None = None
    computed_at: datetime
    next_change_at: datetime | None = Field(
        None, description="when the next known decrease starts (sql/views/session_next_period.sql); None: none known"
    )
    next_setpoint_kw: ChargerKw | None = Field(None, description="the setpoint from next_change_at on")
    next_setpoint_a: Amps | None = Field(None, description="the same per phase, A")

    @model_validator(mode="after")
    def _next_period(self) -> SetpointCommand:
        nexts = (self.next_change_at, self.next_setpoint_kw, self.next_setpoint_a)
        if any(v is None for v in nexts) and any(v is not None for v in nexts):
            raise ValueError("next_change_at, next_setpoint_kw and next_setpoint_a are set together or not at all")
        if self.next_setpoint_kw is not None and self.next_setpoint_kw > self.setpoint_kw:
            raise ValueError("next_setpoint_kw: only a decrease is scheduled ahead (at most setpoint_kw)")
        if self.next_setpoint_a is not None and self.next_setpoint_a > self.setpoint_a:
            raise ValueError("next_setpoint_a: only a decrease is scheduled ahead (at most setpoint_a)")
        return self


class SetpointAck(_Record):
    """``ocpp.setpoint.acks`` (key ``charge_point_id``, append): one record per profile call the executor made.

    ``purpose`` is ``Tx`` (a setpoint's TxProfile), ``TxDefault``, ``StationMax`` (the safe-share station
    maximum) or ``StationMaxLift`` (its lift while setpoints are fresh); ``connector_id`` 0 is station-wide.
    """

    charge_point_id: str
    connector_id: ConnectorId
    session_id: str | None = None
    action: str = "SetChargingProfile"
    purpose: str | None = None
    setpoint_kw: ChargerKw | None = None
    limit: float | None = Field(None, ge=0, le=BOUNDS["limit_w"], description="A per phase or W, as the unit says")
    charging_rate_unit: Literal["A", "W"] | None = None
    status: Literal["Accepted", "Rejected", "NotSupported", "CallError", "Timeout"]
    error: str | None = None
    computed_at: datetime | None = None
    sent_at: datetime
    answered_at: datetime | None = None


TRANSACTION_EVENT_TYPES = ("started", "ended")


class TransactionEvent(_Record):
    """``ocpp.transaction.events`` (key ``session_id``, append): a transaction's start and end, kept as history.

    Published by the executor: ``started`` at StartTransaction (OCPP 1.6 section 6.45) or TransactionEvent
    ``Started`` (OCPP 2.0.1 E01), ``ended`` at StopTransaction (1.6 section 6.49) or TransactionEvent
    ``Ended`` (2.0.1 E06). ``event_id`` is ``"{session_id}:{event_type}"``, so a record delivered twice is
    recognisably the same event. ``meter_start_kwh`` / ``meter_stop_kwh`` are the charger's energy register
    (1.6 ``meterStart`` / ``meterStop`` in Wh, 2.0.1 ``Energy.Active.Import.Register``, here in kWh); the
    final reading is the stop message's own when it carries one, else the last meter value. ``reason`` is
    1.6 ``StopTransaction.reason`` or 2.0.1 ``transactionInfo.stoppedReason`` (``None``: not given, which
    both versions read as ``Local``). ``binding`` is what limited the session's setpoint for the longest
    time (as on ``ocpp.setpoint.commands``), ``None`` when it never had one. ``started_at`` and ``ended_at``
    are the charger's timestamps, ``recorded_at`` the executor's clock when it received the message.
    """

    event_id: str
    event_type: Literal["started", "ended"]
    session_id: str
    charge_point_id: str
    connector_id: ConnectorId
    transaction_id: str
    site_id: str | None = None
    node_id: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    meter_start_kwh: float | None = Field(None, ge=0, le=BOUNDS["meter_register_kwh"])
    meter_stop_kwh: float | None = Field(None, ge=0, le=BOUNDS["meter_register_kwh"])
    energy_kwh: Kwh | None = Field(None, description="delivered in the session (ended only)")
    peak_power_kw: ChargerKw | None = Field(None, description="the highest power reported in the session (ended only)")
    reason: str | None = Field(None, max_length=64)
    binding: str | None = Field(None, max_length=200)
    recorded_at: datetime

    @model_validator(mode="after")
    def _consistent(self) -> TransactionEvent:
        if self.event_id != f"{self.session_id}:{self.event_type}":
            raise ValueError("event_id must be '{session_id}:{event_type}'")
        if (self.event_type == "ended") != (self.ended_at is not None):
            raise ValueError("ended_at is required for an ended event, and not allowed for a started one")
        return self


class Alert(_Record):
    """``pipeline.alerts`` (key ``alert_id``, upsert; a tombstone clears the alert).

    ``alert_id`` is ``"{kind}:{subject_id}"``. Kinds: ``setpoint_deviation`` (a session draws well above
    its setpoint a minute after it was set), ``node_over_limit`` (measured load above a breaker's limit),
    ``stale_session_meter``, ``stale_site_meter``, ``site_meter_missing`` (a site with no meter reading
    at all: its building load counts as 0), ``topology_too_deep`` (a node below depth 5),
    ``plan_at_risk`` (a session's plan can no longer be met: its remaining energy at its cap takes longer
    than the time left before its departure; ``value_kw`` is the power it would need, ``limit_kw`` its cap) and
    ``clock_skew`` (a charger's clock differs from the executor's by more than the
    ``alert.clock_skew.threshold_s`` parameter; its subject is the charger).
    """

    alert_id: str
    kind: Literal[
        "setpoint_deviation",
        "node_over_limit",
        "stale_session_meter",
        "stale_site_meter",
        "site_meter_missing",
        "topology_too_deep",
        "plan_at_risk",
        "clock_skew",
    ]
    severity: Literal["warning", "critical"]
    site_id: str | None = None
    subject_id: str
    value_kw: float | None = Field(None, ge=-BOUNDS["site_kw"], le=BOUNDS["site_kw"])
    limit_kw: float | None = Field(None, ge=-BOUNDS["site_kw"], le=BOUNDS["site_kw"])
    since: datetime | None = None
    message: str


class Parameter(_Record):
    """``pipeline.params`` (key ``name``, upsert; a tombstone returns the parameter to its default).

    ``name`` is one of :data:`PARAMETERS`; ``value`` must lie within that parameter's own bounds (a
    :class:`ValueError` names them).
    """

    name: ParameterName
    value: float = Field(
        ge=0, le=BOUNDS["site_kw"], description="within the parameter's own bounds (PARAMETERS); all are >= 0"
    )
    updated_at: datetime
    reason: str | None = None

    @model_validator(mode="after")
    def _within_bounds(self) -> Parameter:
        _, low, high = PARAMETERS[self.name]
        if not low <= self.value <= high:  # a custom error: its message is shown as is, with no "Value error, "
            raise PydanticCustomError("parameter_bounds", f"value: {self.name} must be between {low:g} and {high:g}")
        return self


# The topic names: code names a topic by these constants, never by a string of its own.
ACTIVE_SESSIONS = "ocpp.active.sessions"
SITE_DEMAND = "bems.site.demand"
PRICE_SIGNALS = "tariff.price.signals"
DR_SIGNALS = "utility.dr.signals"
SITE_TOPOLOGY = "site.topology"
CONTROL_RULES = "control.rules"
SETPOINT_COMMANDS = "ocpp.setpoint.commands"
SETPOINT_ACKS = "ocpp.setpoint.acks"
TRANSACTION_EVENTS = "ocpp.transaction.events"
ALERTS = "pipeline.alerts"
PARAMS = "pipeline.params"
SESSION_PLANS = "session.plans"


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
        TopicSpec(ACTIVE_SESSIONS, "session_id", "upsert", ActiveSession),
        TopicSpec(SITE_DEMAND, "site_id", "append", SiteDemand),
        TopicSpec(PRICE_SIGNALS, "site_id", "append", PriceSignal),
        TopicSpec(DR_SIGNALS, "site_id", "append", DRSignal),
        TopicSpec(SITE_TOPOLOGY, "node_id", "upsert", TopologyNode),
        TopicSpec(CONTROL_RULES, "rule_id", "upsert", ControlRule),
        TopicSpec(SETPOINT_COMMANDS, "session_id", "upsert", SetpointCommand),
        TopicSpec(SETPOINT_ACKS, "charge_point_id", "append", SetpointAck),
        TopicSpec(TRANSACTION_EVENTS, "session_id", "append", TransactionEvent),
        TopicSpec(ALERTS, "alert_id", "upsert", Alert),
        TopicSpec(PARAMS, "name", "upsert", Parameter),
        TopicSpec(SESSION_PLANS, "plan_id", "upsert", SessionPlan),
    )
}


def dlq_topic(topic: str) -> str:
    """The dead-letter topic for ``topic``: records that failed to decode land there unchanged."""
    return f"{topic}.dlq"


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
    except Exception as exc:
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
    except Exception as exc:
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
