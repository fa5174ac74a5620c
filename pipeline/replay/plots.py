"""PNG plots of a replay, for ``pipeline replay --report``.

A replay's summary says whether the site stayed within its breaker; these plots show how: the site's
load (building and EVs) against the breaker limit and the limit a DR event lowers it to, the price and
its tier over the day, and what each session drew. DR windows are shaded on every plot.

Figures are drawn with matplotlib's object API onto the Agg canvas (no pyplot, no display), so this runs
headless, in threads and in tests. Everything plotted comes from a :class:`ReplaySeries`; the arrays are
derived by the pure functions in :mod:`pipeline.replay.series`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib import dates as mdates
from matplotlib.figure import Figure

from pipeline.replay.data import SITE_TZ
from pipeline.replay.series import ReplaySeries, session_matrix, tier_spans

DPI = 100
PLOTS = {
    "site_load": "Site load against the breaker limit",
    "price": "Price and tier",
    "sessions": "Power per session",
}
TIER_COLOURS = {"OFF_PEAK": "#2ca02c", "MID_PEAK": "#bcbd22", "ON_PEAK": "#ff7f0e", "CRITICAL_PEAK": "#d62728"}
DR_COLOUR = "#9467bd"
BUILDING_COLOUR = "#9e9e9e"
EV_COLOUR = "#1f77b4"
LIMIT_COLOUR = "#d62728"


def write_plots(series: ReplaySeries, out_dir: Path, dpi: int = DPI) -> dict[str, Path]:
    """Draw every plot of :data:`PLOTS` into ``out_dir`` as ``<name>.png``; returns ``{name: path}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawers = {"site_load": site_load_figure, "price": price_figure, "sessions": sessions_figure}
    written = {}
    for name in PLOTS:
        fig = drawers[name](series)
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
        written[name] = path
    return written


def site_load_figure(series: ReplaySeries) -> Figure:
    """Building and EV load stacked (kW), the site total, the breaker limit and the DR-lowered limit."""
    fig, ax = _figure(10, 4.5)
    times, building, ev, _ = _load_arrays(series)
    x = _num(times)
    ax.fill_between(x, 0, building, step="post", color=BUILDING_COLOUR, alpha=0.55, lw=0, label="building load")
    ax.fill_between(x, building, building + ev, step="post", color=EV_COLOUR, alpha=0.55, lw=0, label="EV load")
    ax.step(x, building + ev, where="post", color="black", lw=0.9, label="site load")
    ax.axhline(series.limit_kw, color=LIMIT_COLOUR, lw=1.6, label=f"breaker limit ({series.limit_kw:g} kW)")
    for i, w in enumerate(_windows(series)):
        ax.hlines(
            w.limit_kw,
            _num([w.start])[0],
            _num([w.end])[0],
            colors=LIMIT_COLOUR,
            linestyles="--",
            lw=1.6,
            label="limit during DR" if i == 0 else None,
        )
    _shade_dr(ax, series, label=True)
    top = max(series.limit_kw, float(np.max(building + ev)) if len(x) else 0.0)
    ax.set_ylim(0, top * 1.08)
    ax.set_ylabel("power (kW)")
    ax.set_title(f"Site load against the breaker limit: {_title(series)}")
    _time_axis(ax, series)
    fig.legend(loc="outside lower center", fontsize=8, ncol=6, frameon=False)
    return fig


def price_figure(series: ReplaySeries) -> Figure:
    """The day-ahead price (EUR/kWh) as steps, and below it the tier in force, one row per tier."""
    fig, (ax, tiers) = _figure(10, 4.5, rows=2, height_ratios=(3, 1.3))
    steps = sorted((p for p in series.prices if p.end > series.start and p.start < series.end), key=lambda p: p.start)
    if steps:
        x = _num([p.start for p in steps] + [steps[-1].end])
        y = [p.price for p in steps] + [steps[-1].price]
        ax.step(x, y, where="post", color="black", lw=1.2, label="day-ahead price")
    ax.set_ylabel("price (EUR/kWh)")
    ax.set_title(f"Price and tier: {_title(series)}")
    _shade_dr(ax, series, label=True)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelbottom=False)
    ax.set_xlim(*_num([series.start, series.end]))
    names = list(TIER_COLOURS)
    for start, end, tier in tier_spans(steps):
        row = names.index(tier) if tier in names else 0
        a, b = _num([start, end])
        tiers.broken_barh([(a, b - a)], (row - 0.4, 0.8), color=TIER_COLOURS.get(tier, "grey"))
    tiers.set_yticks(range(len(names)), [n.replace("_", " ").lower() for n in names], fontsize=8)
    tiers.set_ylim(-0.6, len(names) - 0.4)
    tiers.set_ylabel("tier", fontsize=9)
    _shade_dr(tiers, series, label=False)
    _time_axis(tiers, series)
    return fig


