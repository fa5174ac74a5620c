"""What the executor learns about each EV: the phases it draws on, and a cap when it takes less than its limit.

The property test closes the loop with a simulated EV whose acceptance changes over time: the learned cap goes to
the engine, which lowers the EV's limit to it (after a dispatch lag), and the EV draws min(acceptance, limit),
measured with up to 2 % noise. The learned cap never sits below a measured draw, never lifts without evidence faster
than the probe period, and settles at the EV's acceptance plus the margin.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from executor.learning import CapLearner, CapPolicy, PhaseCounter, PhasePolicy

POLICY = CapPolicy()  # 85 % for 60 s; draw + max(1 kW, 10 %); steps of 0.5 kW; probe every 600 s
RATING_KW = 22.0


def test_phases_are_counted_once_the_ev_has_drawn_for_a_few_seconds():
    counter = PhaseCounter(PhasePolicy(min_a=1.0, settle_s=5.0))
    assert counter.observe(0, {"L1": 0.1, "L2": 0.0, "L3": 0.0}) is None  # not drawing yet
    assert counter.observe(1, {"L1": 15.9, "L2": 6.0, "L3": 0.2}) is None  # ramping: too early to tell
    assert counter.observe(7, {"L1": 15.9, "L2": 0.3, "L3": 0.2}) == 1
    assert counter.observe(70, {"L1": 1.4, "L2": 0.9, "L3": 0.9}) == 1  # tapering: no clear evidence
    assert counter.observe(80, {"L1": 0.2, "L2": 0.2, "L3": 0.2}) == 1  # paused: keeps what it knows
    assert counter.observe(90, {"L1": 16.0, "L2": 16.1, "L3": 15.8}) == 1  # draws again: settle first
    assert counter.observe(96, {"L1": 16.0, "L2": 16.1, "L3": 15.8}) == 3


def test_a_sustained_under_draw_learns_a_cap_and_the_probe_removes_it():
    cap = CapLearner(POLICY)
    assert cap.observe(0, 10.0, 22.0) is None  # under 85 % of 22 kW, but not for 60 s yet
    assert cap.observe(30, 10.0, 22.0) is None
    assert cap.observe(60, 10.0, 22.0) == 11.0  # the draw + 1 kW
    assert cap.observe(90, 10.0, 11.0) == 11.0  # the engine followed: 10 / 11 > 85 %, nothing more to learn
    assert cap.observe(400, 10.0, 11.0) == 11.0
    assert cap.observe(660, 10.0, 11.0) is None  # probe, 600 s after the change
    assert cap.observe(670, 10.0, 22.0) is None  # a new limit: the window starts again
    assert cap.observe(730, 10.0, 22.0) == 11.0


def test_a_tapering_ev_is_followed_down_from_the_largest_draw_of_each_window():
    cap = CapLearner(POLICY)
    assert cap.observe(0, 11.0, 22.0) is None
    assert cap.observe(30, 10.5, 22.0) is None
    assert cap.observe(60, 10.0, 22.0) == 12.1  # the largest draw in the window + 10 %
    assert cap.observe(90, 9.0, 12.1) == 12.1
    assert cap.observe(150, 8.0, 12.1) == 10.0  # 9 kW + 1 kW
    assert cap.observe(160, 8.0, 10.0) == 10.0  # 8 / 10 < 85 %: a new window
    assert cap.observe(220, 8.0, 10.0) == 9.0
    assert cap.observe(300, 8.0, 9.0) == 9.0  # 8 / 9 > 85 %: settled


def test_the_ev_rate_is_its_latest_free_draw_lifted_by_larger_ones_and_outlives_the_probe():
    cap = CapLearner(POLICY)
    assert cap.rate_kw is None  # not drawn yet
    cap.observe(0, 0.0, 22.0)
    assert cap.rate_kw is None  # a limit but no draw says nothing about its rate
    cap.observe(10, 4.1, 4.14)
    assert cap.rate_kw == 4.1  # held at its floor under a tight breaker: at least that, for now
    cap.observe(20, 11.0, 22.0)
    assert cap.rate_kw == 11.0  # free to take 22 kW, it takes 11
    cap.observe(100, 9.0, 12.1)
    assert cap.rate_kw == 9.0  # the taper
    cap.observe(160, 4.1, 4.14)
    assert cap.rate_kw == 9.0  # held at a lower limit: it takes at least that, which says nothing new
    cap.observe(170, 0.0, 0.0)
    assert cap.observe(900, 0.0, 0.0) is None  # waiting at 0 for its plan: the probe removed the cap ...
    assert cap.rate_kw == 9.0  # ... but not what the EV showed it charges at
    cap.observe(910, 9.4, 9.5)
    assert cap.rate_kw == 9.4  # held at its limit but above the rate: it takes at least that


def test_the_ev_rate_is_learned_with_learned_caps_off():
    # plans time a need at it; without it a planned session would charge at once, as if it had never drawn
    cap = CapLearner(CapPolicy(enabled=False))
    assert cap.observe(0, 7.2, 22.0) is None
    assert cap.rate_kw == 7.2


def test_the_cap_is_never_below_the_floor():
    cap = CapLearner(POLICY)
    floor = 6 * 3 * 230 / 1000  # 4.14 kW
    for t in (0, 30, 60, 90):
        assert cap.observe(t, 2.0, floor, floor) is None  # tapering at its floor: nothing to learn
    for t in (100, 130, 160):
        learned = cap.observe(t, 2.5, 11.0, floor)
    assert learned == floor  # 2.5 + 1 kW would be below the floor


def test_an_ev_pressing_against_its_cap_has_it_removed():
    cap = CapLearner(POLICY, cap_kw=8.0, changed_at=0.0)
    assert cap.observe(10, 7.8, 8.0) == 8.0  # within a third of a margin (0.33 kW) of the cap
    assert cap.observe(40, 7.9, 8.0) == 8.0
    assert cap.observe(70, 7.7, 8.0) is None and cap.reason == "pressing"
    settled = CapLearner(POLICY, cap_kw=8.0, changed_at=0.0)
    for t in range(10, 590, 10):
        assert settled.observe(t, 7.0, 8.0) == 8.0  # a whole margin below: settled, kept until the probe


def test_a_draw_above_the_cap_lifts_it_at_once_and_small_drops_are_not_made():
    cap = CapLearner(POLICY, cap_kw=5.0, changed_at=0.0)
    assert cap.observe(10, 7.0, 11.0) == 8.0  # it takes more than we thought
    assert cap.observe(20, 6.8, 8.0) == 8.0
    assert cap.observe(100, 6.8, 8.0) == 8.0  # 6.8 / 8 is 85 %: no under-draw
    assert cap.observe(200, 6.7, 8.0) == 8.0
    assert cap.observe(260, 6.7, 8.0) == 8.0  # under 85 % for 60 s, but 7.7 is within 0.5 kW of 8


@dataclass
class Change:
    at_s: float
    kind: str  # CapLearner.reason: "drop", "lift", "pressing" or "probe"
    before: float | None
    acceptance: float


def simulate(
    steps: list[tuple[int, float]],
    lag_s: float,
    sample_s: float,
    horizon_s: float,
    noise: float = 0.0,
    rng: random.Random | None = None,
    floor_kw: float = 0.0,
):
    """Run the loop: ``steps`` are (duration s, EV acceptance kW). The engine sets the limit to the learned
    cap (or the rating) and the charger applies it ``lag_s`` later; the EV draws min(acceptance, limit),
    measured within +-``noise`` (a fraction)."""
    rng = rng or random.Random(0)
    learner = CapLearner(POLICY)
    acceptance_at = []
    t0 = 0.0
    for duration, kw in steps:
        acceptance_at.append((t0, kw))
        t0 += duration
    limit_kw = RATING_KW
    pending: list[tuple[float, float]] = []  # (applies at, limit)
    changes: list[Change] = []
    samples: list[tuple[float, float, float | None]] = []  # (t, draw, cap after)
    previous = None
    t = 0.0
    while t <= horizon_s:
        while pending and pending[0][0] <= t:
            limit_kw = pending.pop(0)[1]
        acceptance = [kw for start, kw in acceptance_at if start <= t][-1]
        draw = min(acceptance, limit_kw) * (1 + noise * rng.uniform(-1.0, 1.0))
        cap = learner.observe(t, draw, limit_kw, floor_kw)
        if cap != previous:
            assert learner.reason is not None
            changes.append(Change(t, learner.reason, previous, acceptance))
            pending.append((t + lag_s, min(RATING_KW, cap) if cap is not None else RATING_KW))
            previous = cap
        samples.append((t, draw, cap))
        t += sample_s
    return changes, samples, acceptance_at


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=120, max_value=3600), st.floats(min_value=0.0, max_value=RATING_KW)),
        min_size=1,
        max_size=5,
    ),
    lag_s=st.sampled_from([0.0, 5.0, 15.0]),
    sample_s=st.sampled_from([10.0, 15.0, 30.0, 60.0]),
    noise=st.sampled_from([0.0, 0.01, 0.02]),
    rng=st.randoms(use_true_random=False),
    floor_kw=st.sampled_from([0.0, 1.38, 4.14]),
)
def test_the_learned_cap_never_flaps_never_sits_below_the_draw_and_converges(
    steps, lag_s, sample_s, noise, rng, floor_kw
):
    horizon = sum(d for d, _ in steps) + 3 * POLICY.probe_s
    changes, samples, acceptance_at = simulate(steps, lag_s, sample_s, horizon, noise, rng, floor_kw)

    # Never below the floor.
    assert all(cap is None or cap >= floor_kw - 1e-9 for _, _, cap in samples)

    # Never below what the EV draws.
    for t, draw, cap in samples:
        assert cap is None or cap >= draw - 1e-6, (t, draw, cap)

    # Without new evidence the cap comes back up at most once per probe period; with evidence (a draw above
    # it, or pressing against it) only when the EV really takes more than the cap allowed.
    last_change = None
    for change in changes:
        if change.kind == "probe":
            assert last_change is not None and change.at_s - last_change >= POLICY.probe_s
        if change.kind == "pressing":
            assert change.before is not None
            assert change.acceptance * (1 + noise) >= change.before - POLICY.margin(change.before) / 3 - 1e-9
        last_change = change.at_s

    # Converges: in the last constant stretch, from two probe periods after its start (a cap learned across
    # the change is probed away after one), the cap is either absent or within [acceptance, acceptance +
    # margin]; and it changes only at probes and the relearning that follows each (at most 2 per period).
    start, acceptance = acceptance_at[-1]
    settled_from = start + 2 * POLICY.probe_s
    late = [(t, cap) for t, _, cap in samples if t >= settled_from]
    high = acceptance * (1 + noise)
    for t, cap in late:
        if cap is not None:
            assert acceptance - 1e-9 <= cap <= max(floor_kw, high + POLICY.margin(high)) + 1e-3, (t, cap, acceptance)
    late_changes = [c for c in changes if c.at_s >= settled_from]
    assert all(c.kind in ("probe", "drop") for c in late_changes), late_changes
    # per probe period: the probe, the relearning, and with meter noise at most one further drop (a drop is
    # at least 0.5 kW and the noise spans less than that twice over)
    window = horizon - settled_from
    assert len(late_changes) <= 3 * (window // POLICY.probe_s + 1)
