"""The tunable parameters: their names, defaults and bounds, shared by the ``pipeline.params`` topic, the
``pipeline param`` command and the ``pipeline_settings`` view's defaults."""

from __future__ import annotations

from typing import Literal

from pipeline.contracts.units import BOUNDS

__all__ = ["PARAMETERS", "ParameterName"]

PARAMETERS: dict[str, tuple[float, float, float]] = {
    "tariff.multiplier.OFF_PEAK": (1.0, 0.0, 1.0),
    "tariff.multiplier.MID_PEAK": (1.0, 0.0, 1.0),
    "tariff.multiplier.ON_PEAK": (0.5, 0.0, 1.0),
    "tariff.multiplier.CRITICAL_PEAK": (0.0, 0.0, 1.0),
    "alert.setpoint_deviation.margin_kw": (1.0, 0.0, BOUNDS["charger_kw"]),
    "alert.setpoint_deviation.margin_share": (0.1, 0.0, 10.0),
    "alert.setpoint_deviation.delay_s": (60.0, 0.0, 3_600.0),
    "alert.node_over_limit.margin_kw": (0.5, 0.0, BOUNDS["site_kw"]),
    "alert.clock_skew.threshold_s": (60.0, 1.0, 86_400.0),
}
"""Tunable parameters, ``{name: (default, minimum, maximum)}``, each with bounds of its own:

* ``tariff.multiplier.<tier>``: the share (0 .. 1) of its cap a flexible session may take in that tier;
* ``alert.setpoint_deviation.margin_kw`` / ``margin_share``: a session draws above its setpoint by more
  than max(margin_kw, margin_share x setpoint) (kW; a share, up to 10 = 1000 %), in a reading taken
  ``delay_s`` or more after the setpoint was computed (s, 0 .. 1 h: the EV's time to follow it);
* ``alert.node_over_limit.margin_kw``: measured load above a breaker's limit by more than this (kW);
* ``alert.clock_skew.threshold_s``: a charger's clock differs from the executor's by more than this (s,
  1 s .. 1 day).

The defaults are written in sql/views/pipeline_settings.sql too (a test holds them equal); a
``pipeline.params`` record overrides one without a migration. What stays a literal in ``sql/``, and why,
is in docs/architecture.md ("Parameters")."""

ParameterName = Literal[
    "tariff.multiplier.OFF_PEAK",
    "tariff.multiplier.MID_PEAK",
    "tariff.multiplier.ON_PEAK",
    "tariff.multiplier.CRITICAL_PEAK",
    "alert.setpoint_deviation.margin_kw",
    "alert.setpoint_deviation.margin_share",
    "alert.setpoint_deviation.delay_s",
    "alert.node_over_limit.margin_kw",
    "alert.clock_skew.threshold_s",
]
