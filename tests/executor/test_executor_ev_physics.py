"""What each EV really takes, end to end over OCPP: ev_phases from per-phase current, learned caps on the
session record, 2.0.1 NotifyEVChargingNeeds, and the TxProfile frame for a 1-phase EV (A per phase with
numberPhases 1, or W)."""

from __future__ import annotations

import json

from ocpp.v16 import call
from ocpp.v201 import call as call201

from executor.ledger import Ledger, grid_phases
from executor.ocpp.meter import parse_meter_value
from executor.planning import why_blocked
from executor.topology import Topology
from pipeline.contracts.topics import TopologyNode
from pipeline.transport import publish
from tests.kits.ocpp import T0, at, command, iso, open_charge_point, wait_for
from tests.kits.ocpp201 import open_station

COMMANDS, SESSIONS = "ocpp.setpoint.commands", "ocpp.active.sessions"


def values(transport) -> list[dict | None]:
    return [json.loads(r.value) if r.value else None for r in transport.log(SESSIONS)]


def currents(l1: float, l2: float, l3: float, power_w: float | None = None) -> list[dict]:
    """1.6 sampledValues: Current.Import on each phase (A), and the power (W) when given."""
    out = [
        {"value": str(a), "measurand": "Current.Import", "unit": "A", "phase": phase}
        for phase, a in (("L1", l1), ("L2", l2), ("L3", l3))
    ]
    if power_w is not None:
        out.append({"value": str(power_w), "measurand": "Power.Active.Import", "unit": "W"})
    return out


async def meter(cp, tx: int, seconds: float, sampled: list[dict]) -> None:
    await cp.call(
        call.MeterValues(
            connector_id=1, transaction_id=tx, meter_value=[{"timestamp": iso(at(seconds)), "sampledValue": sampled}]
        )
    )


def test_meter_values_carry_the_current_on_each_phase():
    sample = parse_meter_value(
        {
            "timestamp": iso(at(0)),
            "sampled_value": [
                {"value": "15.9", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
                {"value": "0.2", "measurand": "Current.Import", "phase": "L2-N"},
                {"value": "-0.1", "measurand": "Current.Import", "phase": "L3"},
                {"value": "3", "measurand": "Current.Import", "phase": "N"},  # the neutral is not a phase
                {"value": "16", "measurand": "Current.Import"},  # no phase: says nothing about phases
                {"value": "2", "measurand": "Current.Offered", "phase": "L1"},
            ],
        }
    )
    assert sample.phase_current_a == {"L1": 15.9, "L2": 0.2, "L3": 0.0}
    v201 = parse_meter_value(
        {
            "timestamp": iso(at(0)),
            "sampled_value": [
                {"value": 160, "measurand": "Current.Import", "phase": "L1", "unit_of_measure": {"multiplier": -1}}
            ],
        }
    )
    assert v201.phase_current_a == {"L1": 16.0}


async def latest(executor, transport) -> dict | None:
    """The newest session record once the outbox has delivered everything."""
    assert await executor.outbox.flush(5.0)
    return values(transport)[-1]


async def test_a_one_phase_ev_on_a_three_phase_charger_is_published_with_ev_phases_1(charge_point, transport, executor):
    async with charge_point() as cp:
        tx = await cp.start_tx()
        await meter(cp, tx, 0, currents(15.8, 0.1, 0.1))  # the EV just started: too early to tell
        assert (await latest(executor, transport) or {})["ev_phases"] is None
        await meter(cp, tx, 10, currents(15.9, 0.2, 0.1))
        assert (await latest(executor, transport) or {})["ev_phases"] == 1
        await meter(cp, tx, 20, currents(1.3, 0.2, 0.1))  # tapering: no clear evidence, it stays 1
        assert (await latest(executor, transport) or {})["ev_phases"] == 1


async def test_an_ev_that_takes_less_than_its_limit_gets_a_learned_cap(charge_point, transport, executor):
    async with charge_point() as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=31.8))  # 21.9 kW on the 22 kW charger
        await wait_for(lambda: executor.held_setpoints() == {("CP1", 1): 31.8}, what="TxProfile accepted")
        caps = []
        for seconds in (0, 30, 60, 90):
            await meter(cp, tx, seconds, currents(7.3, 7.2, 7.2, power_w=5000))  # 5 kW: under 85 % of 21.9
            caps.append((await latest(executor, transport) or {})["learned_cap_kw"])
    assert caps == [None, None, 6.0, 6.0]  # the draw + 1 kW, learned after 60 s


