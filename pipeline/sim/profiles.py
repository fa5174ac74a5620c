"""Charging profiles as a simulated station holds and evaluates them, in neither OCPP version's shapes.

OCPP 1.6 (section 3.13, "Smart Charging") and OCPP 2.0.1 (K01, K08) describe the same model: profiles of a
purpose (TxProfile, TxDefaultProfile and a station-wide cap), stacked by stackLevel, each a schedule of
periods in A per phase or W. The version adapters (:mod:`pipeline.sim.v16`, :mod:`pipeline.sim.v201`)
translate their messages into the :class:`Profile` here; the station asks "what limit holds at t?" and "when
does it change next?" as plain functions of time, and sleeps until then instead of polling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

__all__ = [
    "CP_MAX",
    "STATION_MAX",
    "TX",
    "TX_DEFAULT",
    "Period",
    "Profile",
    "ProfileKind",
    "ProfileStore",
    "Purpose",
    "RateUnit",
    "Recurrency",
    "TransactionId",
    "period_kw",
]

Purpose = Literal["TxProfile", "TxDefaultProfile", "StationMaxProfile"]
"""What a profile limits: one transaction, every transaction by default, or the whole station."""
TX: Final = "TxProfile"
TX_DEFAULT: Final = "TxDefaultProfile"
STATION_MAX: Final = "StationMaxProfile"
"""The station-wide cap: ChargePointMaxProfile in OCPP 1.6, ChargingStationMaxProfile in 2.0.1."""
CP_MAX: Final = STATION_MAX
"""The 1.6 name of :data:`STATION_MAX`."""

RateUnit = Literal["A", "W"]
"""chargingRateUnit: A per phase or W (both versions)."""
ProfileKind = Literal["Absolute", "Relative", "Recurring"]
"""chargingProfileKind (both versions)."""
Recurrency = Literal["Daily", "Weekly"]
"""recurrencyKind (both versions)."""
TransactionId = int | str
"""A transaction id: an integer the central system gives (1.6), a string the station makes (2.0.1 E01)."""

_RECURRENCE_S: dict[Recurrency, float] = {"Daily": 86_400.0, "Weekly": 604_800.0}


@dataclass(frozen=True)
class Period:
    """One ChargingSchedulePeriod: ``limit`` in the schedule's unit (A per phase or W) from ``start_s``
    seconds after the schedule start; ``phases`` is numberPhases (None: the station's)."""

    start_s: float
    limit: float
    phases: int | None = None


@dataclass
class Profile:
    """An installed charging profile with its first (in 1.6 only) charging schedule.

    ``connector_id`` is the connector (1.6) or EVSE (2.0.1) it was set on, 0 for the whole station;
    ``periods`` are sorted by start; ``duration_s`` and ``start_schedule`` are the schedule's; ``received_at``
    anchors Relative profiles without a transaction and schedules without a startSchedule.
    """

    connector_id: int
    profile_id: int
    stack_level: int
    purpose: Purpose
    kind: ProfileKind
    unit: RateUnit
    periods: list[Period]
    received_at: datetime
    transaction_id: TransactionId | None = None
    recurrency: Recurrency | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    duration_s: float | None = None
    start_schedule: datetime | None = None

    def anchor(self, t: datetime, tx_start: datetime | None) -> datetime:
        """Start of the schedule cycle that contains ``t``.

        Relative profiles start with the transaction (or on receipt when there is none); Absolute ones at
        startSchedule (or on receipt); Recurring ones at startSchedule shifted by whole days or weeks.
        """
        if self.kind == "Relative":
            return tx_start or self.received_at
        base = self.start_schedule or self.received_at
        if self.kind == "Recurring":
            cycle = _RECURRENCE_S[self.recurrency or "Daily"]
            k = math.floor((t - base).total_seconds() / cycle)
            return base + timedelta(seconds=k * cycle)
        return base

    def period_at(self, t: datetime, tx_start: datetime | None) -> Period | None:
        """The period in force at ``t``, or None when the profile does not apply then (before validFrom, from
        validTo on, before the schedule starts or once its duration is over)."""
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
            times.append(anchor + timedelta(seconds=_RECURRENCE_S[self.recurrency or "Daily"]))
        times += [x for x in (self.valid_from, self.valid_to) if x is not None]
        future = [x for x in times if x > t]
        return min(future) if future else None


def period_kw(period: Period, unit: str, default_phases: int, voltage_v: float) -> float:
    """A period's limit in kW: W / 1000, or A x phases x V / 1000 (phases from the period, else the station)."""
    if unit == "W":
        return period.limit / 1000.0
    return period.limit * (period.phases or default_phases) * voltage_v / 1000.0


class ProfileStore:
    """The profiles installed on one station, with the replacement and stacking rules of OCPP 1.6 section 3.13
    (3.13.2 stacking, 3.13.3 combining purposes), which OCPP 2.0.1 K01 keeps."""

    def __init__(self) -> None:
        self.profiles: list[Profile] = []

    def install(self, new: Profile) -> None:
        """Add ``new``, replacing any profile with its id or with its connector, purpose and stack level
        (OCPP 1.6 section 5.16.2, OCPP 2.0.1 K01.FR.05)."""
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
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> int:
        """ClearChargingProfile (1.6 section 5.5, 2.0.1 K10): an id matches alone, otherwise every given
        criterion must match. Returns how many profiles were removed."""

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

    def drop_tx(self, connector_id: int, keep_transaction_id: TransactionId | None = None) -> None:
        """Remove the connector's TxProfiles: all of them (at transaction end: a TxProfile lasts as long as its
        transaction, OCPP 1.6 section 3.13.1), or, when ``keep_transaction_id`` is given, those naming another
        transaction."""

        def drop(p: Profile) -> bool:
            if p.connector_id != connector_id or p.purpose != TX:
                return False
            if keep_transaction_id is None:
                return True
            return p.transaction_id is not None and p.transaction_id != keep_transaction_id

        self.profiles = [p for p in self.profiles if not drop(p)]

    def in_force(
        self, purpose: Purpose, connector_id: int, t: datetime, tx_start: datetime | None
    ) -> tuple[Profile, Period] | None:
        """The highest-stack profile of ``purpose`` on ``connector_id`` with a period in force at ``t`` (the
        highest stackLevel prevails, OCPP 1.6 section 3.13.2)."""
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
        """TxProfile if one is in force, else the connector's TxDefaultProfile, else connector 0's (a TxProfile
        overrules a TxDefaultProfile, OCPP 1.6 section 3.13.3)."""
        return (
            self.in_force(TX, connector_id, t, tx_start)
            or self.in_force(TX_DEFAULT, connector_id, t, tx_start)
            or self.in_force(TX_DEFAULT, 0, t, tx_start)
        )

    def held_tx(self, connector_id: int, t: datetime, tx_start: datetime | None) -> tuple[RateUnit, float] | None:
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
        times = [
            x
            for x in (p.next_change(t, tx_start) for p in self.profiles if p.connector_id in (0, connector_id))
            if x is not None
        ]
        return min(times) if times else None
