"""MeterValue parsing for both OCPP versions, into :class:`executor.ocpp.station.MeterSample` (kW, kWh, %).

OCPP 1.6 (section 7, types MeterValue and SampledValue) sends ``value`` as a string with an optional
``unit``; OCPP 2.0.1 (2.2 datatypes MeterValueType and SampledValueType) sends a number with an optional
``unitOfMeasure`` ``{unit, multiplier}`` (value x 10^multiplier). Both default the measurand to
``Energy.Active.Import.Register`` and the units to W and Wh. ``Current.Import`` per phase (``phase`` L1, L2,
L3, also as L1-N ...) is what tells how many phases the EV draws on (:mod:`executor.learning`).
"""

from __future__ import annotations

import logging
from typing import Any

from executor.ocpp.ocppj import parse_timestamp
from executor.ocpp.station import MeterSample

__all__ = ["parse_meter_value"]

log = logging.getLogger(__name__)

POWER, ENERGY, SOC, CURRENT = "Power.Active.Import", "Energy.Active.Import.Register", "SoC", "Current.Import"
_CHARGER_PHASES = ("L1", "L2", "L3")


def _phase_total(total: float | None, per_phase: dict[str, float]) -> float | None:
    """The measurand's total: the phase-less value if sent, else the sum over L1/L2/L3 (first of L1/L1-N)."""
    if total is not None:
        return total
    return sum(per_phase.values()) if per_phase else None


def _unit_and_scale(sv: dict[str, Any]) -> tuple[str | None, float]:
    uom = sv.get("unit_of_measure")
    if isinstance(uom, dict):  # 2.0.1
        return uom.get("unit"), 10.0 ** float(uom.get("multiplier") or 0)
    return sv.get("unit"), 1.0


def parse_meter_value(meter_value: dict[str, Any]) -> MeterSample:
    """Turn one snake-cased ``MeterValue`` (1.6 or 2.0.1) into a :class:`MeterSample`.

    Read: ``Power.Active.Import`` (``W`` default or ``kW``) -> kW; ``Energy.Active.Import.Register`` (``Wh`` default or
    ``kWh``) -> kWh; ``SoC`` (Percent); ``Current.Import`` per phase (A) -> ``phase_current_a`` (a phase-less current is
    not used: it does not say which phases carry it). Values with 1.6 ``format`` ``SignedData``, a location other than
    Outlet/EV, or that are not numbers are skipped. Per-phase values are summed when no phase-less total is sent. Raises
    ``PropertyConstraintViolationError`` for a timestamp that is not ISO-8601.
    """
    when = parse_timestamp(meter_value.get("timestamp"))
    totals: dict[str, float] = {}
    phases: dict[str, dict[str, float]] = {}
    for sv in meter_value.get("sampled_value") or []:
        if sv.get("format") == "SignedData" or sv.get("location") not in (None, "Outlet", "EV"):
            continue
        measurand = sv.get("measurand") or ENERGY
        unit, scale = _unit_and_scale(sv)
        try:
            value = float(sv["value"]) * scale
        except (KeyError, TypeError, ValueError):
            log.warning("skipping sampled value that is not a number: %r", sv)
            continue
        if measurand == POWER:
            value = value if unit == "kW" else value / 1000.0
        elif measurand == ENERGY:
            value = value if unit == "kWh" else value / 1000.0
        elif measurand == CURRENT:
            if unit not in (None, "A"):
                continue
        elif measurand != SOC:
            continue
        phase = sv.get("phase")
        if phase is None:
            totals[measurand] = value
        else:
            phases.setdefault(measurand, {}).setdefault(str(phase)[:2], value)
    return MeterSample(
        timestamp=when,
        power_kw=_phase_total(totals.get(POWER), phases.get(POWER, {})),
        energy_register_kwh=_phase_total(totals.get(ENERGY), phases.get(ENERGY, {})),
        soc_pct=totals.get(SOC),
        phase_current_a={k: max(0.0, v) for k, v in phases.get(CURRENT, {}).items() if k in _CHARGER_PHASES},
    )