async def test_notify_ev_charging_needs_is_accepted_and_goes_on_the_session(executor, transport):
    async with open_station(executor.port) as cs:
        # needs sent before the transaction starts are kept for it
        early = await cs.call(
            call201.NotifyEVChargingNeeds(
                evse_id=1,
                charging_needs={
                    "requested_energy_transfer": "AC_single_phase",
                    "departure_time": iso(at(3 * 3600)),
                    "ac_charging_parameters": {
                        "energy_amount": 20000,
                        "ev_min_current": 10,
                        "ev_max_current": 16,
                        "ev_max_voltage": 400,
                    },
                },
            )
        )
        assert early.status == "Accepted"
        await cs.start_tx("tx-1")
        assert await executor.outbox.flush(5.0)
        [started] = values(transport)
        assert started is not None
        assert (started["ev_phases"], started["ev_max_power_kw"], started["min_power_kw"]) == (1, 3.68, 2.3)
        assert (started["energy_needed_kwh"], started["departure_at"]) == (20.0, "2025-01-06T11:00:00Z")
        # K17: renegotiation during the transaction updates the record
        again = await cs.call(
            call201.NotifyEVChargingNeeds(
                evse_id=1,
                charging_needs={
                    "requested_energy_transfer": "AC_three_phase",
                    "ac_charging_parameters": {
                        "energy_amount": 12000,
                        "ev_min_current": 6,
                        "ev_max_current": 16,
                        "ev_max_voltage": 400,
                    },
                },
            )
        )
        assert again.status == "Accepted"
        record = await latest(executor, transport)
        assert record is not None
        assert (record["ev_phases"], record["ev_max_power_kw"], record["energy_needed_kwh"]) == (3, 11.04, 12.0)
        assert record["min_power_kw"] is None  # 6 A: the default floor
        assert record["departure_at"] == "2025-01-06T11:00:00Z"  # not said again: kept


async def test_dc_charging_needs_give_the_ev_max_power(executor, transport):
    async with open_station(executor.port) as cs:
        await cs.start_tx("tx-dc")
        result = await cs.call(
            call201.NotifyEVChargingNeeds(
                evse_id=1,
                charging_needs={
                    "requested_energy_transfer": "DC",
                    "dc_charging_parameters": {
                        "ev_max_current": 300,
                        "ev_max_voltage": 450,
                        "ev_max_power": 50000,
                        "energy_amount": 30000,
                        "state_of_charge": 35,
                    },
                },
            )
        )
        assert result.status == "Accepted"
        assert await executor.outbox.flush(5.0)
    record = values(transport)[-1]
    assert record is not None
    assert (record["ev_phases"], record["ev_max_power_kw"]) == (None, 50.0)  # the engine caps at the rating
    assert (record["energy_needed_kwh"], record["soc_pct"]) == (30.0, 35.0)


async def test_transaction_event_currents_give_ev_phases_on_2_0_1(executor, transport):
    def currents201(l1: float, l2: float, l3: float) -> list[dict]:
        return [
            {"value": a, "measurand": "Current.Import", "phase": phase, "unitOfMeasure": {"unit": "A"}}
            for phase, a in (("L1", l1), ("L2", l2), ("L3", l3))
        ]

    async with open_station(executor.port) as cs:
        await cs.start_tx("tx-2")
        for seconds in (0, 10):
            await cs.tx_event(
                "Updated",
                "tx-2",
                evse=None,
                trigger="MeterValuePeriodic",
                meter=[{"timestamp": iso(at(seconds)), "sampledValue": currents201(16.0, 15.9, 0.1)}],
            )
        record = await latest(executor, transport)
    assert record is not None and record["ev_phases"] == 2


async def test_a_one_phase_ev_gets_its_limit_in_amperes_with_number_phases_1(charge_point, transport):
    """The exact SetChargingProfile.req (OCPP 1.6 7.13 ChargingSchedulePeriod.numberPhases) for a command
    whose ``phases`` is the EV's: A per phase on the one phase it draws on."""
    async with charge_point() as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.0, phases=1))
        await wait_for(lambda: cp.tx_profiles, what="SetChargingProfile")
        assert cp.tx_profiles == [
            {
                "connectorId": 1,
                "csChargingProfiles": {
                    "chargingProfileId": 1001,
                    "stackLevel": 1,
                    "chargingProfilePurpose": "TxProfile",
                    "chargingProfileKind": "Relative",
                    "chargingSchedule": {
                        "chargingRateUnit": "A",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0, "numberPhases": 1}],
                    },
                    "transactionId": tx,
                },
            }
        ]


