"""The electric vehicle a simulated charge point charges.

An EV is pure data: when it arrives and leaves, how much energy it wants, on how many phases and how fast
its on-board charger takes AC power, and how that acceptance tapers as the battery fills. The station
(:mod:`pipeline.sim.station`) owns the physics; keeping the vehicle separate lets EV factories build
arrivals from real distributions without touching OCPP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

__all__ = [
    "EV",
    "IEC_MIN_CURRENT_A",
    "NOMINAL_VOLTAGE_V",
    "REAL_EV_RESPONSE_S",
    "ResponseLag",
    "lag_range",
    "taper_fraction",
]

NOMINAL_VOLTAGE_V: Final = 230.0
"""The phase-to-neutral voltage an on-board charger's rating is stated at (IEC 60038, 230/400 V)."""
IEC_MIN_CURRENT_A: Final = 6.0
"""The lowest current per phase a charger may offer an EV (IEC 61851-1, control pilot duty cycle of 10 %)."""

REAL_EV_RESPONSE_S: Final = (2.0, 11.0)
"""How long real EVs take to follow a new charging limit, clock seconds: each session's lag is drawn
uniformly from this range. IEC 61851-1 gives an EV 5 s to follow a change of the control pilot; the
charger's own handling of a profile comes on top. The lag of ``pipeline simulate`` (a
:class:`~pipeline.sim.station.Station` takes it as ``ev_response_s``); it makes a central system account
for power that is cut but still drawn, and raised but not drawn yet."""

ResponseLag = float | tuple[float, float]
"""An EV's response lag, clock seconds: fixed, or (low, high) to draw one per session uniformly."""


def lag_range(lag: ResponseLag) -> tuple[float, float]:
    """``lag`` as (low, high) clock seconds; ``ValueError`` when negative or low > high."""
    low, high = lag if isinstance(lag, tuple) else (lag, lag)
    if not 0.0 <= low <= high:
        raise ValueError(f"ev_response_s must be >= 0 (a range low <= high), not {lag!r}")
    return float(low), float(high)


def taper_fraction(soc_pct: float, from_pct: float, end_fraction: float) -> float:
    """The share (0-1] of its maximum an EV takes at ``soc_pct`` (%): 1 up to ``from_pct``, then linearly
    down to ``end_fraction`` at 100 % (the simulated EVs' taper, and the quality benchmark's water-fill)."""
    if soc_pct <= from_pct or from_pct >= 100.0:
        return 1.0
    x = min(1.0, (soc_pct - from_pct) / (100.0 - from_pct))
    return 1.0 - (1.0 - end_fraction) * x


@dataclass
class EV:
    """One vehicle's visit to a charger.

    Attributes:
        ev_id: Identifier; also used (cut to 20 characters) as the OCPP ``idTag``.
        model: Vehicle model name, informational.
        battery_kwh: Usable battery capacity, kWh. Used to report SoC.
        max_ac_kw: Most AC power the on-board charger accepts, kW (at :data:`NOMINAL_VOLTAGE_V` on all of
            its ``phases``).
        arrival_soc_pct: State of charge at plug-in, percent (0-100).
        energy_need_kwh: Energy the driver wants before leaving, kWh. The session ends when it is delivered.
        arrival_at: Plug-in time, aware UTC datetime in clock time.
        departure_at: Time the driver unplugs, aware UTC datetime in clock time, whatever was delivered.
        phases: Phases the on-board charger draws on (1, 2 or 3): a 1-phase EV on the charger's L1, a
            2-phase one on L1 and L2.
        min_current_a: Least current per phase the EV charges with, A (reported in NotifyEVChargingNeeds).
        taper_from_pct: State of charge (percent) above which the EV takes less than its maximum.
        taper_end_fraction: Share of its maximum current the EV still takes at 100 % SoC: acceptance falls
            linearly from 1 at ``taper_from_pct`` to this at 100 % (a CC-CV charge seen from the AC side).
    """

    ev_id: str
    model: str
    battery_kwh: float
    max_ac_kw: float
    arrival_soc_pct: float
    energy_need_kwh: float
    arrival_at: datetime
    departure_at: datetime
    phases: int = 3
    min_current_a: float = IEC_MIN_CURRENT_A
    taper_from_pct: float = 80.0
    taper_end_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.arrival_at.tzinfo is None or self.departure_at.tzinfo is None:
            raise ValueError("EV arrival_at and departure_at must be timezone-aware")
        if self.battery_kwh <= 0:
            raise ValueError("battery_kwh must be > 0")
        if self.max_ac_kw < 0 or self.energy_need_kwh < 0:
            raise ValueError("max_ac_kw and energy_need_kwh must be >= 0")
        if self.phases not in (1, 2, 3):
            raise ValueError(f"phases must be 1, 2 or 3, not {self.phases!r}")
        if not 0.0 <= self.taper_from_pct <= 100.0 or not 0.0 < self.taper_end_fraction <= 1.0:
            raise ValueError("taper_from_pct must be 0-100 and taper_end_fraction in (0, 1]")

    @property
    def max_current_a(self) -> float:
        """Most current per phase the on-board charger takes, A: ``max_ac_kw`` over ``phases`` at
        :data:`NOMINAL_VOLTAGE_V` (7.4 kW on one phase: 32.2 A; 11 kW on three: 15.9 A)."""
        return self.max_ac_kw * 1000.0 / (self.phases * NOMINAL_VOLTAGE_V)

    @property
    def room_kwh(self) -> float:
        """Energy that fills the battery from ``arrival_soc_pct`` to 100 %, kWh."""
        return max(0.0, (100.0 - self.arrival_soc_pct) * self.battery_kwh / 100.0)

    def taper_fraction(self, soc_pct: float) -> float:
        """The share (0-1] of :attr:`max_current_a` the EV takes at ``soc_pct``: 1 up to ``taper_from_pct``,
        then linearly down to ``taper_end_fraction`` at 100 %."""
        return taper_fraction(soc_pct, self.taper_from_pct, self.taper_end_fraction)

    @property
    def dwell_s(self) -> float:
        """Planned connection time, seconds."""
        return (self.departure_at - self.arrival_at).total_seconds()

    def soc_pct(self, delivered_kwh: float) -> float:
        """State of charge, percent, after ``delivered_kwh`` kWh were delivered (capped at 100)."""
        return min(100.0, self.arrival_soc_pct + 100.0 * delivered_kwh / self.battery_kwh)
