"""The embedded engine's transaction history: kept in a file of its own across restarts, for a retention.

A restarted engine (DuckDB in memory, an empty in-memory transport) still answers ``session_history`` from
the file; events past the retention leave the file and the views; an event delivered twice is stored once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.contracts.clock import SimClock
from pipeline.contracts.topics import TransactionEvent
from pipeline.engine.config import EngineConfig
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.history import TransactionHistory
from pipeline.engine.service import EngineService
from pipeline.transport import MemoryTransport, publish

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)


def ended(sid: str, at: datetime) -> TransactionEvent:
    return TransactionEvent(
        event_id=f"{sid}:ended",
        event_type="ended",
        session_id=sid,
        charge_point_id="CP1",
        connector_id=1,
        transaction_id=sid,
        site_id="s1",
        started_at=at - timedelta(hours=1),
        ended_at=at,
        energy_kwh=10.0,
        recorded_at=at,
    )


def history_ids(engine: EmbeddedEngine) -> list[str]:
    return [r[0] for r in engine.query("SELECT session_id FROM session_history ORDER BY session_id")[1]]


async def run_once(path, clock, records=(), retention_days: float = 90.0) -> list[str]:
    transport = MemoryTransport()
    for event in records:
        await publish(transport, "ocpp.transaction.events", event)
    engine = EmbeddedEngine()
    config = EngineConfig(history_path=path, history_retention_days=retention_days)
    service = EngineService(engine, transport, clock, config)
    await service.step(timeout_s=0)
    service.history.close()
    ids = history_ids(engine)
    engine.close()
    return ids


async def test_history_survives_a_restart_and_leaves_after_its_retention(tmp_path):
    path = tmp_path / "state" / "history.sqlite3"
    clock = SimClock(NOW)
    clock.hold()
    old, new = ended("old", NOW - timedelta(days=5)), ended("new", NOW - timedelta(hours=1))
    assert await run_once(path, clock, [old, new, new]) == ["new", "old"]
    assert await run_once(path, clock) == ["new", "old"]  # a new engine on an empty transport
    assert await run_once(path, clock, retention_days=2) == ["new"]  # 5 days old is past 2 days
    assert await run_once(path, clock) == ["new"]  # and gone from the file


def test_retention_applies_in_the_engine_without_a_file():
    engine = EmbeddedEngine()
    history = TransactionHistory(engine, None, retention_days=1)
    engine.apply([("ocpp.transaction.events", "a", ended("a", NOW - timedelta(days=2)))])
    engine.apply([("ocpp.transaction.events", "b", ended("b", NOW))])
    assert history.restore(NOW) == 0
    engine.evaluate(NOW)
    assert history_ids(engine) == ["b"]
    assert not history.prune_due(NOW + timedelta(minutes=59)) and history.prune_due(NOW + timedelta(hours=1))
    engine.close()


def test_a_retention_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="positive"):
        TransactionHistory(EmbeddedEngine(), None, retention_days=0)


async def test_one_log_line_when_a_dr_event_comes_into_force_and_one_when_it_is_over(caplog):
    from pipeline.contracts.topics import DRSignal, TopologyNode

    transport = MemoryTransport()
    await publish(transport, "site.topology", TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=30))
    signal = DRSignal(
        site_id="s1",
        dr_event_id="dr-1",
        curtailment_pct=20,
        event_start=NOW + timedelta(minutes=1),
        event_end=NOW + timedelta(minutes=31),
        signal_at=NOW,
    )
    await publish(transport, "utility.dr.signals", signal)
    clock = SimClock(NOW)
    clock.hold()
    engine = EmbeddedEngine()
    service = EngineService(engine, transport, clock, EngineConfig())
    caplog.set_level("INFO", logger="pipeline.engine.service")

    def dr_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("DR event")]

    await service.step(timeout_s=0)
    assert dr_lines() == []
    for minutes in (1, 1, 38, 1):  # at 12:02 and 12:03 in the window, at 12:41 and 12:42 after it
        clock.advance(60 * minutes)
        await service.step(timeout_s=0, force=True)
    assert dr_lines() == [
        "DR event dr-1 in force at site s1: curtailment 20 % until 2024-06-03T12:31:00+00:00",
        "DR event dr-1 at site s1 is over",
    ]
    engine.close()


@pytest.mark.parametrize("backend", ["hybrid", "sqlite", "duckdb"])
def test_superseded_meter_readings_and_acks_leave_after_the_input_retention_and_the_newest_stay(backend):
    """Three days of a site meter every hour and an ack per hour: after the prune, the last 24 hours stay
    and, older, only the newest reading of the site (whose meter went quiet) and the newest ack of each
    status of a session; what the views read of them is unchanged."""
    from pipeline.contracts.topics import SetpointAck, SiteDemand

    engine = EmbeddedEngine(backend=backend)
    try:
        hours = [NOW - timedelta(hours=h) for h in range(72, 0, -1)]
        records = [
            ("bems.site.demand", "s1", SiteDemand(site_id="s1", current_demand_kw=10.0 + i, measured_at=t))
            for i, t in enumerate(hours)
        ]
        quiet = NOW - timedelta(days=5)  # a second site whose meter went quiet 5 days ago
        records.append(("bems.site.demand", "s2", SiteDemand(site_id="s2", current_demand_kw=3.0, measured_at=quiet)))
        for i, t in enumerate(hours):
            status = "Accepted" if i < 48 else "Rejected"  # the last accepted profile is 24 hours old
            ack = SetpointAck(
                charge_point_id="CP1",
                connector_id=1,
                session_id="a",
                action="SetChargingProfile",
                setpoint_kw=float(i),
                status=status,
                sent_at=t,
                answered_at=t,
            )
            records.append(("ocpp.setpoint.acks", "CP1", ack))
        engine.apply(records)
        engine.evaluate(NOW)
        before = engine.query("SELECT site_id, current_demand_kw FROM site_demand_latest ORDER BY site_id")[1]
        history = TransactionHistory(engine, None)
        deleted = history.prune(NOW)
        demand = engine.query("SELECT site_id, COUNT(*) FROM bems_site_demand GROUP BY site_id ORDER BY site_id")[1]
        assert demand == [("s1", 24), ("s2", 1)]
        acks = engine.query(
            "SELECT status, COUNT(*), MAX(setpoint_kw) FROM ocpp_setpoint_acks GROUP BY status ORDER BY status"
        )[1]
        assert acks == [("Accepted", 1, 47.0), ("Rejected", 24, 71.0)]
        assert deleted == (72 - 24) + (48 - 1)
        engine.evaluate(NOW)
        assert engine.query("SELECT site_id, current_demand_kw FROM site_demand_latest ORDER BY site_id")[1] == before
    finally:
        engine.close()


class _LockedOnly:
    """The engine's backend, checking that whoever calls it holds the engine's lock: the pgwire readers'
    threads bring the readers' connection up to date under it while the engine works on its worker thread,
    and DuckDB refuses a connection used from two threads at once."""

    def __init__(self, backend, lock) -> None:
        self._backend, self._lock, self.calls = backend, lock, []

    def __getattr__(self, name):
        attr = getattr(self._backend, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            assert self._lock._is_owned(), f"backend.{name} called without the engine's lock"
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def test_every_backend_call_holds_the_engines_lock_the_prune_and_close_included():
    from pipeline.contracts.topics import SiteDemand

    engine = EmbeddedEngine()
    engine.backend = spy = _LockedOnly(engine.backend, engine.lock)
    demand = [
        (
            "bems.site.demand",
            "s1",
            SiteDemand(site_id="s1", current_demand_kw=10.0, measured_at=NOW - timedelta(days=d)),
        )
        for d in (3, 2)
    ]
    engine.apply(demand)
    engine.evaluate(NOW)
    engine.sync_readers()
    engine.rows("site_demand_latest")
    assert TransactionHistory(engine, None).prune(NOW) == 1
    engine.reset()
    engine.close()
    assert {"delete_before", "clear", "close"} <= set(spy.calls)