async def test_a_one_phase_ev_gets_watts_with_number_phases_1_when_the_charger_takes_only_power(
    make_executor, transport
):
    executor = await make_executor()
    async with open_charge_point(executor.port) as cp:
        cp.rate_units = "Power"
        await cp.boot()
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.0, phases=1))
        await wait_for(lambda: cp.tx_profiles, what="SetChargingProfile")
        [profile] = cp.tx_profiles
        assert profile["csChargingProfiles"]["chargingSchedule"] == {
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 3680.0, "numberPhases": 1}],
        }


async def test_a_one_phase_ev_on_2_0_1_gets_number_phases_1(executor, transport):
    async with open_station(executor.port) as cs:
        tx = await cs.start_tx("tx-1")
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.0, phases=1))
        await wait_for(lambda: cs.tx_profiles, what="TxProfile")
        [profile] = cs.tx_profiles
        assert profile["chargingProfile"]["chargingSchedule"] == [
            {
                "id": 1001,
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0, "numberPhases": 1}],
            }
        ]


def phase_site(rotation_b: str | None = None) -> tuple[Topology, dict[tuple[str, int], int | None], Ledger]:
    """Two 22 kW 3-phase chargers on a panel rated 32 A per phase (60 kW); B wired with ``rotation_b``."""
    topology = Topology()
    for node in [
        TopologyNode(node_id="s", site_id="s", kind="site", limit_kw=100),
        TopologyNode(node_id="p", site_id="s", parent_id="s", kind="panel", limit_kw=60, limit_a=32),
        TopologyNode(node_id="A", site_id="s", parent_id="p", kind="charger", limit_kw=22),
        TopologyNode(node_id="B", site_id="s", parent_id="p", kind="charger", limit_kw=22, phase_rotation=rotation_b),
    ]:
        topology.apply(node.node_id, node)
    phases: dict[tuple[str, int], int | None] = {}
    ledger = Ledger(
        topology,
        lambda node: 60.0 if node == "p" else None,
        lambda site: 100.0 if site == "s" else None,
        lag_s=10.0,
        ev_phases=lambda cp, connector: phases.get((cp, connector)),
    )
    for cp in "AB":
        ledger.transaction_started(cp, 1, "1")
        ledger.station_profile(cp, "TxDefault", 6 * 3 * 230 / 1000, at(-20), limit_a=6.0)
    return topology, phases, ledger


def one_phase_kw(amps: float) -> float:
    return amps * 230 / 1000


def test_one_phase_evs_on_the_same_grid_phase_are_held_to_the_panels_rating_per_phase():
    _, phases, ledger = phase_site()
    phases[("A", 1)] = phases[("B", 1)] = 1
    ledger.answered("A", 1, "1", one_phase_kw(20), "Accepted", T0, limit_a=20.0)
    assert ledger.phase_bound_a("A", 1, T0) == {"L1": 20.0}
    blocked = ledger.check_increase("B", 1, one_phase_kw(16), T0, new_a=16.0)  # 36 A on L1 > 32 A
    assert blocked is not None and (blocked.group, blocked.phase, blocked.needed_a) == ("p", "L1", 36.0)
    assert why_blocked(blocked) == "headroom: node p L1 36.0 > 32.0 A"
    assert ledger.check_increase("B", 1, one_phase_kw(12), T0, new_a=12.0) is None  # 32 A: fits


def test_a_rotated_charger_puts_its_one_phase_ev_on_another_grid_phase():
    _, phases, ledger = phase_site(rotation_b="SRT")  # B's L1 is the grid's L2
    phases[("A", 1)] = phases[("B", 1)] = 1
    ledger.answered("A", 1, "1", one_phase_kw(20), "Accepted", T0, limit_a=20.0)
    assert ledger.check_increase("B", 1, one_phase_kw(16), T0, new_a=16.0) is None
    assert ledger.phase_bound_a("B", 1, T0) == {"L2": 6.0}
    assert grid_phases("TRS", 2) == ["L3", "L1"]


