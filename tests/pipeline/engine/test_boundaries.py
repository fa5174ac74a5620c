"""Temporal boundaries: a NOW() filter takes effect at its instant (a DR event's start and end, a meter
turning stale), with no input and no tick, on a held and on a running simulated clock."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.contracts.clock import SimClock
from pipeline.contracts.topics import ActiveSession, ControlRule, DRSignal, PriceSignal, SiteDemand, TopologyNode
from pipeline.engine.boundaries import derive
from pipeline.engine.config import EngineConfig
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.service import EngineService
from pipeline.transport import MemoryTransport, publish

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)
DR_START = NOW + timedelta(minutes=2)
DR_END = NOW + timedelta(minutes=4)
STALE_AT = NOW + timedelta(seconds=600)  # the session meter's threshold in sql/views/session_telemetry.sql
DAY_S = 86_400.0  # a tick far beyond every boundary here: only the exact-time mechanism can pass
SITE = TopologyNode(node_id="s1", site_id="s1", kind="site", limit_kw=30)
SESSION = ActiveSession(
    session_id="a",
    charge_point_id="CP-a",
    connector_id=1,
    transaction_id="a",
    site_id="s1",
    node_id="s1",
    rated_power_kw=22,
    started_at=NOW - timedelta(hours=1),
    sampled_at=NOW,
)
DR = DRSignal(site_id="s1", dr_event_id="e", limit_kw=10, event_start=DR_START, event_end=DR_END, signal_at=NOW)


def derived(sql: str) -> tuple[list[str], list[str]]:
    """The instants (DuckDB SQL) and the unbounded NOW() uses of one view body."""
    found = derive("v", sqlglot.parse_one(sql, read="risingwave"))
    return [i.sql("duckdb") for b in found.boundaries for i in b.instants], found.unbounded


def test_comparisons_give_the_instant_the_filter_flips_at():
    instants, unbounded = derived("SELECT * FROM t WHERE seen_at > NOW() - INTERVAL '600 seconds'")
    assert instants == ["CAST(((seen_at) + (INTERVAL '600' SECONDS)) AS TIMESTAMPTZ)"] and unbounded == []
    # strict after NOW(): true from one microsecond past the bound, DuckDB's timestamp resolution
    instants, _ = derived("SELECT * FROM t WHERE NOW() > t.valid_from")
    assert instants == ["CAST((t.valid_from) AS TIMESTAMPTZ) + INTERVAL '1' MICROSECOND"]
    instants, _ = derived("SELECT * FROM t WHERE NOW() + INTERVAL '5 minutes' BETWEEN a AND b")
    assert instants == [
        "CAST(((a) - (INTERVAL '5' MINUTES)) AS TIMESTAMPTZ)",
        "CAST(((b) - (INTERVAL '5' MINUTES)) AS TIMESTAMPTZ) + INTERVAL '1' MICROSECOND",
    ]
    # a NOW() the engine cannot bound is reported; the tick covers it
    instants, unbounded = derived("SELECT EXTRACT(EPOCH FROM NOW() - started_at) AS age_s FROM t")
    assert instants == [] and unbounded == ["EXTRACT(EPOCH FROM CURRENT_TIMESTAMP - started_at)"]


def test_a_comparison_in_a_join_reads_the_rows_it_hides_now():
    found = derive(
        "v",
        sqlglot.parse_one(
            "SELECT s.x FROM s JOIN r ON r.site_id = s.site_id AND r.valid_from <= NOW() WHERE s.y > 0",
            read="risingwave",
        ),
    )
    (boundary,) = found.boundaries
    assert boundary.select.sql("duckdb") == "SELECT FROM s JOIN r ON r.site_id = s.site_id AND TRUE"
    assert [c.sql() for c in boundary.site_candidates()] == ["r.site_id", "NULL"]


def test_every_now_in_sql_has_a_boundary():
    assert EmbeddedEngine().unbounded == []


def setpoint(changes) -> tuple[float, str, datetime] | None:
    """The last (setpoint_kw, binding, computed_at) of session a in ``changes``."""
    values = [json.loads(c.value) for c in changes if c.topic == "ocpp.setpoint.commands" and c.value]
    if not values:
        return None
    v = values[-1]
    return v["setpoint_kw"], v["binding"], datetime.fromisoformat(v["computed_at"])


def test_an_evaluation_at_a_boundary_re_runs_the_site_without_a_tick():
    e = EmbeddedEngine()
    e.apply([("site.topology", "s1", SITE), ("ocpp.active.sessions", "a", SESSION), ("utility.dr.signals", "s1", DR)])
    assert setpoint(e.evaluate(NOW)) == (22.0, "cap", NOW)
    assert e.next_boundary() == DR_START
    assert not e.boundary_due(DR_START - timedelta(microseconds=1))
    assert e.evaluate(DR_START - timedelta(microseconds=1), timed=False) == []
    assert setpoint(e.evaluate(DR_START, timed=False)) == (10.0, "dr", DR_START)
    assert e.next_boundary() == DR_END
    assert setpoint(e.evaluate(DR_END, timed=False)) == (22.0, "cap", DR_END)
    assert e.next_boundary() == STALE_AT
    assert e.evaluate(STALE_AT - timedelta(microseconds=1), timed=False) == []
    assert setpoint(e.evaluate(STALE_AT, timed=False))[1] == "stale"
    assert e.next_boundary() is None


async def started(clock: SimClock) -> tuple[MemoryTransport, EngineService]:
    t = MemoryTransport()
    for topic, record in (("site.topology", SITE), ("ocpp.active.sessions", SESSION), ("utility.dr.signals", DR)):
        await publish(t, topic, record)
    svc = EngineService(EmbeddedEngine(), t, clock, EngineConfig(tick_s=DAY_S))
    return t, svc


def commands(t: MemoryTransport) -> list[tuple[float, str, datetime]]:
    out = []
    for r in t.log("ocpp.setpoint.commands"):
        v = json.loads(r.value)
        out.append((v["setpoint_kw"], v["binding"], datetime.fromisoformat(v["computed_at"])))
    return out


async def test_a_held_clock_advanced_to_a_boundary_evaluates_exactly_there():
    """The clock stands still at each instant, so the evaluation's NOW() is the boundary itself."""
    clock = SimClock(NOW)
    clock.hold()
    t, svc = await started(clock)
    await svc.step()
    assert commands(t) == [(22.0, "cap", NOW)]
    for at, expected in (
        (DR_START - timedelta(microseconds=1), [(22.0, "cap", NOW)]),
        (DR_START, [(22.0, "cap", NOW), (10.0, "dr", DR_START)]),
        (DR_END, [(22.0, "cap", NOW), (10.0, "dr", DR_START), (22.0, "cap", DR_END)]),
    ):
        clock.advance((at - clock.now()).total_seconds())
        await svc.step(timeout_s=0.01)
        assert commands(t) == expected
    clock.advance((STALE_AT - clock.now()).total_seconds())  # sampled_at + 600 s: the meter turns stale
    await svc.step(timeout_s=0.01)
    assert commands(t)[-1][1] == "stale" and len(commands(t)) == 4
    assert svc.stats.evaluations == 4  # the start, and one per boundary: no tick, no idle evaluation


