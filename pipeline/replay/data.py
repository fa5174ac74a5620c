"""Real inputs for replays: the ev2gym 2.0.0 slices in ``data/ev2gym`` (MIT; provenance in its README).

* Dutch day-ahead prices (ENTSO-E, hourly, EUR/MWh) become ``tariff.price.signals``, with tiers cut
  at the day's price quantiles.
* Household load profiles (15 min, kW) summed over ``households`` homes are the site's building load.
* EV arrivals, energy needs and connection times are drawn from the ElaadNL distributions, EV models
  and AC limits from ``ev_specs.json`` weighted by registrations. Draws are seeded and reproducible.
"""

from __future__ import annotations

import bisect
import csv
import json
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from pipeline.simulate.ev import EV
from pipeline.topics import PriceSignal, PriceTier

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "ev2gym"
SITE_TZ = ZoneInfo("Europe/Amsterdam")
FIRST_DAY = date(2024, 6, 3)
DAYS_AVAILABLE = 7
TIER_QUANTILES = ((0.25, PriceTier.OFF_PEAK), (0.75, PriceTier.MID_PEAK), (0.95, PriceTier.ON_PEAK))


class DataError(ValueError):
    """The requested slice is not in the shipped data."""


def day_start_utc(day: date) -> datetime:
    """Local (Europe/Amsterdam) midnight of ``day``, as UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=SITE_TZ).astimezone(timezone.utc)


def _check_days(day: date, days: int) -> None:
    last = FIRST_DAY + timedelta(days=DAYS_AVAILABLE - 1)
    if days < 1 or day < FIRST_DAY or day + timedelta(days=days - 1) > last:
        raise DataError(f"the shipped data covers {FIRST_DAY} to {last}; asked for {days} day(s) from {day}")


def price_tier(price: float, sorted_prices: list[float]) -> PriceTier:
    """The tier of ``price`` among a day's prices: below the 25 % quantile OFF_PEAK, below 75 % MID_PEAK,
    below 95 % ON_PEAK, else CRITICAL_PEAK."""
    rank = bisect.bisect_left(sorted_prices, price) / max(1, len(sorted_prices))
    for q, tier in TIER_QUANTILES:
        if rank < q:
            return tier
    return PriceTier.CRITICAL_PEAK


def price_signals(site_id: str, day: date, days: int = 1) -> list[PriceSignal]:
    """Hourly day-ahead prices from local midnight of ``day`` for ``days`` days, as price signals
    (``price_per_kwh`` in EUR/kWh = EUR/MWh / 1000); tiers are cut per local day."""
    _check_days(day, days)
    with open(DATA_DIR / "nl_day_ahead_2024-06-03_week.csv", newline="") as f:
        rows = [(datetime.fromisoformat(r["datetime_utc"]), float(r["price_eur_per_mwh"])) for r in csv.DictReader(f)]
    out: list[PriceSignal] = []
    for d in range(days):
        start = day_start_utc(day + timedelta(days=d))
        end = day_start_utc(day + timedelta(days=d + 1))
        today = [(t, p) for t, p in rows if start <= t < end]
        ranked = sorted(p for _, p in today)
        for t, p in today:
            out.append(
                PriceSignal(
                    site_id=site_id, tariff_id="nl-day-ahead", price_per_kwh=round(p / 1000, 5), currency="EUR",
                    price_tier=price_tier(p, ranked), valid_from=t, valid_to=t + timedelta(hours=1),
                )
            )
    return out


def building_load(day: date, days: int = 1, households: int = 12) -> list[tuple[datetime, float]]:
    """The summed load of the first ``households`` (1-25) homes at 15-minute steps, ``(start_utc, kW)``."""
    _check_days(day, days)
    if not 1 <= households <= 25:
        raise DataError("households must be between 1 and 25")
    with open(DATA_DIR / "residential_loads_06-03_week.csv") as f:
        rows = [[float(x) for x in line.split(",")] for line in f if line.strip()]
    first = (day - FIRST_DAY).days * 96
    start = day_start_utc(day)
    return [
        (start + timedelta(minutes=15 * i), round(sum(rows[first + i][:households]), 3)) for i in range(days * 96)
    ]


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


class EVSampler:
    """Seeded draws of EV visits from the ElaadNL distributions (``profile``: public, private, workplace)."""

    def __init__(self, seed: int = 7, profile: str = "public") -> None:
        if profile not in ("public", "private", "workplace"):
            raise DataError(f"unknown profile {profile!r}: use public, private or workplace")
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
            EVModel(n, float(s["battery_capacity"]), float(s["max_ac_charge_power"]), int(s["number_of_registrations"]))
            for n, s in specs.items()
        ]
        self._count = 0

    @staticmethod
    def _slots(path: Path, profile: str) -> list[tuple[int, float]]:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            col = profile if profile in (reader.fieldnames or []) else "public"
            return [
                (int(r["Arrival time"][:2]) * 60 + int(r["Arrival time"][3:5]), float(r[col])) for r in reader
            ]

    def visit(self, day: date) -> EV:
        """One EV visit arriving on local ``day``."""
        rng = self.rng
        slots = self.arrivals[day.weekday() >= 5]
        minute, _ = rng.choices(slots, weights=[w for _, w in slots])[0]
        local = datetime(day.year, day.month, day.day, tzinfo=SITE_TZ) + timedelta(
            minutes=minute + rng.uniform(0, 15)
        )
        model = rng.choices(self.models, weights=[m.registrations for m in self.models])[0]
        energy = min(max(1.0, _inverse_ccdf(self.energy, rng.random())), 0.9 * model.battery_kwh)
        hours = max(0.25, _inverse_ccdf(self.connection, rng.random()))
        soc = max(5.0, min(95.0, 100.0 * (1 - energy / model.battery_kwh) - rng.uniform(0, 5)))
        self._count += 1
        arrival = local.astimezone(timezone.utc)
        return EV(
            ev_id=f"EV{self._count:04d}", model=model.name, battery_kwh=model.battery_kwh,
            max_ac_kw=model.max_ac_kw, arrival_soc_pct=round(soc, 1), energy_need_kwh=round(energy, 2),
            arrival_at=arrival, departure_at=arrival + timedelta(hours=hours),
        )

    def day_visits(self, day: date, count: int) -> list[EV]:
        """``count`` visits on ``day``, in arrival order."""
        return sorted((self.visit(day) for _ in range(count)), key=lambda ev: ev.arrival_at)