def test_an_ev_whose_phases_are_unknown_counts_on_every_phase_until_learned():
    _, phases, ledger = phase_site(rotation_b="SRT")
    phases[("B", 1)] = 1
    ledger.answered("A", 1, "1", one_phase_kw(20), "Accepted", T0, limit_a=20.0)
    assert ledger.phase_bound_a("A", 1, T0) == {"L1": 20.0, "L2": 20.0, "L3": 20.0}
    assert ledger.check_increase("B", 1, one_phase_kw(16), T0, new_a=16.0) is not None
    phases[("A", 1)] = 1
    assert ledger.check_increase("B", 1, one_phase_kw(16), T0, new_a=16.0) is None


def test_a_cut_frees_its_phase_only_after_the_ev_response_lag():
    _, phases, ledger = phase_site()
    phases[("A", 1)] = phases[("B", 1)] = 1
    ledger.answered("A", 1, "1", one_phase_kw(20), "Accepted", T0, limit_a=20.0)
    ledger.sending("A", 1, one_phase_kw(10), limit_a=10.0)
    assert ledger.check_increase("B", 1, one_phase_kw(16), T0, new_a=16.0) is not None  # cut in transit
    ledger.answered("A", 1, "1", one_phase_kw(10), "Accepted", at(1), limit_a=10.0)
    blocked = ledger.check_increase("B", 1, one_phase_kw(16), at(1), new_a=16.0)
    assert blocked is not None and blocked.until == at(11).timestamp()
    assert why_blocked(blocked) == "lag: node p L1 36.0 > 32.0 A"
    assert ledger.check_increase("B", 1, one_phase_kw(16), at(11), new_a=16.0) is None


def test_a_limit_in_watts_counts_on_the_evs_phases_or_one_phase_while_they_are_unknown():
    _, phases, ledger = phase_site(rotation_b="SRT")
    ledger.answered("A", 1, "1", 6.9, "Accepted", T0)  # 6900 W: 10 A on 3 phases, 30 A on one
    assert ledger.phase_bound_a("A", 1, T0) == {"L1": 30.0, "L2": 30.0, "L3": 30.0}
    phases[("A", 1)] = 3
    assert ledger.phase_bound_a("A", 1, T0) == {"L1": 10.0, "L2": 10.0, "L3": 10.0}
    ledger.answered("A", 1, "1", 22.0, "Accepted", T0)  # at most the charger's rating per phase (31.9 A)
    phases[("A", 1)] = None
    assert round(ledger.phase_bound_a("A", 1, T0)["L1"], 1) == 31.9


def test_the_limit_a_one_phase_ev_can_draw_counts_its_phases_only():
    _, phases, ledger = phase_site()
    ledger.answered("A", 1, "1", 16 * 3 * 230 / 1000, "Accepted", T0, limit_a=16.0)
    assert ledger.ev_limit_kw("A", 1) == 11.04  # phases unknown: as sent
    phases[("A", 1)] = 1
    assert ledger.ev_limit_kw("A", 1) == 3.68  # 16 A on one phase
    assert ledger.ev_limit_kw("A", 2) is None


async def test_an_increase_that_would_overload_a_grid_phase_is_held_back(make_executor, transport):
    """Two 1-phase EVs on one charger's L1 under a panel rated 20 A per phase: the second waits."""
    for node in [
        TopologyNode(node_id="depot-1", site_id="depot-1", kind="site", limit_kw=100),
        TopologyNode(node_id="panel-a", site_id="depot-1", parent_id="depot-1", kind="panel", limit_kw=60, limit_a=20),
        TopologyNode(node_id="CP1", site_id="depot-1", parent_id="panel-a", kind="charger", limit_kw=22, connectors=2),
    ]:
        await publish(transport, "site.topology", node)
    executor = await make_executor()
    async with open_charge_point(executor.port) as cp:
        first = await cp.start_tx(connector_id=1)
        second = await cp.start_tx(connector_id=2)
        await publish(transport, COMMANDS, command(tx=first, setpoint_a=16.0, phases=1))
        await wait_for(lambda: executor.held_setpoints().get(("CP1", 1)) == 16.0, what="first TxProfile")
        await publish(transport, COMMANDS, command(connector=2, tx=second, setpoint_a=10.0, phases=1))
        held = await wait_for(lambda: executor.held_back().get(("CP1", 2)), what="second held back")
        assert held == "headroom: node panel-a L1 26.0 > 20.0 A"
        assert [p["connectorId"] for p in cp.tx_profiles] == [1]
