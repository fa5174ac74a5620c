"""Alerts reach the operator wherever they look: one log line when an alert is raised and one when it
clears, a Prometheus gauge, and an optional webhook.

The engine (embedded or RisingWave) publishes open alerts on ``pipeline.alerts`` (an upsert topic: the
alert's record while it is open, a tombstone when it clears). :class:`AlertWatcher` follows the topic
from the beginning, so a restart knows what is open, and for each change:

- logs ``alert raised: <message>`` at WARNING (``warning``) or ERROR (``critical``), and ``alert cleared``
  at INFO, with ``alert_id``, ``kind``, ``severity`` and ``site_id`` as fields;
- sets ``pipeline_alerts_active{kind,severity,site_id}`` (open alerts per label set) on the registry it
  is given (``pipeline run`` and ``pipeline executor`` use the executor's, served on ``/metrics``);
- with a webhook URL, POSTs the change in the Alertmanager webhook format (version 4: ``status``
  ``firing`` or ``resolved``, one alert with ``labels``, ``annotations``, ``startsAt``, ``endsAt``),
  retried with exponential back-off (tenacity) a bounded number of times; a webhook that stays down
  is logged, never blocks the watcher.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.contracts.topics import ALERTS, Alert

if TYPE_CHECKING:  # prometheus_client and tenacity are imported when a watcher starts, not by the settings
    from prometheus_client import CollectorRegistry

    from pipeline.transport.base import Transport

__all__ = ["AlertSettings", "AlertWatcher", "alertmanager_payload"]

log = logging.getLogger(__name__)


class AlertSettings(BaseModel):
    """Where alerts go besides the logs and ``/metrics``: ``webhook_url`` (off when unset) receives each
    raise and clear as JSON (Alertmanager webhook format), tried ``webhook_attempts`` times with
    exponential back-off, each try waiting at most ``webhook_timeout_s`` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_url: str | None = Field(None, description="POST alerts here (Alertmanager webhook format); off if unset")
    webhook_timeout_s: float = Field(5.0, gt=0, le=60)
    webhook_attempts: int = Field(5, ge=1, le=20)


def _iso(when: datetime | None) -> str:
    return (when or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def alertmanager_payload(alert: Alert, resolved: bool, cleared_at: datetime | None = None) -> dict[str, Any]:
    """One alert change as an Alertmanager webhook body (version 4)."""
    labels = {
        "alertname": alert.kind,
        "severity": alert.severity,
        "site_id": alert.site_id or "",
        "subject_id": alert.subject_id,
        "alert_id": alert.alert_id,
    }
    annotations = {"summary": alert.message}
    if alert.value_kw is not None:
        annotations["value_kw"] = f"{alert.value_kw:g}"
    if alert.limit_kw is not None:
        annotations["limit_kw"] = f"{alert.limit_kw:g}"
    status = "resolved" if resolved else "firing"
    return {
        "version": "4",
        "groupKey": alert.alert_id,
        "status": status,
        "receiver": "pipeline",
        "groupLabels": {"alertname": alert.kind},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _iso(alert.since),
                "endsAt": _iso(cleared_at) if resolved else "0001-01-01T00:00:00Z",
                "fingerprint": alert.alert_id,
            }
        ],
    }


class AlertWatcher:
    """Follows ``pipeline.alerts`` and reports raises and clears (see the module docstring).

    ``registry`` receives the ``pipeline_alerts_active`` gauge (``None``: a registry of its own, readable as
    :attr:`registry`). :attr:`open` maps each open alert id to its latest record.
    """

    def __init__(
        self, transport: Transport, settings: AlertSettings | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.transport = transport
        self.settings = settings or AlertSettings()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.gauge = Gauge(
            "pipeline_alerts_active",
            "Open alerts of the pipeline.alerts topic",
            ["kind", "severity", "site_id"],
            registry=self.registry,
        )
        self.open: dict[str, Alert] = {}
        self.webhooks_sent = 0
        self.webhooks_failed = 0
        self._task: asyncio.Task[None] | None = None
        self._posts: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Follow the topic in a background task (from its beginning, in a fresh consumer group)."""
        self._task = asyncio.create_task(self._follow(f"alerts-{uuid.uuid4().hex[:8]}"), name="alert-watcher")

    async def stop(self) -> None:
        """Stop following; webhook posts under way get a moment to finish."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._posts:
            await asyncio.wait(self._posts, timeout=self.settings.webhook_timeout_s)

    async def _follow(self, group: str) -> None:
        from pipeline.transport.base import decode_or_dead_letter

        consumer = await self.transport.consumer([ALERTS], group, from_beginning=True)
        try:
            while True:
                for record in await consumer.getmany(timeout_s=1.0):
                    ok, value = await decode_or_dead_letter(self.transport, record)
                    if ok and record.key is not None:
                        self.apply(record.key, value if isinstance(value, Alert) else None)
                await consumer.commit()
        finally:
            await consumer.close()

    def apply(self, key: str, alert: Alert | None) -> None:
        """One record of the topic: an open alert (new or changed) or a tombstone (cleared)."""
        before = self.open.get(key)
        if alert is None:
            if before is None:
                return
            del self.open[key]
            self._count(before, -1)
            log.info("alert cleared: %s (%s)", before.alert_id, before.message, extra=self._fields(before))
            self._post(before, resolved=True)
            return
        self.open[key] = alert
        if before is not None:
            self._count(before, -1)
        self._count(alert, +1)
        if before is None or before.severity != alert.severity:
            level = logging.ERROR if alert.severity == "critical" else logging.WARNING
            log.log(level, "alert raised: %s [%s]", alert.message, alert.severity, extra=self._fields(alert))
            self._post(alert, resolved=False)

    def _count(self, alert: Alert, delta: int) -> None:
        self.gauge.labels(alert.kind, alert.severity, alert.site_id or "").inc(delta)

    @staticmethod
    def _fields(alert: Alert) -> dict[str, Any]:
        return {
            "alert_id": alert.alert_id,
            "kind": alert.kind,
            "severity": alert.severity,
            "site_id": alert.site_id,
            "subject_id": alert.subject_id,
        }

    def _post(self, alert: Alert, resolved: bool) -> None:
        if not self.settings.webhook_url:
            return
        body = json.dumps(alertmanager_payload(alert, resolved, datetime.now(UTC))).encode()
        task = asyncio.create_task(self._send(body, alert.alert_id), name="alert-webhook")
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _send(self, body: bytes, alert_id: str) -> None:
        from tenacity import AsyncRetrying, RetryError, stop_after_attempt, wait_exponential

        url, timeout = self.settings.webhook_url, self.settings.webhook_timeout_s
        assert url is not None

        def post() -> None:
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.settings.webhook_attempts),
                wait=wait_exponential(multiplier=0.2, max=10),
                reraise=False,
            ):
                with attempt:
                    await asyncio.to_thread(post)
            self.webhooks_sent += 1
        except RetryError as exc:
            self.webhooks_failed += 1
            log.warning(
                "alert webhook %s: %s not delivered after %d tries: %s",
                url,
                alert_id,
                self.settings.webhook_attempts,
                exc.last_attempt.exception(),
            )
