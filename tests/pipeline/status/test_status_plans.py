"""``pipeline status`` and ``pipeline plan list`` show the sessions' plans; a plan that cannot be met raises
``plan_at_risk``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.status.collect import plan_state
from tests.kits.live import live_pipeline, wait_for
from tests.pipeline.status.test_status import _all_set, _status


def test_a_plan_is_met_on_track_at_risk_or_unknown():
    assert plan_state({"remaining_kwh": 0, "laxity_s": -5}) == "met"
    assert plan_state({"remaining_kwh": 3, "laxity_s": 60}) == "on track"
    assert plan_state({"remaining_kwh": 3, "laxity_s": -1}) == "at risk"
    assert plan_state({"remaining_kwh": 3, "laxity_s": None}) == "unknown"


async def test_status_shows_each_plan_and_an_unreachable_one_raises_plan_at_risk():
    from pipeline.app.signals import session_plan
    from pipeline.transport.base import publish

    async with live_pipeline() as live:
        await wait_for(lambda: _all_set(live), what="three sessions with setpoints and meter readings")
        depart = datetime.now(UTC) + timedelta(hours=1)
        transport = live.service.transport
        await publish(transport, *session_plan(charge_point_id="CP1", departure_at=depart, energy_needed_kwh=500))
        await publish(transport, *session_plan(charge_point_id="CP2", departure_at=depart, energy_needed_kwh=0))

        async def planned() -> dict | None:
            result = await _status("--once", "--json", "--dsn", live.dsn, "--no-executor")
            snap = json.loads(result.output) if result.exit_code == 0 else {}
            kinds = {a["kind"] for a in snap.get("alerts", [])}
            plans = [s for s in snap.get("sessions", []) if s.get("plan")]
            return snap if len(plans) == 2 and "plan_at_risk" in kinds else None

        snap = await wait_for(planned, what="two plans and the plan_at_risk alert")
        table = await _status("--once", "--dsn", live.dsn, "--no-executor", columns=100)
        listed = await asyncio.to_thread(CliRunner().invoke, main, ["plan", "list", "--dsn", live.dsn, "--json"])
    sessions = {s["charge_point_id"]: s for s in snap["sessions"]}
    cp1, cp2 = sessions["CP1"]["plan"], sessions["CP2"]["plan"]
    assert cp1["state"] == "at risk" and cp1["laxity_s"] < 0 and cp1["energy_needed_kwh"] == 500
    assert cp1["remaining_kwh"] == 500 - cp1["delivered_kwh"] and cp1["need_from"] == "operator"
    assert datetime.fromisoformat(cp1["departure_at"]) == depart
    assert cp2["state"] == "met" and sessions["CP2"]["setpoint_kw"] == 0 and sessions["CP2"]["binding"] == "plan"
    assert sessions["CP3"]["plan"] is None
    alert = next(a for a in snap["alerts"] if a["kind"] == "plan_at_risk")
    assert alert["subject_id"] == sessions["CP1"]["session_id"] and alert["severity"] == "warning"
    assert table.exit_code == 0
    for text in ("Plans (2", "at risk", "met", "plan_at_risk"):
        assert text in table.output, text
    plans = {p["plan_id"]: p for p in json.loads(listed.output)}
    assert plans["charger:CP1"]["sessions"] == [sessions["CP1"]["session_id"]]
    assert plans["charger:CP2"]["energy_needed_kwh"] == 0
