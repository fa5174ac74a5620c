"""The electric vehicle a simulated charge point charges.

An EV is pure data: when it arrives and leaves, how much energy it wants and how fast it can take AC power.
The station (:mod:`pipeline.sim.station`) owns the physics; keeping the vehicle separate lets EV
factories build arrivals from real distributions without touching OCPP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class EV:
    """One vehicle's visit to a charger.

    Attributes:
        ev_id: Identifier; also used (cut to 20 characters) as the OCPP ``idTag``.
        model: Vehicle model name, informational.
        battery_kwh: Usable battery capacity, kWh. Used to report SoC.
        max_ac_kw: Most AC power the on-board charger accepts, kW.
        arrival_soc_pct: State of charge at plug-in, percent (0-100).
        energy_need_kwh: Energy the driver wants before leaving, kWh. The session ends when it is delivered.
        arrival_at: Plug-in time, aware UTC datetime in clock time.
        departure_at: Time the driver unplugs, aware UTC datetime in clock time, whatever was delivered.
    """

    ev_id: str
    model: str
    battery_kwh: float
    max_ac_kw: float
    arrival_soc_pct: float
    energy_need_kwh: float
    arrival_at: datetime
    departure_at: datetime

    def __post_init__(self) -> None:
        if self.arrival_at.tzinfo is None or self.departure_at.tzinfo is None:
            raise ValueError("EV arrival_at and departure_at must be timezone-aware")
        if self.battery_kwh <= 0:
            raise ValueError("battery_kwh must be > 0")
        if self.max_ac_kw < 0 or self.energy_need_kwh < 0:
            raise ValueError("max_ac_kw and energy_need_kwh must be >= 0")

    @property
    def dwell_s(self) -> float:
        """Planned connection time, seconds."""
        return (self.departure_at - self.arrival_at).total_seconds()

    def soc_pct(self, delivered_kwh: float) -> float:
        """State of charge, percent, after ``delivered_kwh`` kWh were delivered (capped at 100)."""
        return min(100.0, self.arrival_soc_pct + 100.0 * delivered_kwh / self.battery_kwh)
