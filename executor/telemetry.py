"""Which meter readings are worth publishing: a session upsert only when a field the views read has moved.

Every MeterValues folds into the session's ``ocpp.active.sessions`` upsert (:mod:`executor.sessions`), and
every upsert makes the engine evaluate the session's site again. Most readings of a charging EV move
nothing the views read: the power it draws stays where its TxProfile holds it, and only the plan views
read the energy register (a plan's remaining need), to a fraction of a kWh. So the executor publishes a
session record that differs from the last one it published only in the meter fields (``current_power_kw``,
``energy_kwh``, ``soc_pct``, ``ev_rate_kw``, ``sampled_at``, ``charger_sampled_at``) when one of these holds
(:func:`meter_publish_due`; docs/architecture.md, "Executor"):

- it is the session's first reading (the last record published has no ``sampled_at``);
- ``current_power_kw`` moved by :data:`POWER_DEADBAND_KW` or more since the last record published, or
  appeared or went away: the views read it for unmanaged chargers' load (``node_fixed_load``), the
  measured load under a breaker and a session's deviation from its setpoint (``alerts``), whose margins are
  0.5 kW and 1 kW;
- ``energy_kwh`` moved by :data:`ENERGY_DEADBAND_KWH` or ``soc_pct`` by :data:`SOC_DEADBAND_PCT` (the plan
  views read the energy; the bound keeps what the topic says close), or ``ev_rate_kw`` by
  :data:`RATE_DEADBAND_KW` (plans time a need at it), or it appeared;
- its ``sampled_at`` is the first at or after ``computed_at`` + :data:`DEVIATION_GRACE_S` of the session's
  newest setpoint: the deviation alert compares a session's power with its setpoint only from then on;
- (at the next sweep, every :data:`METER_SWEEP_S` seconds of the executor's clock) its ``sampled_at`` is
  :data:`METER_HEARTBEAT_S` or more after the last published one (the ``meter_heartbeat_s`` setting), so
  what the views see is never older than that plus a sweep while the charger reports; they call a
  session's meter stale 600 s after ``sampled_at`` (``session_telemetry``). The sweep sends the
  heartbeats of many sessions at once: the engine's cost is per evaluation, not per record.

A withheld reading is not lost: a newer reading supersedes it (and is judged against the last published
one), and when none comes for :data:`METER_QUIET_S` (clock seconds) a sweep publishes it on its own
(:meth:`MeterGate.due`, run by the executor; and at its stop). So a charger that stops reporting has its
last reading published, and its meter turns stale 600 s after that reading, exactly as if every reading
had been published. Any other field that differs (a new field, a learned cap, the topology's facts)
publishes at once, and so does a tombstone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from pydantic import BaseModel

from pipeline.contracts.topics import ACTIVE_SESSIONS, ActiveSession

__all__ = [
    "DEVIATION_GRACE_S",
    "ENERGY_DEADBAND_KWH",
    "METER_FIELDS",
    "METER_HEARTBEAT_S",
    "METER_QUIET_S",
    "METER_SWEEP_S",
    "POWER_DEADBAND_KW",
    "RATE_DEADBAND_KW",
    "SOC_DEADBAND_PCT",
    "MeterGate",
    "meter_publish_due",
]

POWER_DEADBAND_KW: Final = 0.1
"""A reading whose power differs from the last published one by less than this (kW) is not published."""
ENERGY_DEADBAND_KWH: Final = 0.5
"""... nor one whose energy differs by less than this (kWh)..."""
SOC_DEADBAND_PCT: Final = 1.0
"""... nor one whose state of charge differs by less than this (percentage points)..."""
RATE_DEADBAND_KW: Final = 0.5
"""... nor one whose ``ev_rate_kw`` (:mod:`executor.learning`) differs by less than this (kW): it rises with
every larger draw, and half a kW moves the time an hour's need takes by a few minutes..."""
METER_HEARTBEAT_S: Final = 120.0
"""... unless its ``sampled_at`` is this many seconds or more after the last published one (the default
of ``meter_heartbeat_s``; well inside the views' 600 s staleness)."""
METER_SWEEP_S: Final = 10.0
"""How often the executor publishes the withheld readings that are due (:meth:`MeterGate.due`), in seconds
of its clock: a replay whose clock runs 2880 times faster sweeps as often in simulated time, so a waiting
session's heartbeat reaches the views before they call its meter stale (600 s)."""
METER_QUIET_S: Final = 30.0
"""A withheld reading with no newer one for this many clock seconds is published on its own."""
DEVIATION_GRACE_S: Final = 60.0
"""The setpoint deviation alert looks at a session's power from this many seconds after its setpoint's
``computed_at`` (``sql/views/alerts.sql``)."""
METER_FIELDS: Final = frozenset(
    {"current_power_kw", "energy_kwh", "soc_pct", "sampled_at", "charger_sampled_at", "ev_rate_kw"}
)
"""The fields of an ``ocpp.active.sessions`` record a MeterValues changes with no more than a deadband's
effect (``ev_phases`` and ``learned_cap_kw`` change it too, and publish at once)."""


