"""The simulated EV as real ones draw: per phase on their own phases, tapering above 80 % SoC, stopping full.

Pure arithmetic on :class:`pipeline.sim.session.Connector` and the EV models of ``ev_specs.json``; the
protocol side is in test_sim_real_ev.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipeline.sim.ev import EV
from pipeline.sim.evs import EVSampler, ac_phases
from pipeline.sim.session import LOCAL, Connector, Session, grid_currents_a
from tests.kits.csms import T0


def ev(*, max_kw=11.0, phases=3, battery_kwh=60.0, soc=20.0, need_kwh=30.0, hours=12.0, **kw) -> EV:
    return EV("EV1", "test", battery_kwh, max_kw, soc, need_kwh, T0, T0 + timedelta(hours=hours), phases, **kw)


def charging(vehicle: EV, offer_a: float, phases: int, draws: list) -> tuple[Connector, Session]:
    """A connector at T0 whose EV follows an offer of ``offer_a`` A per phase on ``phases`` phases."""
    c = Connector(1, phases, on_draw=lambda _c, kw, at: draws.append((round(kw, 6), at)))
    need_wh = min(vehicle.energy_need_kwh, vehicle.room_kwh) * 1000.0
    s = Session(vehicle, T0, 0, need_wh, next_meter=T0 + timedelta(hours=99), transaction_id=1)
    c.session, c.last_t = s, T0
    c.followed_a, c.phases_in_use = offer_a, phases
    c.redraw(T0)
    return c, s


def test_the_ev_models_charge_on_the_phases_of_their_on_board_chargers():
    """ev_specs.json has no phase field (battery_capacity, max_ac_charge_power, ...): 7.4 kW is one phase at
    32 A, 3.6 kW one at 16 A, the e-Golf's 7.2 kW two at 16 A, 11 and 22 kW three."""
    sampler = EVSampler(seed=1)
    phases = {m.name: m.phases for m in sampler.models}
    assert phases["Peugeot 208"] == 1 and phases["Nissan Leaf"] == 1 and phases["Volkswagen Golf"] == 2
    assert {n for n, p in phases.items() if p == 3} == {m.name for m in sampler.models if m.max_ac_kw >= 11}
    assert ac_phases("unknown 3.7 kW", 3.7) == 1 and ac_phases("unknown 22 kW", 22.0) == 3
    visits = sampler.day_visits(T0.date(), 200)
    assert {v.phases for v in visits} == {1, 2, 3}
    assert all(v.phases == phases[v.model] for v in visits)


def test_max_current_per_phase_comes_from_the_ac_power_over_the_ev_phases():
    assert ev(max_kw=7.4, phases=1).max_current_a == pytest.approx(32.17, abs=0.01)
    assert ev(max_kw=11.0, phases=3).max_current_a == pytest.approx(15.94, abs=0.01)
    assert ev(max_kw=7.2, phases=2).max_current_a == pytest.approx(15.65, abs=0.01)
    with pytest.raises(ValueError, match="phases"):
        ev(phases=4)


def test_a_one_phase_ev_draws_on_one_phase_only():
    draws: list = []
    c, _ = charging(ev(max_kw=7.4, phases=1), 16.0, 1, draws)
    assert c.power_kw == pytest.approx(3.68) and c.current_a == 16.0  # 16 A x 1 x 230 V, not 11.04 kW
    assert draws == [(3.68, T0)]


