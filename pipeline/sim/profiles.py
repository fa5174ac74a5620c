"""OCPP 1.6 charging profiles as a simulated charge point holds and evaluates them.

Kept apart from the websocket code so that the rules (replacement, stacking, which period is in force, when
the next change happens) are plain functions of time: the charger asks "what limit holds at t?" and "when does
it change next?", and sleeps until then instead of polling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

TX = "TxProfile"
TX_DEFAULT = "TxDefaultProfile"
CP_MAX = "ChargePointMaxProfile"
_RECURRENCE_S = {"Daily": 86_400.0, "Weekly": 604_800.0}


def parse_time(value: str | None) -> datetime | None:
    """An OCPP date-time string as an aware UTC datetime (naive strings are taken as UTC)."""
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """One ChargingSchedulePeriod: ``limit`` in the schedule's unit (A per phase or W) from ``start_s``."""

    start_s: float
    limit: float
    phases: int | None = None


@dataclass
class Profile:
    """An installed ChargingProfile, parsed from the snake_case payload the ocpp library hands over."""

    connector_id: int
    profile_id: int
    stack_level: int
    purpose: str
    kind: str
    unit: str  # "A" or "W"
    periods: list[Period]
    received_at: datetime
    transaction_id: int | None = None
    recurrency: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    duration_s: float | None = None
    start_schedule: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_ocpp(cls, connector_id: int, p: dict[str, Any], received_at: datetime) -> Profile:
        sched = p["charging_schedule"]
        periods = sorted(
            (
                Period(float(x["start_period"]), float(x["limit"]), x.get("number_phases"))
                for x in sched["charging_schedule_period"]
            ),
            key=lambda x: x.start_s,
        )
        duration = sched.get("duration")
        return cls(
            connector_id=connector_id,
            profile_id=int(p["charging_profile_id"]),
            stack_level=int(p["stack_level"]),
            purpose=str(p["charging_profile_purpose"]),
            kind=str(p["charging_profile_kind"]),
            unit=str(sched["charging_rate_unit"]),
            periods=periods,
            received_at=received_at,
            transaction_id=p.get("transaction_id"),
            recurrency=p.get("recurrency_kind"),
            valid_from=parse_time(p.get("valid_from")),
            valid_to=parse_time(p.get("valid_to")),
            duration_s=float(duration) if duration is not None else None,
            start_schedule=parse_time(sched.get("start_schedule")),
            raw=p,
        )

    def anchor(self, t: datetime, tx_start: datetime | None) -> datetime:
        """Start of the schedule cycle that contains ``t``.

        Relative profiles start with the transaction (or on receipt when there is none); Absolute ones at
        startSchedule (or on receipt); Recurring ones at startSchedule shifted by whole days or weeks.
        """
        if self.kind == "Relative":
            return tx_start or self.received_at
        base = self.start_schedule or self.received_at
        if self.kind == "Recurring":
            cycle = _RECURRENCE_S.get(self.recurrency or "Daily", 86_400.0)
            k = math.floor((t - base).total_seconds() / cycle)
            return base + timedelta(seconds=k * cycle)
        return base

    def period_at(self, t: datetime, tx_start: datetime | None) -> Period | None:
        """The period in force at ``t``, or None when the profile does not apply then."""
        if (self.valid_from and t < self.valid_from) or (self.valid_to and t >= self.valid_to):
            return None
        elapsed = (t - self.anchor(t, tx_start)).total_seconds()
        if elapsed < 0 or (self.duration_s is not None and elapsed >= self.duration_s):
            return None
        current = None
        for period in self.periods:
            if period.start_s <= elapsed:
                current = period
            else:
                break
        return current

    def next_change(self, t: datetime, tx_start: datetime | None) -> datetime | None:
        """The first instant after ``t`` at which this profile's limit may change."""
        anchor = self.anchor(t, tx_start)
        times = [anchor + timedelta(seconds=p.start_s) for p in self.periods]
        if self.duration_s is not None:
            times.append(anchor + timedelta(seconds=self.duration_s))
        if self.kind == "Recurring":
            times.append(anchor + timedelta(seconds=_RECURRENCE_S.get(self.recurrency or "Daily", 86_400.0)))
        times += [x for x in (self.valid_from, self.valid_to) if x is not None]
        future = [x for x in times if x > t]
        return min(future) if future else None