def _moved(old: float | None, new: float | None, band: float) -> bool:
    if old is None or new is None:
        return old is not new
    return abs(new - old) >= band - 1e-9


def meter_publish_due(
    published: ActiveSession,
    new: ActiveSession,
    heartbeat_s: float = METER_HEARTBEAT_S,
    setpoint_at: datetime | None = None,
) -> bool:
    """Whether ``new`` (the session after a reading) must be published at once, given ``published`` (the
    last record published for it) and ``setpoint_at`` (``computed_at`` of its newest setpoint, if any); the
    rules are in the module docstring (the heartbeat is :meth:`MeterGate.due`'s). ``heartbeat_s`` <= 0
    publishes every reading."""
    if heartbeat_s <= 0 or published.sampled_at is None or new.sampled_at is None:
        return True
    if any(getattr(published, name) != getattr(new, name) for name in _other_fields(type(new))):
        return True
    if setpoint_at is not None:
        watched_from = setpoint_at + timedelta(seconds=DEVIATION_GRACE_S)
        if published.sampled_at < watched_from <= new.sampled_at:
            return True
    return (
        _moved(published.current_power_kw, new.current_power_kw, POWER_DEADBAND_KW)
        or _moved(published.energy_kwh, new.energy_kwh, ENERGY_DEADBAND_KWH)
        or _moved(published.soc_pct, new.soc_pct, SOC_DEADBAND_PCT)
        or _moved(published.ev_rate_kw, new.ev_rate_kw, RATE_DEADBAND_KW)
    )


_OTHER: dict[type, tuple[str, ...]] = {}


def _other_fields(model: type[BaseModel]) -> tuple[str, ...]:
    fields = _OTHER.get(model)
    if fields is None:
        fields = _OTHER[model] = tuple(name for name in model.model_fields if name not in METER_FIELDS)
    return fields


class MeterGate:
    """Holds back ``ocpp.active.sessions`` upserts that :func:`meter_publish_due` finds not due; the
    :class:`executor.outbox.Outbox` asks it about every record it is given. ``setpoint_at(session_id)`` is
    the ``computed_at`` of the session's newest setpoint (or ``None``); ``monotonic`` the clock of :meth:`due`
    in seconds (the executor passes its own clock's, so a replay's compressed time counts as time).
    ``withheld`` counts the readings held back, ``flushed`` those published by :meth:`due`."""

    def __init__(
        self,
        heartbeat_s: float = METER_HEARTBEAT_S,
        setpoint_at: Callable[[str], datetime | None] = lambda session_id: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.heartbeat_s = heartbeat_s
        self.withheld = 0
        self.flushed = 0
        self._setpoint_at = setpoint_at
        self._now = monotonic
        self._published: dict[str, ActiveSession] = {}
        self._pending: dict[str, tuple[ActiveSession, float]] = {}  # withheld, by key, with when

    def admit(self, topic: str, key: str | None, record: BaseModel | None) -> bool:
        """Whether to publish ``record`` under ``key`` on ``topic`` (``None``: a tombstone, always)."""
        if topic != ACTIVE_SESSIONS or key is None:
            return True
        self._pending.pop(key, None)
        if not isinstance(record, ActiveSession):
            self._published.pop(key, None)
            return True
        last = self._published.get(key)
        if last is not None and not meter_publish_due(last, record, self.heartbeat_s, self._setpoint_at(key)):
            self.withheld += 1
            self._pending[key] = (record, self._now())
            return False
        self._published[key] = record
        return True

    def due(self, quiet_s: float = METER_QUIET_S) -> list[ActiveSession]:
        """The withheld readings to publish now, counted as published (the caller publishes them past the
        gate): those with no newer one for ``quiet_s`` clock seconds (``0``: all of them), and those whose
        ``sampled_at`` is the heartbeat or more after the last published one. Run every few seconds, it
        sends the heartbeats of many sessions together, so the engine evaluates them in one batch rather
        than one evaluation each."""
        cutoff = self._now() - quiet_s
        out = [
            record
            for record, at in self._pending.values()
            if at <= cutoff or self._heartbeat_due(self._published.get(record.session_id), record)
        ]
        for record in out:
            del self._pending[record.session_id]
            self._published[record.session_id] = record
        self.flushed += len(out)
        return out

    def _heartbeat_due(self, published: ActiveSession | None, record: ActiveSession) -> bool:
        if published is None or published.sampled_at is None or record.sampled_at is None:
            return True
        return (record.sampled_at - published.sampled_at).total_seconds() >= self.heartbeat_s
