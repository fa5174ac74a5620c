"""Restarts and reconnects with simulated chargers (1.6 and 2.0.1): nothing is lost, nothing overshoots."""

from __future__ import annotations

import pytest

from tests.kits.ocpp import wait_for
from tests.kits.simsite import NODE_KW, Site, free_port

VERSION = pytest.mark.parametrize("version", ["1.6", "2.0.1"])


@VERSION
async def test_an_executor_restart_converges_with_no_lost_update(version):
    async with Site(version, chargers=2, port=free_port(), auto_reconnect=True) as site:
        await site.plug_all()
        await site.allocate({"A": 20.0, "B": 12.0})
        await wait_for(lambda: site.holds({"A": 20.0, "B": 12.0}), timeout=5, what="first allocation")
        await site.executor.stop()
        await site.allocate({"A": 10.0, "B": 22.0})  # published while no executor runs
        before = len(site.tx_acks())
        executor = await site.start_executor()  # same port and transport: it rebuilds from the topics
        # It knows from its acks what is in force (A 20 A, B 12 A), so B's raise waits for A's cut.
        assert executor._ledger.in_force_kw("A", 1) == pytest.approx(20 * 0.69)
        await wait_for(lambda: site.holds({"A": 10.0, "B": 22.0}), timeout=10, what="converged after restart")
        after = site.tx_acks()[before:]
        assert [(a.charge_point_id, a.limit, a.status) for a in after] == [
            ("A", 10.0, "Accepted"),
            ("B", 22.0, "Accepted"),
        ]
        assert (after[1].sent_at - after[0].answered_at).total_seconds() >= site.ev_response_s
        await site.clock.sleep(site.ev_response_s + 0.5)
        assert site.meter.peak_kw() <= NODE_KW + 1e-6


@VERSION
async def test_a_reconnecting_charger_gets_its_profile_again(version):
    async with Site(version, chargers=1) as site:
        await site.plug_all()
        await site.allocate({"A": 14.0})
        await wait_for(lambda: site.holds({"A": 14.0}), what="held")
        charger = site.chargers[0]
        received = charger.profiles_received
        await charger.reconnect()  # a network blip: no reboot, the session goes on
        await wait_for(lambda: len(site.tx_acks()) == 2, timeout=5, what="profile sent again")
        again = site.tx_acks()[-1]
        assert (again.limit, again.status) == (14.0, "Accepted")
        assert charger.profiles_received > received
        await wait_for(lambda: site.holds({"A": 14.0}), what="held again")
        assert site.executor.stats.connected == 1 and site.executor.stats.profiles_sent == 2


POISON = b'{"session_id": "CP1-9", "setpoint_kw": ' + b"9" * 5000 + b"}"


async def test_an_executor_starts_past_a_poison_record_in_every_topic_it_rebuilds_from(transport, make_executor):
    """A record whose JSON number breaks the parser sits in each topic the start-up rebuild reads: the
    executor starts (no crash loop), and the live consumer dead-letters the one it consumes."""
    from pipeline.transport import publish
    from tests.kits.ocpp import command

    for topic in ("site.topology", "ocpp.active.sessions", "ocpp.setpoint.acks", "ocpp.setpoint.commands"):
        await transport.send(topic, "CP1-9", POISON)
    await publish(transport, "ocpp.setpoint.commands", command(tx=1))
    executor = await make_executor()
    await wait_for(lambda: transport.log("ocpp.setpoint.commands.dlq"), what="dead letter")
    assert [r.value for r in transport.log("ocpp.setpoint.commands.dlq")] == [POISON]
    assert [r.value for r in transport.log("site.topology.dlq")] == [POISON]
    assert executor._setpoints.slots("CP1")[1].command.session_id == "CP1-1"