async def test_a_running_sim_clock_fires_dr_start_end_and_staleness_at_their_instants():
    """At 120x, with a one-day tick and no input after the start, each change arrives at its boundary:
    never before it, and before the next one (the DR window is one real second wide)."""
    clock = SimClock(NOW, speed=120)
    clock.hold()  # while the engine starts up
    t, svc = await started(clock)
    await svc.step()
    seen = [clock.now()]  # the clock when each command was first seen
    clock.release()
    task = asyncio.create_task(svc.run())
    try:
        for _ in range(2000):  # at most 20 s real; 10 minutes of clock take 5 s
            await asyncio.sleep(0.01)
            seen.extend(clock.now() for _ in range(len(t.log("ocpp.setpoint.commands")) - len(seen)))
            if len(seen) >= 4:
                break
    finally:
        svc.stop()
        await task
    got = commands(t)
    assert got[:3] == [(22.0, "cap", NOW), (10.0, "dr", DR_START), (22.0, "cap", DR_END)]
    assert got[3][1] == "stale"
    assert seen[1] >= DR_START and seen[2] >= DR_END and seen[3] >= STALE_AT
    assert seen[1] < DR_END and seen[2] < STALE_AT and seen[3] < NOW + timedelta(seconds=DAY_S)


# Random inputs over time: evaluations driven by input alone (timed=False, never a tick) agree with a
# full evaluation of the same inputs at the same time, because every boundary that passed in between was
# evaluated for its sites.
SITES = ("s0", "s1")
ts = st.integers(0, 3600).map(lambda s: NOW + timedelta(seconds=s))
change = st.one_of(
    st.builds(
        lambda s, i, at: (
            "ocpp.active.sessions",
            f"{s}-x{i}",
            SESSION.model_copy(
                update={
                    "session_id": f"{s}-x{i}",
                    "charge_point_id": f"{s}-CP{i}",
                    "site_id": s,
                    "node_id": s,
                    "sampled_at": at,
                }
            ),
        ),
        st.sampled_from(SITES),
        st.integers(0, 2),
        ts,
    ),
    st.builds(
        lambda s, at: (
            "bems.site.demand",
            s,
            SiteDemand(site_id=s, current_demand_kw=20, ev_load_kw=5, measured_at=at),
        ),
        st.sampled_from(SITES),
        ts,
    ),
    st.builds(
        lambda s, start, minutes, signal: (
            "utility.dr.signals",
            s,
            DRSignal(
                site_id=s,
                dr_event_id=f"e-{s}",
                curtailment_pct=50,
                event_start=start,
                event_end=start + timedelta(minutes=minutes),
                signal_at=signal,
            ),
        ),
        st.sampled_from(SITES),
        ts,
        st.integers(1, 30),
        ts,
    ),
    st.builds(
        lambda s, start, minutes, tier: (
            "tariff.price.signals",
            s,
            PriceSignal(
                site_id=s,
                tariff_id="t",
                price_per_kwh=0.3,
                price_tier=tier,
                valid_from=start,
                valid_to=start + timedelta(minutes=minutes),
            ),
        ),
        st.sampled_from(SITES),
        ts,
        st.integers(1, 30),
        st.sampled_from(["OFF_PEAK", "ON_PEAK", "CRITICAL_PEAK"]),
    ),
    st.builds(
        lambda s, start, minutes, kw: (
            "control.rules",
            f"operator:site:{s}",
            ControlRule(
                rule_id=f"operator:site:{s}",
                source="operator",
                scope="site",
                scope_id=s,
                action="cap",
                limit_kw=kw,
                valid_from=start,
                valid_to=start + timedelta(minutes=minutes),
                created_at=NOW,
            ),
        ),
        st.sampled_from(SITES),
        ts,
        st.integers(1, 30),
        st.floats(0, 40),
    ),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(change, st.integers(1, 1200)), min_size=1, max_size=8))
