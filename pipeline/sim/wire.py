"""What the OCPP 1.6 and 2.0.1 adapters of the simulator share on the wire: timestamps, the two answers and
the charging schedule.

Both versions carry date-times as JSON Schema ``date-time`` strings (RFC 3339; see the ``format`` of the
timestamps in either version's message schemas), answer most requests with ``Accepted`` or ``Rejected``, and
describe a charging schedule with the same fields. Kept here so that neither adapter imports the other and
the neutral core never sees a string on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from pipeline.sim.profiles import Period, Profile, ProfileKind, Purpose, RateUnit, Recurrency, TransactionId

ACCEPTED: Final = "Accepted"
REJECTED: Final = "Rejected"


def iso(t: datetime) -> str:
    """An OCPP timestamp: ISO 8601 / RFC 3339 in UTC, milliseconds, with a Z."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    """An OCPP date-time string as an aware UTC datetime (naive strings are taken as UTC); None for None or
    "". ``ValueError`` for a string that is not ISO 8601."""
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


_KINDS: dict[str, ProfileKind] = {"Absolute": "Absolute", "Relative": "Relative", "Recurring": "Recurring"}
_UNITS: dict[str, RateUnit] = {"A": "A", "W": "W"}
_RECURRENCIES: dict[str, Recurrency] = {"Daily": "Daily", "Weekly": "Weekly"}


def charging_profile(
    connector_id: int,
    *,
    profile_id: Any,
    stack_level: Any,
    purpose: Purpose,
    kind: str,
    schedule: Mapping[str, Any],
    received_at: datetime,
    transaction_id: TransactionId | None = None,
    recurrency: str | None = None,
    valid_from: str | None = None,
    valid_to: str | None = None,
) -> Profile:
    """A neutral :class:`~pipeline.sim.profiles.Profile` from the fields of a ChargingProfile, which the
    adapters take from their version's message, and ``schedule``, a snake_cased ChargingSchedule (the same
    fields in the OCPP 1.6 ChargingSchedule of section 7 and the 2.0.1 ChargingScheduleType: ``charging_rate_unit``,
    ``charging_schedule_period`` with ``start_period``, ``limit``, ``number_phases``; ``duration`` and
    ``start_schedule``). ``KeyError``, ``TypeError`` or ``ValueError`` for a field missing or out of its
    enumeration; the caller rejects the profile."""
    duration = schedule.get("duration")
    return Profile(
        connector_id=connector_id,
        profile_id=int(profile_id),
        stack_level=int(stack_level),
        purpose=purpose,
        kind=_KINDS[kind],
        unit=_UNITS[schedule["charging_rate_unit"]],
        periods=sorted(
            (
                Period(float(x["start_period"]), float(x["limit"]), x.get("number_phases"))
                for x in schedule["charging_schedule_period"]
            ),
            key=lambda x: x.start_s,
        ),
        received_at=received_at,
        transaction_id=transaction_id,
        recurrency=None if recurrency is None else _RECURRENCIES[recurrency],
        valid_from=parse_time(valid_from),
        valid_to=parse_time(valid_to),
        duration_s=float(duration) if duration is not None else None,
        start_schedule=parse_time(schedule.get("start_schedule")),
    )
