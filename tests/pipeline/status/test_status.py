"""``pipeline status`` against a running pipeline: the views over Postgres wire and the executor's GET /status."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.status.collect import build, fetch_chargers
from tests.kits.live import CHARGERS, SITE, free_port, live_pipeline, wait_for


async def _status(*args: str, columns: int = 200):
    """Run the CLI on a thread: the executor it asks is served by this test's event loop."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, ["status", *args], env={"COLUMNS": str(columns)})


async def _all_set(live) -> bool:
    result = await _status("--once", "--json", "--dsn", live.dsn, "--no-executor")
    snap = json.loads(result.output) if result.exit_code == 0 else {}
    sessions = snap.get("sessions", [])
    return len(sessions) == 3 and all(s["setpoint_kw"] and s["measured_kw"] is not None for s in sessions)


async def test_status_once_json_against_a_running_pipeline():
    async with live_pipeline() as live:
        await wait_for(lambda: _all_set(live), what="three sessions with setpoints and meter readings")
        result = await _status("--once", "--json", "--dsn", live.dsn, "--executor-url", live.executor_url)
        assert result.exit_code == 0, result.output
        snap = json.loads(result.output)

    assert snap["dsn"] == live.dsn
    (site,) = snap["sites"]
    assert site["site_id"] == SITE and site["breaker_limit_kw"] == 50
    assert site["limit_kw"] == 40  # the 20 % DR event in force
    assert site["dr"]["dr_event_id"] == "dr-test" and site["dr"]["curtailment_pct"] == 20
    assert site["price"]["price_tier"] == "ON_PEAK" and site["price"]["price_per_kwh"] == 0.31
    assert [n["node_id"] for n in site["nodes"]] == ["panel-t"]
    panel = site["nodes"][0]
    assert panel["limit_kw"] == 30 and panel["sessions"] == 2
    assert 0 < panel["setpoint_kw"] <= panel["headroom_kw"] + 1e-6
    assert site["sessions"] == 3 and site["setpoint_kw"] <= site["headroom_kw"] + 1e-6

    sessions = {s["charge_point_id"]: s for s in snap["sessions"]}
    assert set(sessions) == set(CHARGERS)
    for s in sessions.values():
        assert s["site_id"] == SITE and s["setpoint_kw"] > 0 and s["setpoint_a"] > 0 and s["binding"]
        assert s["measured_kw"] >= 0 and 0 <= s["soc_pct"] <= 100 and s["price_tier"] == "ON_PEAK"
    assert sessions["CP1"]["node_id"] == "panel-t" and sessions["CP3"]["node_id"] == SITE

    executor = snap["executor"]
    assert executor["reachable"] and executor["error"] is None
    chargers = {c["charge_point_id"]: c for c in executor["chargers"]}
    assert set(chargers) == set(CHARGERS)
    for cp, charger in chargers.items():
        assert charger["protocol"] == "ocpp1.6" and charger["rate_unit"] == "A"
        assert charger["connected_since"] and charger["last_message_at"] >= charger["connected_since"]
        (connector,) = charger["connectors"]
        assert connector["connector_id"] == 1 and connector["session_id"] == sessions[cp]["session_id"]


async def test_status_once_renders_tables():
    async with live_pipeline() as live:
        await wait_for(lambda: _all_set(live), what="three sessions with setpoints and meter readings")
        result = await _status("--once", "--dsn", live.dsn, "--executor-url", live.executor_url)
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "Sites and breakers",
        SITE,
        "panel-t",
        "Demand response and tariff",
        "dr-test",
        "ON_PEAK",
        "Sessions (3)",
        "Chargers connected (3)",
        "ocpp1.6",
        *CHARGERS,
    ):
        assert text in out, text
    assert "Traceback" not in out


async def test_executor_status_endpoint_and_an_unreachable_executor():
    async with live_pipeline() as live:
        body = await asyncio.to_thread(
            lambda: json.loads(urllib.request.urlopen(live.executor_url + "/status", timeout=5).read())
        )
        assert sorted(c["charge_point_id"] for c in body["chargers"]) == list(CHARGERS)
        on_ocpp_port = await asyncio.to_thread(fetch_chargers, f"http://127.0.0.1:{live.service.port}")
        assert on_ocpp_port["reachable"] is False and "HTTP 404" in on_ocpp_port["error"]  # not the chargers' port
        gone = await asyncio.to_thread(fetch_chargers, f"http://127.0.0.1:{free_port()}")
    assert gone["reachable"] is False and "refused" in gone["error"].lower()
    snap = build({"nodes": [], "sessions": []}, gone)
    assert snap["executor"]["reachable"] is False and snap["sites"] == []


