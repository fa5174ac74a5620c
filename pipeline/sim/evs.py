"""EV visits drawn from real distributions: the ElaadNL arrival, energy-demand and connection-time
distributions and the EV models of ``ev_specs.json`` weighted by registrations (``data/ev2gym``, ev2gym
2.0.0, MIT; provenance in its README). Draws are seeded and reproducible. Used by ``pipeline simulate``
and by the replay.

``ev_specs.json`` gives each model's battery (``battery_capacity``, kWh) and most AC power
(``max_ac_charge_power``, kW) but not the phases its on-board charger uses, and a 1-phase EV draws on one
phase only whatever the charger offers; :func:`ac_phases` supplies them.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pipeline.contracts.errors import ConfigError
from pipeline.sim.ev import EV

__all__ = ["AC_PHASES", "DATA_DIR", "EVModel", "EVSampler", "SITE_TZ", "ac_phases"]

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "ev2gym"
SITE_TZ = ZoneInfo("Europe/Amsterdam")
"""The local time of the distributions (Dutch sessions) and of the shipped days."""

AC_PHASES: dict[str, int] = {"Peugeot 208": 1, "Nissan Leaf": 1, "Volkswagen Golf": 2}
"""The on-board chargers of ``ev_specs.json`` that do not use three phases: the e-208's 7.4 kW is one phase
at 32 A, the Leaf's 3.6 kW one phase at 16 A, the e-Golf's 7.2 kW two phases at 16 A (the makers' data
sheets). The others take 11 kW (16 A) or 22 kW (32 A) on three phases."""


def ac_phases(model: str, max_ac_kw: float) -> int:
    """Phases the on-board charger of ``model`` draws on: :data:`AC_PHASES`, else 1 for at most 7.4 kW (32 A
    on one phase at 230 V) and 3 above."""
    if model in AC_PHASES:
        return AC_PHASES[model]
    return 1 if max_ac_kw <= 7.4 + 1e-9 else 3


def _ccdf(path: Path, column: str) -> list[tuple[float, float]]:
    """A '% of sessions above x' table as ``(x, P(X > x))`` pairs, normalised to start at 1."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [(float(r["Percentage of charging events"]), float(r[column])) for r in csv.DictReader(f)]
    top = rows[0][1]
    return [(x, p / top) for x, p in rows]


def _inverse_ccdf(table: list[tuple[float, float]], u: float) -> float:
    """The x where P(X > x) falls to ``u``, interpolated linearly between table rows."""
    for (x0, p0), (x1, p1) in zip(table, table[1:], strict=False):
        if p1 <= u <= p0:
            return x0 if p0 == p1 else x0 + (p0 - u) / (p0 - p1) * (x1 - x0)
    return table[-1][0]


@dataclass(frozen=True)
class EVModel:
    name: str
    battery_kwh: float
    max_ac_kw: float
    registrations: int
    phases: int = 3


class EVSampler:
    """Seeded draws of EV visits from the ElaadNL distributions (``profile``: public, private, workplace)."""

    def __init__(self, seed: int = 7, profile: str = "public") -> None:
        if profile not in ("public", "private", "workplace"):
            raise ConfigError(f"unknown profile {profile!r}: use public, private or workplace")
        self.rng = random.Random(seed)
        self.profile = profile
        self.energy = _ccdf(DATA_DIR / "distribution-of-energy-demand.csv", profile)
        self.connection = _ccdf(DATA_DIR / "distribution-of-connection-time.csv", profile)
        self.arrivals = {
            weekend: self._slots(DATA_DIR / name, profile)
            for weekend, name in ((False, "distribution-of-arrival.csv"), (True, "distribution-of-arrival-weekend.csv"))
        }
        specs = json.loads((DATA_DIR / "ev_specs.json").read_text())
        self.models = [
            EVModel(
                n,
                float(s["battery_capacity"]),
                float(s["max_ac_charge_power"]),
                int(s["number_of_registrations"]),
                ac_phases(n, float(s["max_ac_charge_power"])),
            )
            for n, s in specs.items()
        ]
        self._count = 0

    @staticmethod
    def _slots(path: Path, profile: str) -> list[tuple[int, float]]:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            col = profile if profile in (reader.fieldnames or []) else "public"
            return [(int(r["Arrival time"][:2]) * 60 + int(r["Arrival time"][3:5]), float(r[col])) for r in reader]

    def visit(self, day: date) -> EV:
        """One EV visit arriving on local ``day``."""
        rng = self.rng
        slots = self.arrivals[day.weekday() >= 5]
        minute, _ = rng.choices(slots, weights=[w for _, w in slots])[0]
        local = datetime(day.year, day.month, day.day, tzinfo=SITE_TZ) + timedelta(minutes=minute + rng.uniform(0, 15))
        model = rng.choices(self.models, weights=[m.registrations for m in self.models])[0]
        energy = min(max(1.0, _inverse_ccdf(self.energy, rng.random())), 0.9 * model.battery_kwh)
        hours = max(0.25, _inverse_ccdf(self.connection, rng.random()))
        soc = max(5.0, min(95.0, 100.0 * (1 - energy / model.battery_kwh) - rng.uniform(0, 5)))
        self._count += 1
        arrival = local.astimezone(UTC)
        return EV(
            ev_id=f"EV{self._count:04d}",
            model=model.name,
            battery_kwh=model.battery_kwh,
            max_ac_kw=model.max_ac_kw,
            arrival_soc_pct=round(soc, 1),
            energy_need_kwh=round(energy, 2),
            arrival_at=arrival,
            departure_at=arrival + timedelta(hours=hours),
            phases=model.phases,
        )

    def day_visits(self, day: date, count: int) -> list[EV]:
        """``count`` visits on ``day``, in arrival order."""
        return sorted((self.visit(day) for _ in range(count)), key=lambda ev: ev.arrival_at)