def period_kw(period: Period, unit: str, default_phases: int, voltage_v: float) -> float:
    """A period's limit in kW: W / 1000, or A x phases x V / 1000 (phases from the period, else the charger)."""
    if unit == "W":
        return period.limit / 1000.0
    return period.limit * (period.phases or default_phases) * voltage_v / 1000.0


class ProfileStore:
    """The profiles installed on one charge point, with the OCPP 1.6 replacement and stacking rules."""

    def __init__(self) -> None:
        self.profiles: list[Profile] = []

    def install(self, new: Profile) -> None:
        """Add ``new``, replacing any profile with its id or with its connector, purpose and stack level."""
        self.profiles = [
            p
            for p in self.profiles
            if p.profile_id != new.profile_id
            and not (
                p.connector_id == new.connector_id and p.purpose == new.purpose and p.stack_level == new.stack_level
            )
        ]
        self.profiles.append(new)

    def clear(
        self,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> int:
        """ClearChargingProfile semantics: an id matches alone, otherwise every given criterion must match.

        Returns how many profiles were removed.
        """

        def match(p: Profile) -> bool:
            if profile_id is not None:
                return p.profile_id == profile_id
            return (
                (connector_id is None or p.connector_id == connector_id)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )

        before = len(self.profiles)
        self.profiles = [p for p in self.profiles if not match(p)]
        return before - len(self.profiles)

    def drop_tx(self, connector_id: int, keep_transaction_id: int | None = None) -> None:
        """Remove the connector's TxProfiles: all of them (at transaction end), or, when
        ``keep_transaction_id`` is given, those naming another transaction."""

        def drop(p: Profile) -> bool:
            if p.connector_id != connector_id or p.purpose != TX:
                return False
            if keep_transaction_id is None:
                return True
            return p.transaction_id is not None and p.transaction_id != keep_transaction_id

        self.profiles = [p for p in self.profiles if not drop(p)]

    def in_force(
        self, purpose: str, connector_id: int, t: datetime, tx_start: datetime | None
    ) -> tuple[Profile, Period] | None:
        """The highest-stack profile of ``purpose`` on ``connector_id`` with a period in force at ``t``."""
        best: tuple[Profile, Period] | None = None
        for p in self.profiles:
            if p.purpose != purpose or p.connector_id != connector_id:
                continue
            period = p.period_at(t, tx_start)
            if period is not None and (best is None or p.stack_level > best[0].stack_level):
                best = (p, period)
        return best

    def connector_limit(
        self, connector_id: int, t: datetime, tx_start: datetime | None
    ) -> tuple[Profile, Period] | None:
        """TxProfile if one is in force, else the connector's TxDefaultProfile, else connector 0's."""
        return (
            self.in_force(TX, connector_id, t, tx_start)
            or self.in_force(TX_DEFAULT, connector_id, t, tx_start)
            or self.in_force(TX_DEFAULT, 0, t, tx_start)
        )

    def held_tx(self, connector_id: int, t: datetime, tx_start: datetime | None) -> tuple[str, float] | None:
        """(unit, limit) of the connector's TxProfile: the period in force at ``t``, else the first period of
        the highest-stack TxProfile installed; None when there is none."""
        found = self.in_force(TX, connector_id, t, tx_start)
        if found is not None:
            return found[0].unit, found[1].limit
        txs = [p for p in self.profiles if p.purpose == TX and p.connector_id == connector_id]
        if not txs:
            return None
        top = max(txs, key=lambda p: p.stack_level)
        return top.unit, top.periods[0].limit

    def next_change(self, connector_id: int, t: datetime, tx_start: datetime | None) -> datetime | None:
        """Earliest instant after ``t`` when any profile that bears on ``connector_id`` may change."""
        times = [p.next_change(t, tx_start) for p in self.profiles if p.connector_id in (0, connector_id)]
        times = [x for x in times if x is not None]
        return min(times) if times else None