def test_an_unreachable_dsn_is_a_one_line_error():
    result = CliRunner().invoke(
        main, ["status", "--once", "--dsn", f"postgresql://root:pw@127.0.0.1:{free_port()}/dev"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot read the views at postgresql://root:***@127.0.0.1:")
    assert len(result.output.strip().splitlines()) == 1 and "pw@" not in result.output


async def test_overlapping_dr_events_show_each_with_its_own_id_and_an_alert_shows_everywhere():
    from pipeline.app.signals import demand_signal, dr_signal
    from pipeline.transport.base import publish

    async with live_pipeline() as live:
        await wait_for(lambda: _all_set(live), what="three sessions with setpoints and meter readings")
        transport = live.service.transport
        await publish(transport, *dr_signal(SITE, limit_kw=5, duration_min=30, event_id="dr-cap"))
        await publish(transport, *demand_signal(SITE, current_demand_kw=52, ev_load_kw=0))  # over a 5 kW cap

        async def over_limit() -> dict | None:
            result = await _status("--once", "--json", "--dsn", live.dsn, "--no-executor")
            snap = json.loads(result.output) if result.exit_code == 0 else {}
            kinds = {a["kind"] for a in snap.get("alerts", [])}
            return snap if "node_over_limit" in kinds else None

        snap = await wait_for(over_limit, what="the node_over_limit alert")
        table = await _status("--once", "--dsn", live.dsn, "--no-executor", columns=220)
    (site,) = snap["sites"]
    events = {e["dr_event_id"]: e for e in site["dr_events"]}
    assert set(events) == {"dr-test", "dr-cap"}
    assert (events["dr-test"]["curtailment_pct"], events["dr-test"]["limit_kw"]) == (20, None)
    assert (events["dr-cap"]["curtailment_pct"], events["dr-cap"]["limit_kw"]) == (None, 5)
    alert = next(a for a in snap["alerts"] if a["kind"] == "node_over_limit" and a["subject_id"] == SITE)
    assert alert["severity"] == "critical" and alert["site_id"] == SITE and alert["limit_kw"] == 5
    assert snap["alerts"][0]["severity"] == "critical"  # critical first
    assert table.exit_code == 0
    for text in ("Alerts (", "node_over_limit", "critical", "dr-test", "dr-cap"):
        assert text in table.output, text


async def test_rule_list_reads_the_rules_and_whether_each_is_in_force():
    from datetime import UTC, datetime, timedelta

    from pipeline.app.signals import control_rule
    from pipeline.transport.base import publish

    async with live_pipeline() as live:
        transport = live.service.transport
        await publish(transport, *control_rule("charger", "CP1", "cap", limit_kw=7, reason="cable"))
        later = datetime.now(UTC) + timedelta(hours=2)
        await publish(transport, *control_rule("site", SITE, "pause", source="utility", valid_from=later))

        async def listed():
            result = await asyncio.to_thread(CliRunner().invoke, main, ["rule", "list", "--dsn", live.dsn, "--json"])
            rows = json.loads(result.output) if result.exit_code == 0 else []
            in_force = {r["rule_id"] for r in rows if r["in_force"]}
            return rows if len(rows) == 2 and "operator:charger:CP1" in in_force else None  # views refreshed

        rows = await wait_for(listed, what="both rules listed")
        table = await asyncio.to_thread(
            CliRunner().invoke, main, ["rule", "list", "--dsn", live.dsn], env={"COLUMNS": "200"}
        )
    by_id = {r["rule_id"]: r for r in rows}
    assert by_id["operator:charger:CP1"]["in_force"] is True and by_id["operator:charger:CP1"]["limit_kw"] == 7
    assert by_id[f"utility:site:{SITE}"]["in_force"] is False  # not yet: it starts in two hours
    assert table.exit_code == 0 and "operator:charger:CP1" in table.output and "cable" in table.output


async def test_the_port_shortcuts_match_run():
    async with live_pipeline() as live:
        await wait_for(lambda: _all_set(live), what="three sessions with setpoints and meter readings")
        pg, http = str(live.service.pg_port), str(live.service.executor.http_port)
        result = await _status("--once", "--json", "--pg-port", pg, "--http-port", http)
    assert result.exit_code == 0, result.output
    snap = json.loads(result.output)
    assert snap["dsn"] == f"postgresql://root@127.0.0.1:{pg}/dev" and snap["executor"]["reachable"]
    assert len(snap["executor"]["chargers"]) == 3
