"""What each EV really takes, learned from its meter: the phases it draws on and a cap on its acceptance.

A charging profile is a maximum, not a target: an EV near full state of charge tapers, a cold battery
takes less, a 1-phase EV on a 3-phase charger draws on L1 only. The engine would keep headroom for such a
session that nobody uses, so the executor measures and publishes two facts on ``ocpp.active.sessions``:

- ``ev_phases`` (:class:`PhaseCounter`): the phases whose ``Current.Import`` clearly carries current once
  the EV has drawn for a few seconds (a phase counts above ``ev_phase_min_a``, judged only in samples
  whose largest phase current is at least twice that, so a tapering EV is not mistaken for a 1-phase one).
- ``learned_cap_kw`` (:class:`CapLearner`): when a session draws less than ``learned_cap_ratio`` of its
  limit in force for ``learned_cap_sustain_s``, its cap drops to the largest draw seen in that window plus
  a margin (``learned_cap_margin_kw`` or ``learned_cap_margin_frac`` of the draw, the larger). It never
  sits below a measured draw (a draw above it lifts it at once); an EV that presses against it (draws
  within a third of a margin of it for ``learned_cap_sustain_s``) has it removed, and so does a probe
  ``learned_cap_probe_s`` after it last changed, so an EV that takes more again gets the chance.
- ``ev_rate_kw`` (:class:`CapLearner` too): the rate the EV last showed it charges at, for plans to time
  what it still needs (docs/architecture.md, "Plans"): its latest draw below its limit (as it tapers above
  about 80 % SoC, it follows), lifted by any larger draw. Unlike the cap it is kept through the probe and
  while the EV waits at 0 for its plan's cheap hours: a plan that counted on the charger's rating instead
  would start an 11 kW EV on a 22 kW charger half as long before its departure as it needs.

Why the loop cannot oscillate (docs/architecture.md, "Executor": outputs follow what the EV takes): a drop needs a
sustained under-draw against an unchanged limit and must lower the cap by at least ``learned_cap_step_kw``; the
limit the engine then sets (at most the cap) is the draw plus the margin, so the EV either draws above the ratio of
it or a second window gives the same cap again (within the step), and nothing changes; an EV that settled at its
acceptance draws a whole margin below its cap (less its meter noise), so it does not press against it either; the
only lift without new evidence is the probe, at most once per ``learned_cap_probe_s``. Pure values and times (epoch
seconds of the meter samples): no I/O, no clock reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from executor.config import ExecutorConfig

__all__ = ["CapLearner", "CapPolicy", "PhaseCounter", "PhasePolicy"]

_EPS = 1e-6


@dataclass(frozen=True)
class CapPolicy:
    """Thresholds of :class:`CapLearner` (defaults as in :class:`executor.config.ExecutorConfig`).

    ``ratio``: under-draw is a draw below ``ratio`` x the limit in force; ``sustain_s``: for at least this
    long (s) against an unchanged limit; ``margin_kw`` / ``margin_frac``: the cap is the draw plus the larger
    of ``margin_kw`` and ``margin_frac`` x the draw (kW); ``step_kw``: a drop smaller than this is not made;
    ``probe_s``: the cap is removed this long after it last changed (s). ``enabled`` False learns nothing.
    """

    ratio: float = 0.85
    sustain_s: float = 60.0
    margin_kw: float = 1.0
    margin_frac: float = 0.1
    step_kw: float = 0.5
    probe_s: float = 600.0
    enabled: bool = True

    @classmethod
    def of(cls, config: ExecutorConfig) -> CapPolicy:
        return cls(
            ratio=config.learned_cap_ratio,
            sustain_s=config.learned_cap_sustain_s,
            margin_kw=config.learned_cap_margin_kw,
            margin_frac=config.learned_cap_margin_frac,
            step_kw=config.learned_cap_step_kw,
            probe_s=config.learned_cap_probe_s,
            enabled=config.learned_cap,
        )

    def margin(self, draw_kw: float) -> float:
        return max(self.margin_kw, self.margin_frac * draw_kw)


@dataclass
class CapLearner:
    """One session's learned cap (kW, ``None``: nothing learned); feed it every meter sample in order.

    State: ``cap_kw``; ``changed_at`` (s) when the cap last changed and ``reason`` why (``drop``: a
    sustained under-draw; ``lift``: a draw above it; ``pressing``: a sustained draw within a third of a
    margin of it; ``probe``: the probe period passed); the under-draw window (its start, the limit it was measured
    against, the largest draw in it) and since when the EV presses against the cap. ``rate_kw`` (kW, ``None``:
    not drawn yet) is the EV's rate as last measured: its latest draw below ``ratio`` x its limit (or under
    no known limit), where the EV, not the limit, sets the draw; a draw held at its limit only lifts it (the
    EV takes at least that) or gives the first estimate (a low one: a plan starts early rather than late).
    No margin, never dropped by the probe.
    """

    policy: CapPolicy
    cap_kw: float | None = None
    changed_at: float | None = None
    reason: str | None = None
    _since: float | None = None
    _pressing_since: float | None = None
    _limit_kw: float | None = None
    _peak_kw: float = 0.0
    rate_kw: float | None = None

    def observe(self, at_s: float, draw_kw: float, limit_kw: float | None, floor_kw: float = 0.0) -> float | None:
        """Fold one sample (time ``at_s`` in s, measured draw in kW, the limit in force in kW or ``None``
        when unknown) and return the cap after it. Samples older than the last change are ignored.

        The cap is never below ``floor_kw`` (the session's floor, 6 A x phases x V by default): a cap under
        the floor would let the allocation pause an EV that tapers at its floor, and resume it at the probe.
        """
        p = self.policy
        if draw_kw > _EPS:  # the rate, learned caps or not: plans need it (learned_cap: false turns caps off)
            free = limit_kw is None or draw_kw < p.ratio * limit_kw  # below its limit: the EV's own rate
            if free or self.rate_kw is None or draw_kw > self.rate_kw:  # held at it: at least the draw
                self.rate_kw = round(draw_kw, 3)
        if not p.enabled:
            return self.cap_kw
        if self.changed_at is not None and at_s < self.changed_at:
            return self.cap_kw
        if self.cap_kw is not None and draw_kw > self.cap_kw + _EPS:  # evidence: it takes more than we thought
            self._set(max(floor_kw, draw_kw + p.margin(draw_kw)), at_s, "lift")
            return self.cap_kw
        if self.cap_kw is not None and self.changed_at is not None and at_s - self.changed_at >= p.probe_s:
            self._set(None, at_s, "probe")  # let the engine offer the rest again
            return self.cap_kw
        if self.cap_kw is not None and draw_kw >= self.cap_kw - p.margin(self.cap_kw) / 3:
            if self._pressing_since is None:
                self._pressing_since = at_s
            if at_s - self._pressing_since >= p.sustain_s:  # evidence: it would take more
                self._set(None, at_s, "pressing")
                return self.cap_kw
        else:
            self._pressing_since = None
        if limit_kw is None or self._limit_kw is None or abs(limit_kw - self._limit_kw) > _EPS:
            self._reset(limit_kw)  # a new limit: the EV needs time to follow it
        if limit_kw is None or limit_kw <= _EPS or draw_kw >= p.ratio * limit_kw:
            self._reset(limit_kw)
            return self.cap_kw
        if self._since is None:
            self._since = at_s
        self._peak_kw = max(self._peak_kw, draw_kw)
        if at_s - self._since >= p.sustain_s:
            new = max(floor_kw, self._peak_kw + p.margin(self._peak_kw))
            if new < limit_kw - _EPS and (self.cap_kw is None or new < self.cap_kw - p.step_kw):
                self._set(new, at_s, "drop")
            self._reset(limit_kw)
        return self.cap_kw

    def _set(self, cap_kw: float | None, at_s: float, reason: str) -> None:
        self.cap_kw = None if cap_kw is None else round(cap_kw, 3)
        self.changed_at, self.reason, self._pressing_since = at_s, reason, None
        self._reset(None)

    def _reset(self, limit_kw: float | None) -> None:
        self._since, self._peak_kw, self._limit_kw = None, 0.0, limit_kw


@dataclass(frozen=True)
class PhasePolicy:
    """Thresholds of :class:`PhaseCounter`: a phase counts above ``min_a`` (A), in samples at least
    ``settle_s`` (s) after the EV started drawing whose largest phase current is at least 2 x ``min_a``."""

    min_a: float = 1.0
    settle_s: float = 5.0

    @classmethod
    def of(cls, config: ExecutorConfig) -> PhasePolicy:
        return cls(min_a=config.ev_phase_min_a, settle_s=config.ev_phase_settle_s)


@dataclass
class PhaseCounter:
    """The phases one EV draws on, from per-phase ``Current.Import`` (``phases`` None until known)."""

    policy: PhasePolicy
    phases: int | None = None
    drawing_since: float | None = None

    def observe(self, at_s: float, phase_current_a: dict[str, float]) -> int | None:
        """Fold one sample's per-phase currents (A by charger phase L1..L3) at ``at_s`` (s); returns the
        phase count after it. A sample without a drawing phase restarts the settling time."""
        if not phase_current_a:
            return self.phases
        top = max(phase_current_a.values())
        if top <= self.policy.min_a:
            self.drawing_since = None
            return self.phases
        if self.drawing_since is None or at_s < self.drawing_since:
            self.drawing_since = at_s
        if at_s - self.drawing_since < self.policy.settle_s or top < 2 * self.policy.min_a:
            return self.phases
        count = sum(1 for a in phase_current_a.values() if a > self.policy.min_a)
        self.phases = min(3, max(1, count))
        return self.phases
