"""Executor counters, as plain numbers for tests and status views and as Prometheus metrics for operators.

Every metric lives on the executor's own :class:`prometheus_client.CollectorRegistry`, so several executors
(tests, replays) can run in one process without clashing on the global registry. The OCPP server serves
the registry as text on ``GET /metrics`` (see :mod:`executor.ocpp.server`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ExecutorStats"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ExecutorStats:
    """Counts kept by the executor; each update also moves the matching Prometheus metric.

    - ``calls``: ``{(action, result): n}`` over every call made to chargers (SetChargingProfile,
      ClearChargingProfile, GetConfiguration, GetVariables). Prometheus: ``ocpp_calls_total{action, result}``
      and the round trip ``ocpp_call_duration_seconds{action}`` (histogram, real seconds).
    - ``profiles_sent``: SetChargingProfile calls carrying a setpoint (TxProfile), counted when sent;
      ``calls_by_result`` their answers. Prometheus: ``executor_profiles_total{purpose, result}`` covers
      every profile purpose (TxProfile, TxDefaultProfile, StationMax, StationMaxLift).
    - ``updates_collapsed``: desired values replaced by a newer setpoint before the dispatcher took them
      (rapid changes merged into one call). Prometheus: ``executor_setpoint_updates_collapsed_total``.
    - ``stale_ignored``: setpoint records ignored for an older ``computed_at``.
      Prometheus: ``executor_setpoints_stale_total``.
    - ``connected``: chargers with a live connection. Prometheus: ``ocpp_connected_chargers``.
    - ``in_flight``: calls sent and not yet answered or timed out. Prometheus: ``ocpp_calls_in_flight``.
    - ``failsafe_activations``: ``{reason: n}``: the safe-share station maximum installed at a connection or
      BootNotification (``boot``), or a charger falling back to it because its setpoints are older than the
      TTL (``stale``). Prometheus: ``executor_failsafe_activations_total{reason}``.
    - ``held_back``: connectors whose increase waits (debounce, break before make, headroom).
      Prometheus: ``executor_increases_held_back``.
    - dispatch latency: real seconds from a setpoint's arrival to the charger accepting it.
      Prometheus: ``executor_dispatch_latency_seconds`` (histogram).
    - refused connections by reason (``unauthorized``, ``not_found``). Prometheus:
      ``ocpp_connections_refused_total{reason}``.
    - the outbox (:mod:`executor.outbox`): records waiting for the transport, by topic
      (``executor_outbox_records{topic}``), records dropped because its bound was reached or left undelivered
      at shutdown (``executor_outbox_overflow_total{topic}``), and records replaced by a newer one of the
      same key before they were sent (``executor_outbox_coalesced_total{topic}``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.profiles_sent = 0
        self.updates_collapsed = 0
        self.stale_ignored = 0
        self.calls: dict[tuple[str, str], int] = {}
        self.calls_by_result: dict[str, int] = {}
        self.failsafe_activations: dict[str, int] = {}
        self.connected = 0
        self.in_flight = 0
        self.held_back = 0
        self._connected = Gauge("ocpp_connected_chargers", "Chargers with a live OCPP connection", registry=registry)
        self._calls = Counter(
            "ocpp_calls",
            "OCPP calls made to chargers, by action and result",
            ["action", "result"],
            registry=registry,
        )
        self._duration = Histogram(
            "ocpp_call_duration_seconds",
            "Round trip of OCPP calls to chargers",
            ["action"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._profiles = Counter(
            "executor_profiles",
            "Charging profiles sent, by purpose and result",
            ["purpose", "result"],
            registry=registry,
        )
        self._in_flight = Gauge("ocpp_calls_in_flight", "OCPP calls awaiting an answer", registry=registry)
        self._collapsed = Counter(
            "executor_setpoint_updates_collapsed",
            "Desired setpoints superseded before they were sent",
            registry=registry,
        )
        self._stale = Counter(
            "executor_setpoints_stale", "Setpoint records ignored for an older computed_at", registry=registry
        )
        self._latency = Histogram(
            "executor_dispatch_latency_seconds",
            "From a setpoint's arrival to the charger accepting it",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._failsafe = Counter(
            "executor_failsafe_activations",
            "Safe-share station maxima put in force, by reason",
            ["reason"],
            registry=registry,
        )
        self._held = Gauge("executor_increases_held_back", "Connectors whose increase is waiting", registry=registry)
        self._refused = Counter(
            "ocpp_connections_refused",
            "Websocket upgrades refused before OCPP, by reason",
            ["reason"],
            registry=registry,
        )
        self._outbox_depth = Gauge(
            "executor_outbox_records",
            "Records waiting in the outbox for the transport, by topic",
            ["topic"],
            registry=registry,
        )
        self._outbox_overflow = Counter(
            "executor_outbox_overflow",
            "Records the outbox dropped (bound reached, or left at shutdown), by topic",
            ["topic"],
            registry=registry,
        )
        self._outbox_coalesced = Counter(
            "executor_outbox_coalesced",
            "Upserts replaced in the outbox by a newer record of the same key",
            ["topic"],
            registry=registry,
        )

    def set_connected(self, count: int) -> None:
        self.connected = count
        self._connected.set(count)

    def call_sent(self, action: str, purpose: str | None = None) -> None:
        if purpose == "Tx":
            self.profiles_sent += 1
        self.in_flight += 1
        self._in_flight.inc()

    def call_answered(self, action: str, result: str, seconds: float, purpose: str | None = None) -> None:
        self.in_flight -= 1
        self._in_flight.dec()
        self.calls[(action, result)] = self.calls.get((action, result), 0) + 1
        self._calls.labels(action=action, result=result).inc()
        self._duration.labels(action=action).observe(seconds)
        if purpose is not None:
            self._profiles.labels(purpose=purpose, result=result).inc()
        if purpose == "Tx":
            self.calls_by_result[result] = self.calls_by_result.get(result, 0) + 1

    def call_abandoned(self) -> None:
        """A call ended without an answer to count (its connection closed or the executor stopped)."""
        self.in_flight -= 1
        self._in_flight.dec()

    def dispatched(self, seconds: float) -> None:
        self._latency.observe(max(0.0, seconds))

    def failsafe(self, reason: str) -> None:
        self.failsafe_activations[reason] = self.failsafe_activations.get(reason, 0) + 1
        self._failsafe.labels(reason=reason).inc()

    def set_held_back(self, count: int) -> None:
        self.held_back = count
        self._held.set(count)

    def refused(self, reason: str) -> None:
        self._refused.labels(reason=reason).inc()

    def outbox_depth(self, topic: str, records: int) -> None:
        self._outbox_depth.labels(topic=topic).set(records)

    def outbox_overflow(self, topic: str, records: int = 1) -> None:
        self._outbox_overflow.labels(topic=topic).inc(records)

    def outbox_coalesced(self, topic: str) -> None:
        self._outbox_coalesced.labels(topic=topic).inc()

    def collapsed(self) -> None:
        self.updates_collapsed += 1
        self._collapsed.inc()

    def stale(self) -> None:
        self.stale_ignored += 1
        self._stale.inc()
