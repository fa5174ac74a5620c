"""Alerts reach the logs, ``/metrics`` and a webhook: raised once, cleared once, from the ``alerts`` view."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from executor import ExecutorConfig
from pipeline.app.alerts import AlertSettings, AlertWatcher, alertmanager_payload
from pipeline.app.loop import start_loop
from pipeline.app.signals import demand_signal, dr_cancel, dr_signal
from pipeline.contracts.topics import Alert
from pipeline.engine.config import EngineConfig
from pipeline.transport.base import publish
from pipeline.transport.memory import MemoryTransport
from tests.kits.loop import CONFIG

ALERT = Alert(
    alert_id="node_over_limit:s1",
    kind="node_over_limit",
    severity="critical",
    site_id="s1",
    subject_id="s1",
    value_kw=52.0,
    limit_kw=5.0,
    since=datetime(2024, 6, 3, 17, tzinfo=UTC),
    message="s1 draws 52 kW over 5 kW",
)


def gauge(registry, **labels) -> float | None:
    return registry.get_sample_value("pipeline_alerts_active", labels)


def test_a_raise_and_a_clear_are_one_line_each_and_move_the_gauge(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.app.alerts")
    watcher = AlertWatcher(MemoryTransport())
    labels = {"kind": "node_over_limit", "severity": "critical", "site_id": "s1"}
    watcher.apply(ALERT.alert_id, ALERT)
    watcher.apply(ALERT.alert_id, ALERT.model_copy(update={"value_kw": 53.0}))  # still open: no new line
    assert gauge(watcher.registry, **labels) == 1.0
    watcher.apply(ALERT.alert_id, None)
    watcher.apply(ALERT.alert_id, None)  # a second tombstone clears nothing
    assert gauge(watcher.registry, **labels) == 0.0
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("ERROR", "alert raised: s1 draws 52 kW over 5 kW [critical]"),
        ("INFO", "alert cleared: node_over_limit:s1 (s1 draws 52 kW over 5 kW)"),
    ]
    assert caplog.records[0].alert_id == "node_over_limit:s1" and caplog.records[0].site_id == "s1"


def test_the_webhook_body_is_alertmanagers():
    firing = alertmanager_payload(ALERT, resolved=False)
    assert firing["version"] == "4" and firing["status"] == "firing"
    (alert,) = firing["alerts"]
    assert alert["labels"] == {
        "alertname": "node_over_limit",
        "severity": "critical",
        "site_id": "s1",
        "subject_id": "s1",
        "alert_id": "node_over_limit:s1",
    }
    assert alert["startsAt"] == "2024-06-03T17:00:00Z" and alert["annotations"]["limit_kw"] == "5"
    assert alertmanager_payload(ALERT, resolved=True)["alerts"][0]["status"] == "resolved"


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:  # quiet
        pass


async def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def fired() -> list[dict]:
    return [b for b in _Receiver.bodies if b["commonLabels"]["alertname"] == "node_over_limit"]


async def test_a_dr_cap_under_building_load_raises_an_alert_everywhere_and_its_end_clears_it(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.app.alerts")
    _Receiver.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    loop = await start_loop(
        MemoryTransport(),
        site=CONFIG,
        engine=EngineConfig(tick_s=0.2),
        executor=ExecutorConfig(port=0, http_port=0),
        alerts=AlertSettings(webhook_url=url),
    )
    try:
        assert loop.executor is not None and loop.alerts is not None
        await publish(loop.transport, *demand_signal("s1", current_demand_kw=30, ev_load_kw=0))
        await publish(loop.transport, *dr_signal("s1", limit_kw=5, duration_min=30, event_id="dr-cap"))
        await wait_for(lambda: any(b["status"] == "firing" for b in fired()))
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"{loop.executor.http_url}/metrics", timeout=5).read().decode()
        )
        assert 'pipeline_alerts_active{kind="node_over_limit",severity="critical",site_id="s1"} 1.0' in metrics
        await publish(loop.transport, *dr_cancel("s1", "dr-cap"))
        await wait_for(lambda: any(b["status"] == "resolved" for b in fired()))
    finally:
        await loop.stop()
        server.shutdown()
    raised = [r for r in caplog.records if r.getMessage().startswith("alert raised") and r.kind == "node_over_limit"]
    cleared = [r for r in caplog.records if r.getMessage().startswith("alert cleared") and r.kind == "node_over_limit"]
    assert len(raised) == 1 and raised[0].levelname == "ERROR" and len(cleared) == 1
    assert [b["status"] for b in fired()] == ["firing", "resolved"]
