"""A setpoint's next known decrease travels as a second chargingSchedulePeriod (exact 1.6 and 2.0.1
frames), only to chargers that take two periods per schedule, and the ledger counts the current period
until the cut and the lower one after it."""

from __future__ import annotations

from datetime import timedelta

from executor.config import ExecutorConfig
from executor.ledger import Ledger
from executor.ocpp.station import ProfileRequest
from executor.planning import Call, ConnectorState, Installed, plan_charger
from executor.topology import ChargerInfo, Topology
from pipeline.contracts.topics import TopologyNode
from pipeline.transport import publish
from tests.kits.ocpp import T0, at, command, open_charge_point, wait_for
from tests.kits.ocpp201 import open_station

COMMANDS = "ocpp.setpoint.commands"
CUT_AT = T0 + timedelta(minutes=30)


def ahead(setpoint_a: float = 16.0, next_a: float = 10.0, when=CUT_AT, **kw):
    """A command at ``setpoint_a`` whose next known decrease is ``next_a`` from ``when``."""
    return command(
        setpoint_a=setpoint_a,
        next_change_at=when,
        next_setpoint_a=next_a,
        next_setpoint_kw=round(next_a * 3 * 230 / 1000, 4),
        **kw,
    )


def profile_16(tx: int, periods: list[dict], absolute: bool) -> dict:
    schedule: dict = {"chargingRateUnit": "A", "chargingSchedulePeriod": periods}
    if absolute:
        schedule = {"startSchedule": "2025-01-05T08:00:00.000Z", **schedule}
    return {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1001,
            "transactionId": tx,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute" if absolute else "Relative",
            "chargingSchedule": schedule,
        },
    }


async def test_v16_the_cut_ahead_is_a_second_period_from_an_absolute_start(executor, transport):
    async with open_charge_point(executor.port) as cp:
        cp.max_periods = "5"
        await cp.boot()
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, ahead(tx=tx))
        await wait_for(lambda: cp.tx_profiles, what="TxProfile", timeout=10)
        # a day before now (2025-01-05T08:00:00Z) + 86400 s + 30 min = the cut
        assert cp.tx_profiles == [
            profile_16(
                tx,
                [
                    {"startPeriod": 0, "limit": 16.0, "numberPhases": 3},
                    {"startPeriod": 88200, "limit": 10.0, "numberPhases": 3},
                ],
                absolute=True,
            )
        ]
        get = next(f for f in cp.frames if f[:1] == [2] and f[2] == "GetConfiguration")
        assert get[3] == {"key": ["ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods"]}
        sent = await wait_for(lambda: executor._dispatchers["CP1"]._sent.get(("Tx", 1)), what="the answer", timeout=10)
        assert sent == Installed(16.0, "A", transaction_id=str(tx), next_at=CUT_AT, next_limit=10.0)


async def test_v16_a_charger_of_one_period_or_unknown_gets_the_flat_limit(executor, transport):
    for cp_id, periods, phases in (("CP1", None, 3), ("CP2", "1", 1)):
        async with open_charge_point(executor.port, cp_id) as cp:
            cp.max_periods = periods
            await cp.boot()
            tx = await cp.start_tx()
            await publish(transport, COMMANDS, ahead(cp=cp_id, tx=tx, setpoint_a=6.0, next_a=0.0, phases=phases))
            await wait_for(lambda cp=cp: cp.tx_profiles, what="TxProfile", timeout=10)
            frame = cp.tx_profiles[-1]["csChargingProfiles"]
            assert frame["chargingProfileKind"] == "Relative"
            assert frame["chargingSchedule"] == {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0, "numberPhases": phases}],
            }


async def test_a_cut_already_due_is_sent_as_the_flat_limit(executor, transport):
    async with open_charge_point(executor.port) as cp:
        cp.max_periods = "5"
        await cp.boot()
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, ahead(tx=tx, when=at(-1)))
        await wait_for(lambda: cp.tx_profiles, what="TxProfile", timeout=10)
        assert cp.tx_profiles == [profile_16(tx, [{"startPeriod": 0, "limit": 10.0, "numberPhases": 3}], False)]


async def test_v201_the_cut_ahead_is_a_second_period_from_an_absolute_start(executor, transport):
    async with open_station(executor.port) as cs:
        cs.periods_per_schedule = "3"
        await cs.boot()
        tx = await cs.start_tx()
        await publish(transport, COMMANDS, ahead(tx=tx))
        await wait_for(lambda: cs.tx_profiles, what="TxProfile", timeout=10)
        assert cs.tx_profiles == [
            {
                "evseId": 1,
                "chargingProfile": {
                    "id": 1001,
                    "stackLevel": 1,
                    "chargingProfilePurpose": "TxProfile",
                    "chargingProfileKind": "Absolute",  # K01.FR.40: with its startSchedule
                    "chargingSchedule": [
                        {
                            "id": 1001,
                            "startSchedule": "2025-01-05T08:00:00.000Z",
                            "chargingRateUnit": "A",
                            "chargingSchedulePeriod": [
                                {"startPeriod": 0, "limit": 16.0, "numberPhases": 3},
                                {"startPeriod": 88200, "limit": 10.0, "numberPhases": 3},
                            ],
                        }
                    ],
                    "transactionId": tx,
                },
            }
        ]
        get = next(f for f in cs.frames if f[:1] == [2] and f[2] == "GetVariables")
        assert [d["variable"]["name"] for d in get[3]["getVariableData"]] == ["RateUnit", "PeriodsPerSchedule"]


def kw(amps: float) -> float:
    return amps * 3 * 230 / 1000


