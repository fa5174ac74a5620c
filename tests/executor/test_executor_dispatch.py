"""Setpoints to SetChargingProfile: payload, collapsing, ordering rules, dead letters, retries, reconnects."""

from __future__ import annotations

import asyncio
import logging

from ocpp.v16 import call

from pipeline.contracts.topics import TopologyNode, decode
from pipeline.transport import publish
from tests.kits.ocpp import T0, at, command, iso, open_charge_point, wait_for

COMMANDS = "ocpp.setpoint.commands"
ACKS = "ocpp.setpoint.acks"


def profile(tx: int, limit: float, unit: str = "A", phases: int = 3) -> dict:
    """The exact SetChargingProfile.req payload the executor sends for connector 1."""
    return {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1001,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": unit,
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": phases}],
            },
            "transactionId": tx,
        },
    }


def acks(transport, purpose: str | None = "Tx") -> list:
    """Acks on the topic, of one purpose (``None``: all)."""
    every = [decode(ACKS, r.key, r.value) for r in transport.log(ACKS)]
    return [a for a in every if purpose is None or a.purpose == purpose]


async def settle(transport) -> None:
    """Wait until the executor has consumed and committed everything, then let dispatchers run."""
    await wait_for(lambda: transport.lag() == 0, what="consumer caught up")
    await asyncio.sleep(0.05)


async def test_setpoint_becomes_exact_set_charging_profile(charge_point, executor, transport):
    async with charge_point() as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.04))
        await wait_for(lambda: cp.tx_profiles, what="SetChargingProfile")
        assert cp.tx_profiles == [profile(tx, 16.0)]
        [ack] = await wait_for(lambda: acks(transport), what="ack")
        assert ack.model_dump() == {
            "charge_point_id": "CP1",
            "connector_id": 1,
            "session_id": f"CP1-{tx}",
            "action": "SetChargingProfile",
            "purpose": "Tx",
            "setpoint_kw": 11.0676,
            "limit": 16.0,
            "charging_rate_unit": "A",
            "status": "Accepted",
            "error": None,
            "computed_at": at(0),
            "sent_at": at(0),
            "answered_at": at(0),
        }
        assert executor.held_setpoints() == {("CP1", 1): 16.0}
        assert executor.desired_setpoints() == {("CP1", 1): 16.04}
        assert executor.stats.profiles_sent == 1
        assert executor.stats.calls_by_result == {"Accepted": 1}
        sample = executor.registry.get_sample_value
        assert sample("executor_profiles_total", {"purpose": "Tx", "result": "Accepted"}) == 1
        assert sample("ocpp_connected_chargers") == 1
        assert sample("executor_dispatch_latency_seconds_count") == 1


async def test_watts_unit(make_executor, transport):
    executor = await make_executor(charging_rate_unit="W")
    async with open_charge_point(executor.port) as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=10.0))  # 6.9 kW
        await wait_for(lambda: cp.tx_profiles, what="SetChargingProfile")
        assert cp.tx_profiles == [profile(tx, 6900.0, unit="W")]
        await wait_for(lambda: executor.held_setpoints() == {("CP1", 1): 6900.0}, what="held in W")


async def test_setpoint_waits_for_its_transaction(charge_point, executor, transport):
    async with charge_point() as cp:
        await publish(transport, COMMANDS, command(tx=12345, setpoint_a=10.0))  # not this charger's tx
        tx = await cp.start_tx()
        await settle(transport)
        assert cp.tx_profiles == []
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=10.0, computed_at=at(1)))
        await wait_for(lambda: cp.tx_profiles == [profile(tx, 10.0)], what="profile for the active tx")


async def test_hundred_rapid_setpoints_collapse_to_at_most_two_calls(charge_point, executor, transport):
    async with charge_point() as cp:
        tx = await cp.start_tx()
        cp.delay_s = 0.05
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=6.0, computed_at=at(0)))
        await asyncio.wait_for(cp.in_handler.wait(), 1)  # the first call is in flight
        for i in range(1, 100):
            await publish(transport, COMMANDS, command(tx=tx, setpoint_a=6.0 + i / 10, computed_at=at(i)))
            await asyncio.sleep(0)
        await wait_for(lambda: executor.held_setpoints().get(("CP1", 1)) == 15.9, what="last value held")
        await settle(transport)
        assert len(cp.tx_profiles) <= 2
        assert cp.tx_profiles[-1] == profile(tx, 15.9)
        assert executor.stats.profiles_sent == len(cp.tx_profiles)
        assert executor.stats.updates_collapsed == 99 - (len(cp.tx_profiles) - 1)
        assert executor.registry.get_sample_value("executor_setpoint_updates_collapsed_total") == (
            executor.stats.updates_collapsed
        )
        assert [a.status for a in acks(transport)] == ["Accepted"] * len(cp.tx_profiles)