def test_input_driven_evaluations_match_a_full_one_at_every_time(steps):
    """``partial`` evaluates on input only; ``ticked`` re-runs every view that reads NOW() for every site
    at every step. They agree at every step, and the boundaries ``partial`` holds at the end are those a
    fresh engine computes from all the inputs."""
    topology = [("site.topology", s, SITE.model_copy(update={"node_id": s, "site_id": s})) for s in SITES]
    partial, ticked = EmbeddedEngine(), EmbeddedEngine()
    for e in (partial, ticked):
        e.apply(topology)
        e.evaluate(NOW)
    records = list(topology)
    at = NOW
    for record, gap_s in steps:
        at += timedelta(seconds=gap_s)
        records.append(record)
        partial.apply([record])
        ticked.apply([record])
        partial.evaluate(at, timed=False)
        ticked.evaluate(at, timed=True)
        for view in partial.views:
            rows = [sorted(map(repr, e.query(f"SELECT * FROM {view.name}")[1])) for e in (partial, ticked)]
            assert rows[0] == rows[1], (view.name, at)
    fresh = EmbeddedEngine()
    fresh.apply(records)
    fresh.evaluate(at)
    assert partial.pending_boundaries() == fresh.pending_boundaries()
    for e in (partial, ticked, fresh):
        e.close()
