"""Physical bounds and unit types every topic's fields are checked against.

Each bound is the largest value that is still physically plausible for its quantity, with the reason beside
it; :mod:`pipeline.contracts.topics` builds its models from these types, so one number means one thing on
every topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import Field

__all__ = [
    "BOUNDS",
    "Amps",
    "ChargerKw",
    "ConnectorId",
    "Kwh",
    "Pct",
    "PhaseRotation",
    "Phases",
    "SiteKw",
    "Volts",
    "to_utc",
]


def to_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive input is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


BOUNDS: dict[str, float] = {
    # A site's grid connection: above 100 MW is a transmission connection (or a typo), not a breaker.
    "site_kw": 100_000.0,
    # One charger: the Megawatt Charging System (SAE J3271, IEC 63379) tops out at 3.75 MW.
    "charger_kw": 4_000.0,
    # Low voltage: 1000 V AC / 1500 V DC (IEC 60038); EV charging stays within it.
    "voltage_v": 1_500.0,
    # Current per phase: MCS is 3000 A DC; 4000 A leaves room and still catches a kW-for-A mix-up.
    "current_a": 4_000.0,
    # A limit in W (OCPP chargingRateUnit W) is the charger bound in W.
    "limit_w": 4_000_000.0,
    # Energy in one session: the largest truck batteries are about 1 MWh.
    "energy_kwh": 10_000.0,
    # A price per kWh in any currency (day-ahead spot runs -0.5 .. 4 EUR/kWh; some currencies are 1000x).
    "price_per_kwh": 100_000.0,
    # A charger's cumulative energy register (OCPP meterStart / meterStop): 1 TWh outlasts any charger.
    "meter_register_kwh": 1_000_000_000.0,
    # Connector / EVSE ids and priorities are small integers.
    "connector_id": 1_000,
    "priority": 1_000,
    "weight": 1_000.0,
    # Windows: a DR event lasts hours (OpenADR events up to days); a price slot at most a year.
    "dr_event_days": 31,
    "price_slot_days": 366,
    # A plan's departure: a fleet plans days ahead, not months (the longest DR event, for the same reason).
    "plan_days": 31,
    # Timestamps: years the engines and the executor can do arithmetic on without overflow.
    "year_min": 1970,
    "year_max": 2199,
}
"""Physical bounds of every number on every topic (refused above them, with the bound in the error).

NaN and infinities are refused everywhere (JSON has neither; ``1e999`` parses as infinity and is refused).
"""

SiteKw = Annotated[float, Field(ge=0, le=BOUNDS["site_kw"])]
"""A breaker, site or measured power (kW), 0 .. 100 MW."""
ChargerKw = Annotated[float, Field(ge=0, le=BOUNDS["charger_kw"])]
"""A charger's or a session's power (kW), 0 .. 4 MW."""
Volts = Annotated[float, Field(gt=0, le=BOUNDS["voltage_v"])]
Amps = Annotated[float, Field(ge=0, le=BOUNDS["current_a"])]
Kwh = Annotated[float, Field(ge=0, le=BOUNDS["energy_kwh"])]
Pct = Annotated[float, Field(ge=0, le=100)]
Phases = Annotated[int, Field(ge=1, le=3)]
PhaseRotation = Literal["RST", "RTS", "SRT", "STR", "TRS", "TSR"]
"""How a charger's L1, L2, L3 are wired to the grid's phases R (L1), S (L2), T (L3): ``"RST"`` is straight
through, ``"SRT"`` puts the charger's L1 on grid L2, and so on (OCPP 1.6 ``ConnectorPhaseRotation``,
OCPP 2.0.1 ``EVSE.PhaseRotation``, both using these six values). A 1-phase EV draws on the charger's L1,
a 2-phase EV on its L1 and L2."""
ConnectorId = Annotated[int, Field(ge=0, le=BOUNDS["connector_id"])]
