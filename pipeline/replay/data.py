"""Real inputs for replays: the ev2gym 2.0.0 slices in ``data/ev2gym`` (MIT; provenance in its README).

One real week per season of 2024 is shipped (:data:`WEEKS`, Monday to Sunday, local time), so a replay can
run a winter weekday or a summer weekend on the data of that day:

* Dutch day-ahead prices (ENTSO-E, hourly, EUR/MWh) become ``tariff.price.signals``, with tiers cut
  at the day's price quantiles.
* Household load profiles (15 min, kW) summed over ``households`` homes are the site's building load.
* EV arrivals, energy needs and connection times are drawn from the ElaadNL distributions
  (:class:`pipeline.sim.evs.EVSampler`, shared with ``pipeline simulate``).
"""

from __future__ import annotations

import bisect
import csv
from datetime import UTC, date, datetime, time, timedelta

from pipeline.contracts.errors import PipelineError
from pipeline.contracts.topics import PriceSignal, PriceTier
from pipeline.sim.evs import DATA_DIR, SITE_TZ, EVSampler

WEEKS = (date(2024, 1, 15), date(2024, 4, 15), date(2024, 6, 3), date(2024, 10, 14))
"""The first day (a Monday) of each shipped week: winter, spring, summer, autumn 2024."""
FIRST_DAY = date(2024, 6, 3)  # the default replay day
TIER_QUANTILES = ((0.25, PriceTier.OFF_PEAK), (0.75, PriceTier.MID_PEAK), (0.95, PriceTier.ON_PEAK))


class DataError(PipelineError):
    """The requested slice is not in the shipped data."""


__all__ = [
    "DATA_DIR",
    "DataError",
    "EVSampler",
    "SITE_TZ",
    "building_load",
    "DAY_AHEAD_RELEASE",
    "day_ahead_releases",
    "day_start_utc",
    "shipped_days",
    "price_signals",
    "price_tier",
]


def day_start_utc(day: date) -> datetime:
    """Local (Europe/Amsterdam) midnight of ``day``, as UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=SITE_TZ).astimezone(UTC)


def _week_of(day: date) -> date | None:
    return next((w for w in WEEKS if w <= day < w + timedelta(days=7)), None)


def shipped_days() -> str:
    """The shipped spans, e.g. ``"2024-01-15..2024-01-21, ..."``, for messages and help."""
    return ", ".join(f"{w}..{w + timedelta(days=6)}" for w in WEEKS)


def _check_days(day: date, days: int) -> None:
    if days < 1 or any(_week_of(day + timedelta(days=d)) is None for d in range(days)):
        raise DataError(f"the shipped data covers {shipped_days()}; asked for {days} day(s) from {day}")


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
    rows: list[tuple[datetime, float]] = []
    for week in sorted({_week_of(day + timedelta(days=d)) for d in range(days)}, key=str):
        with open(DATA_DIR / f"nl_day_ahead_{week}_week.csv", newline="") as f:
            rows += [
                (datetime.fromisoformat(r["datetime_utc"]), float(r["price_eur_per_mwh"])) for r in csv.DictReader(f)
            ]
    out: list[PriceSignal] = []
    for d in range(days):
        start = day_start_utc(day + timedelta(days=d))
        end = day_start_utc(day + timedelta(days=d + 1))
        today = [(t, p) for t, p in rows if start <= t < end]
        ranked = sorted(p for _, p in today)
        for t, p in today:
            out.append(
                PriceSignal(
                    site_id=site_id,
                    tariff_id="nl-day-ahead",
                    price_per_kwh=round(p / 1000, 5),
                    currency="EUR",
                    price_tier=price_tier(p, ranked),
                    valid_from=t,
                    valid_to=t + timedelta(hours=1),
                )
            )
    return out


DAY_AHEAD_RELEASE = time(13, 0)
"""When a day's hourly prices are public, local time on the day before: the EPEX SPOT day-ahead auction
closes at 12:00 CET and publishes its results at about 12:45 (EPEX SPOT, "Day-ahead trading")."""


def day_ahead_releases(site_id: str, day: date, days: int = 1) -> list[tuple[datetime, list[PriceSignal]]]:
    """:func:`price_signals` as a market publishes them: each local day's 24 hours at
    :data:`DAY_AHEAD_RELEASE` on the day before, ``[(release_at UTC, signals)]`` in time order. The first
    day's were published before the replay starts, so they come at its start (local midnight of ``day``)."""
    signals = price_signals(site_id, day, days)
    out: list[tuple[datetime, list[PriceSignal]]] = []
    for d in range(days):
        start, end = day_start_utc(day + timedelta(days=d)), day_start_utc(day + timedelta(days=d + 1))
        release = datetime.combine(day + timedelta(days=d - 1), DAY_AHEAD_RELEASE, SITE_TZ).astimezone(UTC)
        out.append((max(release, day_start_utc(day)), [s for s in signals if start <= s.valid_from < end]))
    return out


def building_load(day: date, days: int = 1, households: int = 12) -> list[tuple[datetime, float]]:
    """The summed load of the first ``households`` (1-25) homes at 15-minute steps, ``(start_utc, kW)``."""
    _check_days(day, days)
    if not 1 <= households <= 25:
        raise DataError("households must be between 1 and 25")
    out: list[tuple[datetime, float]] = []
    for d in range(days):
        today = day + timedelta(days=d)
        week = _week_of(today)
        assert week is not None  # _check_days
        with open(DATA_DIR / f"residential_loads_{week:%m-%d}_week.csv") as f:
            rows = [[float(x) for x in line.split(",")] for line in f if line.strip()]
        first, start = (today - week).days * 96, day_start_utc(today)
        out += [(start + timedelta(minutes=15 * i), round(sum(rows[first + i][:households]), 3)) for i in range(96)]
    return out
