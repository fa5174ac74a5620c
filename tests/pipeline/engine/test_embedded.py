"""The embedded engine: changed rows only, tombstones, NOW() on the engine clock, bad input survived."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from pipeline.contracts.clock import SimClock
from pipeline.contracts.topics import ActiveSession, DRSignal, TopologyNode
from pipeline.engine.config import EngineConfig
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.service import EngineService
from pipeline.transport import MemoryTransport, publish, publish_tombstone

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)
SITE = TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=30)


def session(sid: str, **kw) -> ActiveSession:
    return ActiveSession(
        session_id=sid,
        charge_point_id=f"CP-{sid}",
        connector_id=1,
        transaction_id=sid,
        site_id="s1",
        node_id="s1",
        rated_power_kw=22,
        started_at=NOW - timedelta(hours=1),
        **({"sampled_at": NOW} | kw),
    )


def setpoints(changes):
    return [c for c in changes if c.topic == "ocpp.setpoint.commands"]


def test_sinks_emit_only_changed_rows_and_tombstones_for_keys_that_leave():
    e = EmbeddedEngine()
    e.apply([("site.topology", "s1", SITE), ("ocpp.active.sessions", "a", session("a"))])
    first = setpoints(e.evaluate(NOW))
    assert [(c.key, json.loads(c.value)["setpoint_kw"]) for c in first] == [("a", 22.0)]
    assert e.evaluate(NOW + timedelta(seconds=1)) == []
    # A meter update on the session changes no setpoint, so nothing is emitted.
    e.apply([("ocpp.active.sessions", "a", session("a", current_power_kw=20.0, sampled_at=NOW))])
    assert e.evaluate(NOW + timedelta(seconds=2)) == []
    e.apply([("ocpp.active.sessions", "b", session("b"))])
    changed = {c.key: json.loads(c.value)["setpoint_kw"] for c in setpoints(e.evaluate(NOW + timedelta(seconds=3)))}
    assert changed == {"a": 15.0, "b": 15.0}
    e.apply([("ocpp.active.sessions", "b", None)])
    out = setpoints(e.evaluate(NOW + timedelta(seconds=4)))
    assert {(c.key, c.value is None) for c in out} == {("a", False), ("b", True)}


def test_upsert_batches_keep_the_last_record_per_key():
    e = EmbeddedEngine()
    e.apply(
        [
            ("site.topology", "s1", SITE),
            ("ocpp.active.sessions", "a", session("a")),
            ("ocpp.active.sessions", "a", None),
            ("ocpp.active.sessions", "a", session("a", priority=3)),
        ]
    )
    _, rows = e.query("SELECT session_id, priority FROM ocpp_active_sessions")
    assert rows == [("a", 3)]


def test_upsert_tables_are_keyed_by_the_message_key_as_on_risingwave():
    e = EmbeddedEngine()
    e.apply(
        [
            ("site.topology", "s1", SITE),
            ("ocpp.active.sessions", "a", session("a")),
            ("ocpp.active.sessions", "b", session("b")),
        ]
    )
    _, rows = e.query("SELECT session_id, message_key FROM ocpp_active_sessions ORDER BY session_id")
    assert rows == [("a", b"a"), ("b", b"b")]  # the key's raw bytes, as RisingWave's bytea key column
    e.apply([("ocpp.active.sessions", "a", None)])  # a tombstone deletes by key; the other row stays
    _, rows = e.query("SELECT session_id FROM ocpp_active_sessions")
    assert rows == [("b",)]
    # a record built in code without a key is keyed by its contract's key field
    e.apply([("ocpp.active.sessions", None, session("c"))])
    _, rows = e.query("SELECT message_key FROM ocpp_active_sessions ORDER BY message_key")
    assert rows == [(b"b",), (b"c",)]


async def test_the_timer_fires_temporal_filters_without_new_input():
    t = MemoryTransport()
    engine = EmbeddedEngine()
    clock = SimClock(NOW, speed=600)  # ten simulated minutes per real second
    svc = EngineService(engine, t, clock, EngineConfig(tick_s=60))
    await publish(t, "site.topology", SITE)
    await publish(t, "ocpp.active.sessions", session("a"))
    await publish(
        t,
        "utility.dr.signals",
        DRSignal(
            site_id="s1",
            dr_event_id="e",
            limit_kw=10,
            event_start=NOW + timedelta(minutes=3),
            event_end=NOW + timedelta(hours=5),
            signal_at=NOW,
        ),
    )
    task = asyncio.create_task(svc.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            values = [json.loads(r.value) for r in t.log("ocpp.setpoint.commands") if r.value]
            if any(v["binding"] == "dr" for v in values):
                break
        assert [v["setpoint_kw"] for v in values][:1] == [22.0]
        assert values[-1]["setpoint_kw"] == 10.0 and values[-1]["binding"] == "dr"
        assert clock.now() - NOW >= timedelta(minutes=3)
    finally:
        svc.stop()
        await task


async def test_a_malformed_record_is_dead_lettered_and_consumption_continues():
    t = MemoryTransport()
    svc = EngineService(EmbeddedEngine(), t, SimClock(NOW))
    await publish(t, "site.topology", SITE)
    await t.send("ocpp.active.sessions", "bad", b'{"session_id": "bad", "rated_power_kw": "lots"}')
    await t.send("ocpp.active.sessions", "worse", b"\xff\xfe not json")
    await publish(t, "ocpp.active.sessions", session("a"))
    while await svc.step(timeout_s=0.05):
        pass
    assert [r.key for r in t.log("ocpp.active.sessions.dlq")] == ["bad", "worse"]
    assert [r.key for r in t.log("ocpp.setpoint.commands")] == ["a"]
    assert svc.stats.dead_lettered == 2 and t.lag() == 0


async def test_a_record_that_breaks_the_json_parser_loses_nothing_else_in_its_batch():
    """A 5000-digit number makes json.loads raise a plain ValueError: the record is dead-lettered and the
    building-load reading in the same batch still lowers the setpoint."""
    t = MemoryTransport()
    svc = EngineService(EmbeddedEngine(), t, SimClock(NOW))
    await publish(t, "site.topology", SITE)
    await publish(t, "ocpp.active.sessions", session("a"))
    while await svc.step(timeout_s=0.05):
        pass
    assert json.loads(t.log("ocpp.setpoint.commands")[-1].value)["setpoint_kw"] == 22.0
    await t.send("bems.site.demand", "s1", b'{"site_id": "s1", "current_demand_kw": ' + b"9" * 5000 + b"}")
    await t.send(
        "bems.site.demand",
        "s1",
        json.dumps(
            {"site_id": "s1", "current_demand_kw": 20.0, "ev_load_kw": 0.0, "measured_at": NOW.isoformat()}
        ).encode(),
    )
    while await svc.step(timeout_s=0.05):
        pass
    assert [r.key for r in t.log("bems.site.demand.dlq")] == ["s1"]
    assert json.loads(t.log("ocpp.setpoint.commands")[-1].value)["setpoint_kw"] == 10.0  # 30 - 20 of building
    assert svc.stats.dead_lettered == 1 and t.lag() == 0


async def test_a_restart_catches_up_past_a_poison_record():
    """The start-up read of the inputs dead-letters a poison record and finishes; it must not fail and
    leave the live sessions to be tombstoned."""
    t = MemoryTransport()
    await publish(t, "site.topology", SITE)
    await t.send("ocpp.active.sessions", "x", b'{"session_id": "x", "connector_id": ' + b"1" * 5000 + b"}")
    await publish(t, "ocpp.active.sessions", session("a"))
    svc = EngineService(EmbeddedEngine(), t, SimClock(NOW))
    while await svc.step(timeout_s=0.05):
        pass
    assert [(r.key, r.value is not None) for r in t.log("ocpp.setpoint.commands")] == [("a", True)]
    assert [r.key for r in t.log("ocpp.active.sessions.dlq")] == ["x"]


def test_a_batch_the_database_refuses_is_applied_record_by_record():
    """Defence in depth: a record that passes its contract but that the database cannot store is the only
    one lost; the engine reports it, and every other record of the batch is applied."""
    e = EmbeddedEngine()
    good = session("a")
    bad = session("b").model_copy(update={"connector_id": 2**40})  # beyond DuckDB's INTEGER
    failed = e.apply_each(
        [("site.topology", "s1", SITE), ("ocpp.active.sessions", "b", bad), ("ocpp.active.sessions", "a", good)]
    )
    assert [(topic, key) for topic, key, _, _ in failed] == [("ocpp.active.sessions", "b")]
    _, rows = e.query("SELECT session_id FROM ocpp_active_sessions")
    assert rows == [("a",)]


def test_a_breaker_limit_that_is_missing_or_not_finite_means_no_headroom_not_unlimited():
    """Defence in depth behind the contract (RisingWave reads its sources without our decoder): a breaker
    whose limit is NULL, infinite, NaN or past 100 MW gives 0 kW of headroom, never an unlimited one,
    and the setpoints carry that 0 as node_limit_kw (a null would mean 'no limit' downstream)."""
    for bad in (None, float("inf"), float("nan"), 1e9):
        e = EmbeddedEngine()
        site = TopologyNode.model_construct(**{**SITE.model_dump(), "limit_kw": bad})
        e.apply(
            [
                ("site.topology", "s1", site),
                ("ocpp.active.sessions", "a", session("a")),
                ("ocpp.active.sessions", "b", session("b")),
            ]
        )
        values = [json.loads(c.value) for c in setpoints(e.evaluate(NOW))]
        assert [(v["setpoint_kw"], v["node_limit_kw"], v["site_limit_kw"]) for v in values] == [(0.0, 0.0, 0.0)] * 2, (
            bad
        )


async def test_each_evaluation_that_changes_something_is_one_info_line(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="pipeline.engine.service")
    t = MemoryTransport()
    svc = EngineService(EmbeddedEngine(), t, SimClock(NOW))
    await publish(t, "site.topology", SITE)
    await publish(t, "ocpp.active.sessions", session("a"))
    await publish(t, "ocpp.active.sessions", session("b"))
    while await svc.step(timeout_s=0.05):
        pass
    await publish_tombstone(t, "ocpp.active.sessions", "b")
    while await svc.step(timeout_s=0.05):
        pass
    lines = [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.getMessage().startswith("evaluation at")]
    assert lines == [
        "ocpp.setpoint.commands: 2 changed (s1 2); pipeline.alerts: 1 changed (site_meter_missing 1)",
        "ocpp.setpoint.commands: 1 changed (cap 1), 1 withdrawn",
    ]


def test_the_heap_is_frozen_once_per_process_not_once_per_engine():
    """A test run or a benchmark starts engine after engine in one process; freezing at each start made
    every earlier engine's heap permanent (the suite's process grew past 1.6 GB)."""
    import gc

    from pipeline.engine.service import freeze_heap, thaw_heap

    thaw_heap()
    try:
        freeze_heap()
        frozen = gc.get_freeze_count()
        garbage = [[i] for i in range(10_000)]
        freeze_heap()
        assert gc.get_freeze_count() == frozen
        del garbage
    finally:
        thaw_heap()
