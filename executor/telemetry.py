"""Which meter readings are worth publishing: a session upsert only when a field the views read has moved.

Every MeterValues folds into the session's ``ocpp.active.sessions`` upsert (:mod:`executor.sessions`), and
every upsert makes the engine evaluate the session's site again. Most readings of a charging EV move
nothing the views read: the power it draws stays where its TxProfile holds it, and the views do not read
the energy register or the state of charge at all. So the executor publishes a session record that differs
from the last one it published only in the meter fields (``current_power_kw``, ``energy_kwh``, ``soc_pct``,
``sampled_at``) when one of these holds (:func:`meter_publish_due`; docs/architecture.md, "Executor"):

- it is the session's first reading (the last record published has no ``sampled_at``);
- ``current_power_kw`` moved by :data:`POWER_DEADBAND_KW` or more since the last record published, or
  appeared or went away: the views read it for unmanaged chargers' load (``node_fixed_load``), the
  measured load under a breaker and a session's deviation from its setpoint (``alerts``), whose margins are
  0.5 kW and 1 kW;
- ``energy_kwh`` moved by :data:`ENERGY_DEADBAND_KWH` or ``soc_pct`` by :data:`SOC_DEADBAND_PCT` (no view
  reads them today; the bound keeps what the topic says close for other readers);
- its ``sampled_at`` is :data:`METER_HEARTBEAT_S` or more after the last published one: the views call a
  session's meter stale 600 s after ``sampled_at`` (``session_telemetry``), so a charger that keeps
  reporting is never called stale, and one that stops is called stale at most the heartbeat early (the
  safe side: a stale session is held at what its charger last accepted and counted as fixed load).

Any other field that differs (a new field, a learned cap, the topology's facts) publishes at once, and so
does a tombstone; a withheld reading is superseded by the next one, never queued.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel

from pipeline.contracts.topics import ACTIVE_SESSIONS, ActiveSession

__all__ = [
    "ENERGY_DEADBAND_KWH",
    "METER_FIELDS",
    "METER_HEARTBEAT_S",
    "POWER_DEADBAND_KW",
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
METER_HEARTBEAT_S: Final = 60.0
"""... unless its ``sampled_at`` is this many seconds or more after the last published one."""
METER_FIELDS: Final = frozenset({"current_power_kw", "energy_kwh", "soc_pct", "sampled_at"})
"""The fields of an ``ocpp.active.sessions`` record a MeterValues changes."""


def _moved(old: float | None, new: float | None, band: float) -> bool:
    if old is None or new is None:
        return old is not new
    return abs(new - old) >= band - 1e-9


def meter_publish_due(published: ActiveSession, new: ActiveSession, heartbeat_s: float = METER_HEARTBEAT_S) -> bool:
    """Whether ``new`` (the session after a reading) must be published, given ``published`` (the last
    record published for it); the rules are in the module docstring. ``heartbeat_s`` <= 0 publishes every
    reading."""
    if heartbeat_s <= 0 or published.sampled_at is None or new.sampled_at is None:
        return True
    if any(getattr(published, name) != getattr(new, name) for name in _other_fields(type(new))):
        return True
    if (new.sampled_at - published.sampled_at).total_seconds() >= heartbeat_s:
        return True
    return (
        _moved(published.current_power_kw, new.current_power_kw, POWER_DEADBAND_KW)
        or _moved(published.energy_kwh, new.energy_kwh, ENERGY_DEADBAND_KWH)
        or _moved(published.soc_pct, new.soc_pct, SOC_DEADBAND_PCT)
    )


_OTHER: dict[type, tuple[str, ...]] = {}


def _other_fields(model: type[BaseModel]) -> tuple[str, ...]:
    fields = _OTHER.get(model)
    if fields is None:
        fields = _OTHER[model] = tuple(name for name in model.model_fields if name not in METER_FIELDS)
    return fields


class MeterGate:
    """Holds back ``ocpp.active.sessions`` upserts that :func:`meter_publish_due` finds not due; the
    :class:`executor.outbox.Outbox` asks it about every record it is given. ``withheld`` counts what it
    held back."""

    def __init__(self, heartbeat_s: float = METER_HEARTBEAT_S) -> None:
        self.heartbeat_s = heartbeat_s
        self.withheld = 0
        self._published: dict[str, ActiveSession] = {}

    def admit(self, topic: str, key: str | None, record: BaseModel | None) -> bool:
        """Whether to publish ``record`` under ``key`` on ``topic`` (``None``: a tombstone, always)."""
        if topic != ACTIVE_SESSIONS or key is None:
            return True
        if not isinstance(record, ActiveSession):
            self._published.pop(key, None)
            return True
        last = self._published.get(key)
        if last is not None and not meter_publish_due(last, record, self.heartbeat_s):
            self.withheld += 1
            return False
        self._published[key] = record
        return True