def sessions_figure(series: ReplaySeries) -> Figure:
    """Each session's draw (kW) stacked, in order of its first draw, with the sum of its setpoints.

    Sessions are labelled on the plot itself, at their widest band (a legend of 20 sessions says
    nothing), in 20 distinct colours (tab20 with its light and dark pairs kept apart). The power axis
    fits the load; a breaker limit far above it is written at the top instead of squashing the load.
    """
    fig, ax = _figure(11, 5)
    times, _, _, setpoints = _load_arrays(series)
    labels, rows = session_matrix(series, times)
    x = _num(times)
    stacked = np.sum(np.array(rows), axis=0) if labels else np.zeros(len(x))
    top = max(float(np.max(stacked)), float(np.max(setpoints)), 1.0) * 1.12
    if labels:
        palette = colormaps["tab20"]
        order = [*range(0, 20, 2), *range(1, 20, 2)]  # dark shades first, so neighbours never pair up
        colours = [palette(order[i % 20]) for i in range(len(labels))]
        ax.stackplot(x, np.array(rows), colors=colours, step="post", alpha=0.85, lw=0)
        _label_bands(ax, x, np.array(rows), labels, top)
        ax.step(x, setpoints, where="post", color="black", ls="--", lw=1.0, label="setpoints (sum)")
    else:
        ax.text(0.5, 0.5, "no session drew power", transform=ax.transAxes, ha="center", va="center")
    if series.limit_kw <= top * 1.25:
        top = max(top, series.limit_kw * 1.05)
        ax.axhline(series.limit_kw, color=LIMIT_COLOUR, lw=1.2, label=f"breaker limit ({series.limit_kw:g} kW)")
    else:
        ax.text(
            0.99,
            0.98,
            f"breaker limit {series.limit_kw:g} kW (above the axis)",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color=LIMIT_COLOUR,
        )
    _shade_dr(ax, series, label=True)
    ax.set_ylim(0, top)
    ax.set_ylabel("power (kW)")
    ax.set_title(f"Power per session ({len(labels)} sessions): {_title(series)}")
    _time_axis(ax, series)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _label_bands(ax, x: np.ndarray, rows: np.ndarray, labels: list[str], top: float) -> None:
    """Write each session's label inside its band: in the middle of the longest stretch where the band is
    at least 60 % of its widest. A band too thin (under 4 % of the axis) or too short (under 3 % of the
    day) to hold the text stays unlabelled."""
    base = np.vstack([np.zeros(rows.shape[1]), np.cumsum(rows, axis=0)[:-1]])
    span = float(x[-1] - x[0]) if len(x) > 1 else 1.0
    for i, label in enumerate(labels):
        thick = rows[i]
        if float(np.max(thick)) < 0.04 * top:
            continue
        wide = thick >= 0.6 * float(np.max(thick))
        best, best_len, start = (0, 0), 0.0, None
        for j in range(len(x) + 1):
            inside = j < len(x) and bool(wide[j])
            if inside and start is None:
                start = j
            elif not inside and start is not None:
                end = min(j, len(x) - 1)
                if float(x[end] - x[start]) > best_len:
                    best, best_len = (start, end), float(x[end] - x[start])
                start = None
        if best_len < 0.03 * span:
            continue
        mid = (best[0] + best[1]) // 2
        centre = (x[best[0]] + x[best[1]]) / 2
        ax.text(
            centre,
            base[i][mid] + thick[mid] / 2,
            label.split(" ")[0],
            ha="center",
            va="center",
            fontsize=6,
            color="white",
            clip_on=True,
        )


# ------------------------------------------------------------------------------------------------ helpers


def _figure(width: float, height: float, rows: int = 1, height_ratios=None):
    fig = Figure(figsize=(width, height), layout="constrained")
    if rows == 1:
        return fig, fig.subplots()
    return fig, fig.subplots(rows, 1, sharex=True, gridspec_kw={"height_ratios": height_ratios})


def _load_arrays(series: ReplaySeries) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
    """The load samples inside the replay, closed with a last point at its end so steps reach it."""
    rows = [s for s in series.load if s[0] <= series.end] or [(series.start, 0.0, 0.0, 0.0)]
    if rows[-1][0] < series.end:
        rows.append((series.end, *rows[-1][1:]))
    arr = np.array(rows, dtype=float)
    return list(arr[:, 0]), arr[:, 1], arr[:, 2], arr[:, 3]


def _windows(series: ReplaySeries):
    return [w for w in series.dr_windows if w.end > series.start and w.start < series.end]


def _shade_dr(ax, series: ReplaySeries, label: bool) -> None:
    for i, w in enumerate(_windows(series)):
        a, b = _num([max(w.start, series.start), min(w.end, series.end)])
        ax.axvspan(a, b, color=DR_COLOUR, alpha=0.13, lw=0, label="DR event" if label and i == 0 else None)


def _time_axis(ax, series: ReplaySeries) -> None:
    locator = mdates.AutoDateLocator(tz=SITE_TZ, minticks=6, maxticks=14)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=SITE_TZ, show_offset=False))
    ax.set_xlim(*_num([series.start, series.end]))
    ax.set_xlabel(f"local time ({SITE_TZ.key})")
    ax.grid(True, axis="x", alpha=0.3)


def _num(times) -> np.ndarray:
    """POSIX seconds to matplotlib date numbers."""
    epoch = mdates.date2num(datetime(1970, 1, 1, tzinfo=UTC))
    return np.asarray(times, dtype=float) / 86400.0 + epoch


def _title(series: ReplaySeries) -> str:
    first = datetime.fromtimestamp(series.start, SITE_TZ).date()
    last = datetime.fromtimestamp(series.end - 1, SITE_TZ).date()
    span = first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
    return f"{series.site_id}, {span}" if series.site_id else span
