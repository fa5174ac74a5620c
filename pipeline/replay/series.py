"""The time series of a replay, collected while it runs, for ``pipeline replay --report``.

The summary says how a day went in a dozen figures; the plots show when and why: the site's load against
its breaker limit, what the price was, when demand response lowered the limit and what each session drew.
The driver feeds :class:`ReplaySeries` from what it already knows (the simulated chargers' draw, the
building load it publishes, the price and DR signals, the setpoints on the transport), sampled every
simulated minute and at every event. Powers change only at events, so the series are exact step
functions; a day is some 1,500 samples. The functions below it turn the series into arrays for
plotting; they are pure, so they are tested without a replay.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.contracts.topics import DRSignal, PriceSignal


@dataclass(frozen=True)
class PriceStep:
    """A price in force on ``[start, end)`` (POSIX seconds, UTC): ``price`` EUR/kWh, ``tier`` a PriceTier
    name."""

    start: float
    end: float
    price: float
    tier: str


@dataclass(frozen=True)
class DRWindow:
    """A DR event on ``[start, end)`` (POSIX seconds, UTC) lowering the site limit to ``limit_kw`` kW."""

    event_id: str
    start: float
    end: float
    limit_kw: float


@dataclass
class ReplaySeries:
    """What a replay did over simulated time. Times are POSIX seconds (UTC) of the simulated clock.

    * ``load``: ``(t, building_kw, ev_kw, setpoints_kw)`` samples in time order; each value holds until
      the next sample (a step function). ``setpoints_kw`` is the sum of the setpoints in force for active
      sessions (kW), carried forward between minute samples.
    * ``sessions``: per session label (``"EV0001 (CP003)"``), its draw as ``(t, kW)`` changes in time order.
    * ``prices`` and ``dr_windows``: the signals the replay published.

    Several samples at one instant (the clock holds while the loop settles) keep only the last, so memory
    grows with simulated minutes and events, not with settling steps.
    """

    site_id: str = ""
    start: float = 0.0
    end: float = 0.0
    limit_kw: float = 0.0
    load: list[tuple[float, float, float, float]] = field(default_factory=list)
    sessions: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    prices: list[PriceStep] = field(default_factory=list)
    dr_windows: list[DRWindow] = field(default_factory=list)
    _plugged: dict[tuple[str, int], str] = field(default_factory=dict, repr=False)
    _setpoints_kw: float = field(default=0.0, repr=False)

    def begin(self, site_id: str, start: datetime, end: datetime, limit_kw: float) -> None:
        """Name the site, the replayed span (aware datetimes) and the breaker limit (kW)."""
        self.site_id, self.start, self.end, self.limit_kw = site_id, start.timestamp(), end.timestamp(), limit_kw

    def add_price(self, signal: PriceSignal) -> None:
        self.prices.append(
            PriceStep(
                signal.valid_from.timestamp(),
                signal.valid_to.timestamp(),
                signal.price_per_kwh,
                signal.price_tier.value,
            )
        )

    def add_dr(self, signal: DRSignal) -> None:
        """Record a DR event; the lowered limit is the one ``node_headroom`` applies to the breaker limit."""
        self.dr_windows.append(
            DRWindow(
                signal.dr_event_id,
                signal.event_start.timestamp(),
                signal.event_end.timestamp(),
                dr_limit_kw(self.limit_kw, signal),
            )
        )

    def plug(self, charge_point_id: str, connector_id: int, label: str) -> None:
        """From now on, power reported for this connector is session ``label``'s."""
        self._plugged[(charge_point_id, connector_id)] = label

    def on_power(self, charge_point_id: str, connector_id: int, power_kw: float, t: float) -> None:
        """A connector's draw changed to ``power_kw`` kW at ``t``."""
        label = self._plugged.get((charge_point_id, connector_id))
        if label is None:
            return
        _put(self.sessions.setdefault(label, []), (self._at(t), power_kw))

    def record(self, t: float, building_kw: float, ev_kw: float, setpoints_kw: float | None = None) -> None:
        """A sample of the site at ``t`` (kW); ``setpoints_kw`` None keeps the last sum."""
        if setpoints_kw is not None:
            self._setpoints_kw = setpoints_kw
        _put(self.load, (self._at(t), building_kw, ev_kw, self._setpoints_kw))

    def _at(self, t: float) -> float:
        # a charger may report a change a moment before the last sample (it books at its own last step)
        return max(t, self.load[-1][0]) if self.load else t


def _put(steps: list, sample: tuple) -> None:
    if steps and steps[-1][0] >= sample[0]:
        steps[-1] = sample
    else:
        steps.append(sample)


def dr_limit_kw(limit_kw: float, signal: DRSignal) -> float:
    """The site limit (kW) while ``signal``'s event runs: ``curtailment_pct`` off ``limit_kw``, or its
    ``limit_kw``, whichever is lower."""
    lowered = limit_kw * (1 - (signal.curtailment_pct or 0.0) / 100.0)
    return min(lowered, signal.limit_kw) if signal.limit_kw is not None else lowered


def step_values(changes: list[tuple[float, float]], times: list[float]) -> list[float]:
    """A step function given by ``(t, value)`` changes (time order), read at each of ``times``; 0 before
    the first change."""
    starts = [t for t, _ in changes]
    out = []
    for t in times:
        i = bisect.bisect_right(starts, t) - 1
        out.append(changes[i][1] if i >= 0 else 0.0)
    return out


def session_matrix(series: ReplaySeries, times: list[float] | None = None) -> tuple[list[str], list[list[float]]]:
    """``(labels, rows)``: every session that drew power, in order of its first draw, as a row of kW read
    at ``times`` (default: the load samples' times); ``rows[i][j]`` is session ``labels[i]`` at
    ``times[j]``."""
    times = [s[0] for s in series.load] if times is None else times
    drew = [
        (next(t for t, kw in steps if kw > 0), label)
        for label, steps in series.sessions.items()
        if any(kw > 0 for _, kw in steps)
    ]
    labels = [label for _, label in sorted(drew)]
    return labels, [step_values(series.sessions[label], times) for label in labels]


def tier_spans(prices: list[PriceStep]) -> list[tuple[float, float, str]]:
    """Consecutive price steps of one tier merged into ``(start, end, tier)`` spans (a gap between steps
    starts a new span)."""
    spans: list[tuple[float, float, str]] = []
    for p in sorted(prices, key=lambda p: p.start):
        if spans and spans[-1][2] == p.tier and spans[-1][1] == p.start:
            spans[-1] = (spans[-1][0], p.end, p.tier)
        else:
            spans.append((p.start, p.end, p.tier))
    return spans