async def test_stale_computed_at_is_ignored(charge_point, executor, transport):
    async with charge_point() as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=10.0, computed_at=at(10)))
        await wait_for(lambda: executor.held_setpoints().get(("CP1", 1)) == 10.0, what="first value held")
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=20.0, computed_at=at(5)))
        await settle(transport)
        assert executor.desired_setpoints() == {("CP1", 1): 10.0}
        assert cp.tx_profiles == [profile(tx, 10.0)]
        assert executor.stats.stale_ignored == 1


async def test_deadband_skips_small_changes(make_executor, transport):
    executor = await make_executor(deadband_a=0.5)
    async with open_charge_point(executor.port) as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.0, computed_at=at(0)))
        await wait_for(lambda: executor.held_setpoints().get(("CP1", 1)) == 16.0, what="held")
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=16.3, computed_at=at(1)))
        await settle(transport)
        assert len(cp.tx_profiles) == 1
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=15.5, computed_at=at(2)))
        await wait_for(lambda: len(cp.tx_profiles) == 2, what="change at the deadband is sent")
        assert cp.tx_profiles[-1] == profile(tx, 15.5)


async def test_malformed_setpoint_is_dead_lettered_and_consumption_continues(charge_point, executor, transport):
    async with charge_point() as cp:
        tx = await cp.start_tx()
        await transport.send(COMMANDS, f"CP1-{tx}", b"{not json")
        await transport.send(COMMANDS, "wrong-key", command(tx=tx, setpoint_a=8.0).model_dump_json().encode())
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=12.0))
        await wait_for(lambda: cp.tx_profiles == [profile(tx, 12.0)], what="good setpoint applied")
        dlq = transport.log(f"{COMMANDS}.dlq")
        assert [(r.key, r.value) for r in dlq] == [
            (f"CP1-{tx}", b"{not json"),
            ("wrong-key", command(tx=tx, setpoint_a=8.0).model_dump_json().encode()),
        ]
        assert dict(dlq[0].headers)["source.topic"] == COMMANDS.encode()


async def test_tombstone_and_stop_clear_desired_state(charge_point, executor, transport):
    async with charge_point() as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=10.0))
        await wait_for(lambda: executor.held_setpoints(), what="held")
        await transport.send(COMMANDS, f"CP1-{tx}", None)
        await settle(transport)
        assert executor.desired_setpoints() == {}
        await cp.call(call.StopTransaction(meter_stop=2000, timestamp=iso(at(60)), transaction_id=tx))
        assert executor.held_setpoints() == {}


async def test_reconnect_gets_the_profile_again(make_executor, transport):
    executor = await make_executor()
    async with open_charge_point(executor.port) as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=14.0))
        await wait_for(lambda: cp.tx_profiles, what="first profile")
    await wait_for(lambda: executor.stats.connected == 0, what="disconnect")
    async with open_charge_point(executor.port) as cp:
        await wait_for(lambda: cp.tx_profiles, what="profile after reconnect")
        assert cp.tx_profiles == [profile(tx, 14.0)]
    assert executor.stats.profiles_sent == 2


async def test_restarted_executor_rebuilds_desired_state_before_serving(make_executor, transport):
    first = await make_executor()
    async with open_charge_point(first.port) as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=9.0))
        await wait_for(lambda: first.held_setpoints(), what="held")
    await first.stop()

    second = await make_executor()
    assert second.desired_setpoints() == {("CP1", 1): 9.0}
    async with open_charge_point(second.port) as cp:
        await wait_for(lambda: cp.tx_profiles == [profile(tx, 9.0)], what="profile from rebuilt state")


async def test_rejected_profile_is_retried_and_reported(charge_point, executor, transport):
    async with charge_point() as cp:
        tx = await cp.start_tx()
        cp.statuses = ["Rejected", "raise"]
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=11.0))
        await wait_for(lambda: len(acks(transport)) == 3, what="three acks")
        statuses = [(a.status, a.error) for a in acks(transport)]
        assert statuses[0] == ("Rejected", None)
        assert statuses[1][0] == "CallError" and statuses[1][1].startswith("InternalError")
        assert statuses[2] == ("Accepted", None)
        assert cp.tx_profiles == [profile(tx, 11.0)] * 3
        assert executor.stats.calls_by_result == {"Rejected": 1, "CallError": 1, "Accepted": 1}
        assert executor.held_setpoints() == {("CP1", 1): 11.0}