@VERSION
async def test_a_restart_inside_the_ev_lag_does_not_spend_headroom_a_cut_has_not_freed(version):
    """Killed between the ack of a cut and the raise it frees: the new executor rebuilds the EV response
    lag from the acks' ``answered_at`` and waits for it, as the old one would have."""
    lag_s = 120.0  # clock seconds: 3 s real at 40x, longer than a restart and reconnect take
    async with Site(version, chargers=2, port=free_port(), auto_reconnect=True, ev_response_s=lag_s) as site:
        await site.plug_all()
        await site.allocate({"A": 20.0, "B": 12.0})
        await wait_for(lambda: site.holds({"A": 20.0, "B": 12.0}), timeout=10, what="first allocation")
        await site.clock.sleep(lag_s)  # every earlier change has been followed
        before = len(site.tx_acks())
        await site.allocate({"A": 10.0, "B": 22.0})
        await wait_for(
            lambda: [(a.charge_point_id, a.limit) for a in site.tx_acks()[before:]] == [("A", 10.0)],
            timeout=5,
            what="the cut acknowledged",
        )
        cut = site.tx_acks()[before]
        await site.executor.stop()  # B's raise was waiting for A's EV to follow the cut
        executor = await site.start_executor()
        assert executor._ledger.bound_kw("A", 1, site.clock.now()) == pytest.approx(20 * 0.69)  # still cooling
        await wait_for(lambda: site.holds({"A": 10.0, "B": 22.0}), timeout=15, what="converged after restart")
        raise_b = next(a for a in site.tx_acks()[before:] if a.charge_point_id == "B" and a.limit == 22.0)
        assert (raise_b.sent_at - cut.answered_at).total_seconds() >= lag_s
        await site.clock.sleep(lag_s)
        assert site.meter.peak_kw() <= NODE_KW + 1e-6


def _calls(cp) -> list[str]:
    """The actions the central system called on ``cp``, in order (TxProfile calls as ``TxProfile <unit>``)."""
    out = []
    for frame in cp.frames:
        if isinstance(frame, list) and frame[:1] == [2]:
            if frame[2] == "SetChargingProfile":
                profile = frame[3]["csChargingProfiles"]
                unit = profile["chargingSchedule"]["chargingRateUnit"]
                out.append(f"{profile['chargingProfilePurpose']} {unit}")
            else:
                out.append(frame[2])
    return out


async def _restart_with_profile_held(transport, make_executor, units_after: str):
    """CP1 holds a 16 A TxProfile from a first executor; a second one starts on the same topics and CP1
    reconnects (no reboot) accepting ``units_after``; returns the second executor's calls to CP1."""
    from ocpp.v16 import call

    from pipeline.transport import publish
    from tests.kits.ocpp import command, open_charge_point

    first = await make_executor()
    async with open_charge_point(first.port) as cp:
        await cp.boot()
        tx = await cp.start_tx()
        await publish(transport, "ocpp.setpoint.commands", command(tx=tx, setpoint_a=16.0))
        await wait_for(lambda: first.held_setpoints() == {("CP1", 1): 16.0}, what="held")
    await first.stop()
    second = await make_executor()
    async with open_charge_point(second.port) as cp:
        cp.rate_units = units_after
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
        await wait_for(lambda: second.idle, what="idle")
        return _calls(cp), second


async def test_a_restarted_executor_restates_a_limit_in_the_unit_it_was_accepted_in_before_asking(
    transport, make_executor
):
    """The acks say CP1 accepted its TxProfile in A: after a restart the resend goes first, and the rate unit
    is asked right after it (one exchange less before the limit is restated)."""
    calls, _ = await _restart_with_profile_held(transport, make_executor, "Current,Power")
    assert calls[:2] == ["TxProfile A", "GetConfiguration"]
    assert "ChargePointMaxProfile A" in calls and calls.count("TxProfile A") == 1


async def test_a_charger_that_no_longer_accepts_the_known_unit_gets_everything_again_in_its_unit(
    transport, make_executor
):
    calls, executor = await _restart_with_profile_held(transport, make_executor, "Power")
    assert calls[:2] == ["TxProfile A", "GetConfiguration"]
    await wait_for(lambda: executor.held_setpoints() == {("CP1", 1): 11040.0}, what="held in W")
    assert "TxProfile W" in _calls_after(calls, "GetConfiguration")
    assert "ChargePointMaxProfile A" not in calls


def _calls_after(calls: list[str], action: str) -> list[str]:
    return calls[calls.index(action) + 1 :]