def test_the_taper_steps_down_above_80_pct_and_the_session_ends_full():
    """From 78 % on an 11 kW EV: full power to 80 %, then 1 % steps, each at the taper's value at its top (a
    linear fall to 15 % of the maximum at 100 %), and the end exactly when the battery is full."""
    vehicle = ev(soc=78.0, need_kwh=50.0)  # wants more than fits: the battery takes 22 % of 60 kWh
    draws: list = []
    c, s = charging(vehicle, vehicle.max_current_a, 3, draws)
    c.advance(T0 + timedelta(hours=10))
    assert (s.end_reason, s.energy_wh) == (LOCAL, pytest.approx(13_200.0))
    assert s.soc_pct == pytest.approx(100.0)
    powers = [kw for kw, _ in draws]
    assert powers[0] == pytest.approx(11.0) and len(powers) == 21  # full power, then 20 steps
    assert powers == sorted(powers, reverse=True)
    assert powers[1] == pytest.approx(11.0 * (1 - 0.85 / 20), abs=1e-6)  # 80-81 %: the taper at 81 %
    assert powers[-1] == pytest.approx(11.0 * 0.15, abs=1e-6)  # 99-100 %: 15 % of the maximum
    # every step starts exactly when its 1 % (0.6 kWh) is in: the first after 1.2 kWh at 11 kW
    assert draws[1][1] == T0 + timedelta(seconds=1.2 / 11.0 * 3600)
    t, expected = T0 + timedelta(seconds=1.2 / 11.0 * 3600), []
    for kw in powers[1:]:
        expected.append(t)
        t += timedelta(seconds=0.6 / kw * 3600)
    assert [at for _, at in draws[1:]] == [pytest.approx(x, abs=timedelta(microseconds=25)) for x in expected]
    assert s.end_at == pytest.approx(t, abs=timedelta(microseconds=25))


def test_a_limit_below_the_taper_is_not_tapered_further():
    vehicle = ev(soc=90.0, need_kwh=1.0)
    draws: list = []
    c, _ = charging(vehicle, 6.0, 3, draws)
    assert vehicle.max_current_a * vehicle.taper_fraction(91.0) > 6.0  # the taper at 91 % still allows more
    assert c.current_a == 6.0 and c.power_kw == pytest.approx(4.14)


def test_no_taper_below_the_taper_start():
    vehicle = ev(soc=20.0, need_kwh=30.0)
    draws: list = []
    c, s = charging(vehicle, vehicle.max_current_a, 3, draws)
    c.advance(T0 + timedelta(hours=10))
    assert s.end_reason == LOCAL and s.energy_wh == pytest.approx(30_000.0) and len(draws) == 1
    assert s.end_at == T0 + timedelta(seconds=30.0 / 11.0 * 3600)


def test_the_phase_rotation_maps_the_charger_phases_onto_the_grid():
    one_phase = (16.0, 0.0, 0.0)  # a 1-phase EV draws on the charger's L1
    assert grid_currents_a("RST", one_phase) == (16.0, 0.0, 0.0)
    assert grid_currents_a("SRT", one_phase) == (0.0, 16.0, 0.0)  # the charger's L1 on the grid's L2
    assert grid_currents_a("TSR", one_phase) == (0.0, 0.0, 16.0)
    assert grid_currents_a("STR", (10.0, 6.0, 0.0)) == (0.0, 10.0, 6.0)  # a 2-phase EV: L1 on S, L2 on T
    assert grid_currents_a("RST", (7.0,)) == (7.0, 0.0, 0.0)  # a 1-phase charger


@pytest.mark.parametrize("need_wh", [1003.0, 2000.0])
def test_the_session_ends_at_the_instant_it_said_it_would(need_wh):
    """finish_time() rounds to a microsecond; advancing to it must end the session (not leave a sliver of
    energy due at the same instant, which would spin a session task while the clock is held)."""
    draws: list = []
    c, s = charging(ev(need_kwh=need_wh / 1000.0), ev().max_current_a, 3, draws)
    finish = c.finish_time()
    assert finish is not None
    c.advance(finish)
    assert (s.end_at, s.end_reason, s.energy_wh) == (finish, LOCAL, pytest.approx(need_wh))


def test_a_taper_step_happens_at_the_instant_it_said_it_would():
    vehicle = ev(soc=79.0, battery_kwh=50.3, need_kwh=5.0)
    draws: list = []
    c, s = charging(vehicle, vehicle.max_current_a, 3, draws)
    for _ in range(5):
        step = c.finish_time()
        assert step is not None
        band = s.band
        c.advance(step)
        assert s.band == band + 1 and draws[-1][1] == step