async def test_a_profile_rejected_as_its_transaction_ended_is_no_warning(charge_point, transport, caplog):
    """The charger ends the transaction while the TxProfile for it is in flight, and rejects it (OCPP 1.6
    section 3.13.1: a TxProfile needs its transaction): a race, not a fault, so INFO, not WARNING."""
    caplog.set_level(logging.INFO, logger="executor")
    async with charge_point() as cp:
        tx = await cp.start_tx()
        cp.statuses, cp.delays = ["Rejected"], [0.3]
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=11.0))
        await wait_for(cp.in_handler.is_set, what="the profile in flight")
        await cp.call(call.StopTransaction(transaction_id=tx, meter_stop=2000, timestamp=iso(T0)))
        await wait_for(lambda: acks(transport), what="its ack")
        assert acks(transport)[0].status == "Rejected"
        rejected = [r for r in caplog.records if "Rejected" in r.getMessage()]
        assert rejected and all(r.levelno == logging.INFO for r in rejected)
        assert "its transaction has ended" in rejected[0].getMessage()


async def test_timeout_is_reported_and_retried(make_executor, transport):
    executor = await make_executor(call_timeout_s=0.3)
    async with open_charge_point(executor.port) as cp:
        tx = await cp.start_tx()
        cp.delays = [0.35]
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=7.0))
        await wait_for(lambda: len(acks(transport)) == 2, what="two acks")
        first, second = acks(transport)
        assert (first.status, first.answered_at) == ("Timeout", None)
        assert second.status == "Accepted"
        await wait_for(lambda: executor.stats.in_flight == 0, what="nothing in flight")


async def test_unmanaged_charger_gets_no_profiles(make_executor, transport):
    await publish(
        transport,
        "site.topology",
        TopologyNode(node_id="CP3", site_id="depot-1", parent_id="depot-1", kind="charger", limit_kw=7, managed=False),
    )
    executor = await make_executor()
    async with open_charge_point(executor.port, "CP3") as cp:
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(cp="CP3", tx=tx, setpoint_a=6.0))
        await settle(transport)
        assert cp.tx_profiles == []


async def test_fail_safe_profiles_at_boot_are_exact(charge_point, executor, transport):
    async with charge_point() as cp:
        await cp.boot()
        await wait_for(
            lambda: len(cp.of("ChargePointMaxProfile")) == 2 and cp.of("TxDefaultProfile"), what="fail-safe profiles"
        )
        safe, lift = cp.of("ChargePointMaxProfile")
        assert safe == {
            "connectorId": 0,
            "csChargingProfiles": {
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "ChargePointMaxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "startSchedule": "2025-01-05T08:00:00.000Z",
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 31.8, "numberPhases": 3}],
                },
            },
        }
        assert cp.of("TxDefaultProfile") == [
            {
                "connectorId": 0,
                "csChargingProfiles": {
                    "chargingProfileId": 3,
                    "stackLevel": 0,
                    "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Relative",
                    "chargingSchedule": {
                        "chargingRateUnit": "A",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0, "numberPhases": 3}],
                    },
                },
            }
        ]
        assert lift["csChargingProfiles"]["stackLevel"] == 1
        assert lift["csChargingProfiles"]["validTo"] == "2025-01-06T08:30:00.000Z"  # now + the 30 min TTL
        get = next(f for f in cp.frames if f[:1] == [2] and f[2] == "GetConfiguration")
        assert get[3] == {"key": ["ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods"]}
        # a BootNotification on a live connection (a reboot) installs them again
        await cp.boot()
        await wait_for(lambda: len(cp.of("TxDefaultProfile")) == 2, what="fail-safe again after a reboot")
        assert executor.stats.failsafe_activations == {"boot": 2}


async def test_charger_that_accepts_only_power_gets_watts(make_executor, transport):
    executor = await make_executor()  # prefers A
    async with open_charge_point(executor.port) as cp:
        cp.rate_units = "Power"
        await cp.boot()
        tx = await cp.start_tx()
        await publish(transport, COMMANDS, command(tx=tx, setpoint_a=10.0))
        # the cut from the rating goes before the fail-safe profiles: wait for both
        await wait_for(lambda: cp.tx_profiles and cp.of("TxDefaultProfile"), what="SetChargingProfile")
        assert cp.tx_profiles == [profile(tx, 6900.0, unit="W")]
        await wait_for(lambda: cp.of("TxDefaultProfile"), what="TxDefaultProfile")  # it may follow the TxProfile
        assert cp.of("TxDefaultProfile")[0]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"] == [
            {"startPeriod": 0, "limit": 4140.0, "numberPhases": 3}
        ]


async def test_unmanaged_and_unknown_chargers_get_no_fail_safe(make_executor, transport):
    executor = await make_executor()
    async with open_charge_point(executor.port, "CP9") as cp:  # not in topology: no node to share
        await cp.boot()
        await asyncio.sleep(0.2)
        assert cp.profiles == []
