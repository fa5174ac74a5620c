"""Site-partitioned evaluation gives what a full evaluation gives.

A random sequence of changes (meters, new and ended sessions, site demand, DR, rules, acks, topology)
goes to one engine that re-runs views only for the sites each batch touches; a fresh engine loads the
same records and evaluates everything once. The live records on the sink topics and every view's rows
must match.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.contracts.topics import ActiveSession, ControlRule, DRSignal, SetpointAck, SiteDemand, TopologyNode
from pipeline.engine.embedded import EmbeddedEngine
from pipeline.engine.partition import ALL, SiteIndex, restrict

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)
SITES = ("s0", "s1", "s2")


def topology() -> list[tuple]:
    recs = []
    for s in SITES:
        recs.append(("site.topology", s, TopologyNode(node_id=s, site_id=s, kind="site", limit_kw=60)))
        for p in "ab":
            recs.append(
                (
                    "site.topology",
                    f"{s}{p}",
                    TopologyNode(node_id=f"{s}{p}", site_id=s, parent_id=s, kind="panel", limit_kw=40),
                )
            )
        for i in range(4):
            recs.append(
                (
                    "site.topology",
                    f"{s}-CP{i}",
                    TopologyNode(
                        node_id=f"{s}-CP{i}", site_id=s, parent_id=f"{s}{'ab'[i % 2]}", kind="charger", limit_kw=22
                    ),
                )
            )
    return recs


def session(site: str, i: int, power: float | None = None, sampled_s: int = 0) -> ActiveSession:
    return ActiveSession(
        session_id=f"{site}-x{i}",
        charge_point_id=f"{site}-CP{i}",
        connector_id=1,
        transaction_id=f"{site}{i}",
        site_id=site,
        rated_power_kw=22,
        priority=i % 2,
        started_at=NOW - timedelta(minutes=30 + i),
        current_power_kw=power,
        sampled_at=NOW - timedelta(seconds=sampled_s),
    )


sites = st.sampled_from(SITES)
chargers = st.integers(0, 3)
change = st.one_of(
    st.builds(
        lambda s, i, p, age: [("ocpp.active.sessions", f"{s}-x{i}", session(s, i, p, age))],
        sites,
        chargers,
        st.one_of(st.none(), st.floats(0, 22)),
        st.sampled_from([0, 30, 900]),
    ),
    st.builds(lambda s, i: [("ocpp.active.sessions", f"{s}-x{i}", None)], sites, chargers),
    st.builds(
        lambda s, d, ev: [
            ("bems.site.demand", s, SiteDemand(site_id=s, current_demand_kw=d + ev, ev_load_kw=ev, measured_at=NOW))
        ],
        sites,
        st.floats(0, 50),
        st.floats(0, 20),
    ),
    st.builds(
        lambda s, pct: [
            (
                "utility.dr.signals",
                s,
                DRSignal(
                    site_id=s,
                    dr_event_id=f"dr-{s}",
                    curtailment_pct=pct,
                    event_start=NOW - timedelta(minutes=5),
                    event_end=NOW + timedelta(hours=1),
                    signal_at=NOW,
                ),
            )
        ],
        sites,
        st.floats(0, 80),
    ),
    st.builds(
        lambda s, p, kw: [
            (
                "control.rules",
                f"operator:node:{s}{p}",
                ControlRule(
                    rule_id=f"operator:node:{s}{p}",
                    source="operator",
                    scope="node",
                    scope_id=f"{s}{p}",
                    action="cap",
                    limit_kw=kw,
                    created_at=NOW,
                ),
            )
        ],
        sites,
        st.sampled_from("ab"),
        st.floats(0, 40),
    ),
    st.builds(lambda s, p: [("control.rules", f"operator:node:{s}{p}", None)], sites, st.sampled_from("ab")),
    st.builds(
        lambda s, i, kw: [
            (
                "ocpp.setpoint.acks",
                f"{s}-CP{i}",
                SetpointAck(
                    charge_point_id=f"{s}-CP{i}",
                    connector_id=1,
                    session_id=f"{s}-x{i}",
                    purpose="Tx",
                    setpoint_kw=kw,
                    status="Accepted",
                    sent_at=NOW,
                    answered_at=NOW,
                ),
            )
        ],
        sites,
        chargers,
        st.floats(0, 22),
    ),
    st.builds(
        lambda s, kw: [
            ("site.topology", f"{s}a", TopologyNode(node_id=f"{s}a", site_id=s, parent_id=s, kind="panel", limit_kw=kw))
        ],
        sites,
        st.floats(10, 60),
    ),
)


def live(changes, into: dict) -> dict:
    for c in changes:
        if c.value is None:
            into.pop((c.topic, c.key), None)
        else:
            into[(c.topic, c.key)] = c.value
    return into


def view_rows(engine: EmbeddedEngine) -> dict:
    return {v.name: sorted(map(repr, engine.query(f"SELECT * FROM {v.name}")[1])) for v in engine.views}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(change, min_size=1, max_size=10))
def test_partial_evaluation_matches_a_full_one(batches):
    check_partial_against_full(EmbeddedEngine(), batches)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(change, min_size=1, max_size=10))
def test_partial_evaluation_on_sqlite_after_a_full_one_on_duckdb_matches_a_full_one(batches):
    """The hybrid adapter as on a large fleet: every-site refreshes on DuckDB, the sites a batch touches on
    SQLite, rows passed between the two."""
    from pipeline.engine.hybrid_backend import HybridBackend

    check_partial_against_full(EmbeddedEngine(backend=HybridBackend(fleet_max_sites=0)), batches)


def check_partial_against_full(partial: EmbeddedEngine, batches: list) -> None:
    records = topology() + [("ocpp.active.sessions", f"{s}-x{i}", session(s, i)) for s in SITES for i in (0, 1)]
    partial.apply(records)
    published = live(partial.evaluate(NOW), {})
    for batch in batches:
        partial.apply(batch)
        records += batch
        published = live(partial.evaluate(NOW, timed=False), published)
    full = EmbeddedEngine()
    full.apply(records)
    assert published == live(full.evaluate(NOW), {})
    assert view_rows(partial) == view_rows(full)
    partial.close()
    full.close()


def test_a_tick_passes_on_only_the_sites_whose_rows_moved():
    e = EmbeddedEngine()
    e.apply(
        topology()
        + [
            ("ocpp.active.sessions", "s0-x0", session("s0", 0, 7.0)),
            ("ocpp.active.sessions", "s1-x0", session("s1", 0, 7.0, sampled_s=590)),
        ]
    )
    e.evaluate(NOW)
    # Twenty seconds on, only s1's meter has gone stale (600 s): the tick re-runs the timed views
    # everywhere but the allocation only for s1.
    out = e.evaluate(NOW + timedelta(seconds=20), timed=True)
    assert {c.key for c in out if c.topic == "ocpp.setpoint.commands"} == {"s1-x0"}
    assert e._sink_dirty == {}
    # A change-driven evaluation re-runs the dirty site (s2, whose meter reading is two hours old by then)
    # and the sites whose temporal boundary passed since the last evaluation (s0, whose session meter went
    # stale at 600 s), and nothing else: the next tick finds nothing left to move.
    e.apply([("bems.site.demand", "s2", SiteDemand(site_id="s2", current_demand_kw=5, measured_at=NOW))])
    out = e.evaluate(NOW + timedelta(hours=2), timed=False)
    # s2's first reading clears its site_meter_missing alert and, two hours old, raises stale_site_meter
    changed = {(c.key, c.value is None) for c in out}
    assert {("stale_site_meter:s2", False), ("site_meter_missing:s2", True)} <= changed
    assert {c.key for c in out if c.topic == "ocpp.setpoint.commands"} == {"s0-x0"}
    assert {json.loads(c.value)["site_id"] for c in out if c.value} == {"s0", "s2"}
    assert e.evaluate(NOW + timedelta(hours=2), timed=True) == []


def test_site_index_pins_records_to_sites():
    idx = SiteIndex()
    node = TopologyNode(node_id="CP1", site_id="s0", parent_id="s0", kind="charger", limit_kw=22)
    assert idx.sites("site_topology", ["node_id", "site_id"], "node_id", "CP1", node) == {"s0"}
    moved = node.model_copy(update={"site_id": "s1"})
    assert idx.sites("site_topology", ["node_id", "site_id"], "node_id", "CP1", moved) == {"s0", "s1"}
    assert idx.sites("site_topology", ["node_id", "site_id"], "node_id", "CP1", None) == {"s1"}
    ack = SetpointAck(charge_point_id="CP9", connector_id=1, status="Accepted", sent_at=NOW)
    assert idx.sites("ocpp_setpoint_acks", ["charge_point_id"], None, "CP9", ack) is ALL


def test_restrict_filters_site_relations_and_leaves_ctes_alone():
    import sqlglot

    q = sqlglot.parse_one("WITH x AS (SELECT * FROM a) SELECT * FROM x JOIN b ON b.k = x.k JOIN r ON r.k = x.k")
    sql = restrict(q, {"a", "b"}).sql("duckdb")
    assert sql.count("site_id IN (SELECT UNNEST($dirty_sites))") == 2
    assert "FROM x JOIN" in sql and "JOIN r ON" in sql