def ledger_32a() -> Ledger:
    topology = Topology()
    for node in [
        TopologyNode(node_id="s", site_id="s", kind="site", limit_kw=100),
        TopologyNode(node_id="p", site_id="s", parent_id="s", kind="panel", limit_kw=22.08),
        TopologyNode(node_id="A", site_id="s", parent_id="p", kind="charger", limit_kw=22.08),
        TopologyNode(node_id="B", site_id="s", parent_id="p", kind="charger", limit_kw=22.08),
    ]:
        topology.apply(node.node_id, node)
    ledger = Ledger(
        topology, lambda node: 22.08 if node == "p" else None, lambda site: 100.0 if site == "s" else None, lag_s=10.0
    )
    for cp in "AB":
        ledger.transaction_started(cp, 1, "1")
        ledger.station_profile(cp, "TxDefault", kw(6), at(-60))
    return ledger


def test_the_ledger_counts_the_current_period_until_the_cut_and_the_lower_one_after_its_lag():
    ledger = ledger_32a()
    cut = (at(100), kw(10), 10.0)
    ledger.sending("A", 1, kw(20), 20.0, cut)
    assert ledger.bound_kw("A", 1, at(1)) == kw(20)  # in flight, before its cut
    ledger.answered("A", 1, "1", kw(20), "Accepted", at(1), 20.0, cut)
    ledger.answered("B", 1, "1", kw(12), "Accepted", at(1), 12.0)
    # B to 20 A needs A's cut: not before it, nor within the EV lag after it
    assert ledger.check_increase("B", 1, kw(20), at(99)) is not None
    blocked = ledger.check_increase("B", 1, kw(20), at(105))
    assert blocked is not None and blocked.until == at(110).timestamp()
    assert ledger.in_force_kw("A", 1, at(105)) == kw(10) and ledger.in_force_a("A", 1, at(105)) == 10.0
    assert ledger.check_increase("B", 1, kw(20), at(110)) is None


def test_a_profile_whose_cut_had_started_when_it_arrived_cools_from_its_answer():
    ledger = ledger_32a()
    ledger.answered("A", 1, "1", kw(20), "Accepted", at(50), 20.0, (at(40), kw(10), 10.0))
    assert ledger.in_force_kw("A", 1, at(50)) == kw(10)
    assert ledger.check_increase("B", 1, kw(20), at(55)) is not None  # 20 A until at(60)
    assert ledger.check_increase("B", 1, kw(20), at(60)) is None


def test_an_unknown_answer_keeps_the_higher_period_in_force():
    ledger = ledger_32a()
    ledger.answered("A", 1, "1", kw(20), "Timeout", at(1), 20.0, (at(40), kw(10), 10.0))
    assert ledger.in_force_kw("A", 1, at(100)) == kw(20)


NOW = at(100)
CP1 = ChargerInfo("depot-1", "panel-a", 22.0, 3, 230.0, True, 1)
FAILSAFE = {
    ("StationMax", 0): Installed(31.8, "A"),
    ("TxDefault", 0): Installed(6.0, "A"),
    ("Lift", 0): Installed(31.8, "A", accepted_at=NOW),
}


def plan_at(now, cmd, in_force_a: float, sent=None, periods: int = 2, asked=None):
    def check(connector_id: int, new_kw: float, new_a: float | None = None):
        if asked is not None:
            asked.append((connector_id, new_a))
        return None

    state = ConnectorState(1, cmd, cmd.computed_at, True, None, "1", kw(in_force_a), in_force_a)
    result = plan_charger(
        unit="A",
        info=CP1,
        safe_kw=22.0,
        connectors=[state],
        sent={**FAILSAFE, **(sent or {})},
        retries={},
        config=ExecutorConfig(),
        now=now,
        now_mono=1000.0,
        check_increase=check,
        schedule_periods=periods,
    )
    assert result is not None
    return result


def test_the_planner_sends_the_cut_ahead_and_wakes_at_it():
    cmd = ahead(tx=1, when=at(200), computed_at=at(0))
    result = plan_at(NOW, cmd, 16.0)
    anchor = (NOW - timedelta(days=1)).replace(microsecond=0)
    request = ProfileRequest(
        "Tx", 1, 1001, 1, 16.0, "A", 3, transaction_id="1", start_schedule=anchor, next_period=(86500, 10.0)
    )
    assert result.calls == [Call(("Tx", 1), request, "resend", kw(16), cmd, (at(200), kw(10), 10.0))]
    # once accepted it is settled, and the planner looks again when the charger's own cut starts
    held = {("Tx", 1): Installed(16.0, "A", transaction_id="1", next_at=at(200), next_limit=10.0)}
    result = plan_at(NOW, cmd, 16.0, held)
    assert (result.calls, result.settled, result.wake_at) == ([], [1], at(200))


def test_after_the_cut_a_raise_back_is_an_increase_the_ledger_checks():
    held = {("Tx", 1): Installed(16.0, "A", transaction_id="1", next_at=at(200), next_limit=10.0)}
    back = command(tx=1, setpoint_a=16.0, computed_at=at(200))
    asked: list = []
    result = plan_at(at(201), back, 10.0, held, asked=asked)  # the ledger holds 10 A in force after the cut
    assert asked == [(1, 16.0)] and [c.reason for c in result.calls] == ["increase"]


def test_a_one_period_charger_gets_the_cut_as_a_flat_limit_at_its_instant():
    cmd = ahead(tx=1, when=at(200), computed_at=at(0))
    result = plan_at(NOW, cmd, 16.0, periods=1)
    assert result.calls[0].request.next_period is None and result.calls[0].then is None
    assert result.wake_at == at(200)
    held = {("Tx", 1): Installed(16.0, "A", transaction_id="1")}
    result = plan_at(at(200), cmd, 16.0, held, periods=1)
    assert [(c.request.limit, c.reason) for c in result.calls] == [(10.0, "decrease")]
