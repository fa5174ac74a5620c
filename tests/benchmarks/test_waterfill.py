"""The departure-blind water-fill baseline of the quality benchmark on cases small enough to check by hand."""

from __future__ import annotations

import pytest

from benchmarks.quality import LpProblem, LpSession, Taper, max_energy
from benchmarks.waterfill import waterfill


def test_equal_shares_up_to_each_evs_maximum_and_the_rest_to_the_others():
    # 10 kW of room, three EVs at most 2, 6 and 6 kW: 2 + 4 + 4
    p = LpProblem(
        sessions=[LpSession(0, 1, 1.0, 2.0), LpSession(0, 1, 1.0, 6.0), LpSession(0, 1, 1.0, 6.0)],
        limit_kw=[12.0],
        building_kw=[2.0],
        price_per_kwh=[0.1],
    )
    fill = waterfill(p)
    assert [row[0] for row in fill.power_kw] == pytest.approx([2.0, 4.0, 4.0])
    assert fill.energy_kwh == pytest.approx(10 / 60)


def test_a_phase_rating_stops_the_ev_on_it_and_the_others_take_the_rest():
    # 16 A on each phase at 230 V: a 1-phase EV on L1 stops at 3.68 kW; a 3-phase EV beside it is held at
    # the same 16 A on L1 (11.04 kW over three phases), the kW room (20) binding neither
    p = LpProblem(
        sessions=[LpSession(0, 1, 5.0, 7.4, phases=(0,)), LpSession(0, 1, 5.0, 22.0)],
        limit_kw=[20.0],
        building_kw=[0.0],
        price_per_kwh=[0.1],
        limit_a=16.0,
    )
    fill = waterfill(p)
    one, three = (row[0] for row in fill.power_kw)
    assert one * 1000 / 230 + three * 1000 / (3 * 230) == pytest.approx(16.0)
    assert one == pytest.approx(three)  # equal shares in kW until L1 fills
    assert fill.energy_kwh <= max_energy(p).energy_kwh + 1e-9


def test_departure_blindness_costs_energy_the_optimum_keeps():
    # 6 kW of room for two minutes; A leaves after minute 0 wanting 0.1 kWh (6 kW-minutes), B stays and
    # wants as much: the optimum gives A all of minute 0 and B minute 1; equal shares give A only 3.
    p = LpProblem(
        sessions=[LpSession(0, 1, 0.1, 6.0), LpSession(0, 2, 0.1, 6.0)],
        limit_kw=[6.0, 6.0],
        building_kw=[0.0, 0.0],
        price_per_kwh=[0.1, 0.1],
    )
    assert max_energy(p).energy_kwh == pytest.approx(12 / 60)
    assert waterfill(p).energy_kwh == pytest.approx(9 / 60)


def test_a_tapering_ev_takes_less_as_it_fills_and_the_need_caps_it():
    # a 1 kWh battery at 80 %: 6 kW in minute 0 (0.1 kWh: 90 %), then 6 x (1 - 0.85 x 10 / 20) = 3.45 kW
    # (95.75 %), then 6 x (1 - 0.85 x 15.75 / 20) = 1.98 kW; a need of 0.15 kWh stops it in minute 2
    taper = Taper(battery_kwh=1.0, arrival_soc_pct=80.0, ev_max_kw=6.0)
    p = LpProblem([LpSession(0, 3, 0.2, 6.0, taper=taper)], [10.0] * 3, [0.0] * 3, [0.1] * 3)
    assert waterfill(p).power_kw[0] == pytest.approx([6.0, 3.45, 1.98375])
    p = LpProblem([LpSession(0, 3, 0.15, 6.0, taper=taper)], [10.0] * 3, [0.0] * 3, [0.1] * 3)
    fill = waterfill(p)
    assert fill.power_kw[0] == pytest.approx([6.0, 3.0, 0.0])
    assert fill.energy_kwh == pytest.approx(0.15)


def test_with_floors_what_does_not_fit_at_6_a_is_paused_and_the_rest_share_above_their_floors():
    # 10 kW of room, three 3-phase EVs of 11 kW arriving in turn: at 6 A x 3 x 230 V = 4.14 kW each, two
    # floors fit and the third is paused; the 1.72 kW left go equally to the two. A fourth EV that takes
    # only 1 kW (a full battery) holds just that, so it is admitted before the third.
    floor = 6 * 3 * 230 / 1000
    sessions = [LpSession(0, 1, 1.0, 11.0), LpSession(0.0, 1, 1.0, 11.0), LpSession(0.0, 1, 1.0, 11.0)]
    p = LpProblem(sessions, [10.0], [0.0], [0.1])
    assert [row[0] for row in waterfill(p).power_kw] == pytest.approx([10 / 3] * 3)
    with_floors = [row[0] for row in waterfill(p, floors=True).power_kw]
    assert with_floors == pytest.approx([floor + (10 - 2 * floor) / 2] * 2 + [0.0])
    small = LpSession(0, 1, 1 / 60, 11.0)  # wants 1 kW-minute: takes 1 kW at most
    p = LpProblem([*sessions[:2], small, sessions[2]], [10.0], [0.0], [0.1])
    assert [row[0] for row in waterfill(p, floors=True).power_kw] == pytest.approx(
        [floor + (10 - 2 * floor - 1) / 2] * 2 + [1.0, 0.0]
    )
