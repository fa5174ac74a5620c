"""Executor counters, as plain integers for tests and status views and as Prometheus metrics for operators.

Every metric lives on the executor's own :class:`prometheus_client.CollectorRegistry`, so several executors
(tests, replays) can run in one process without clashing on the global registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ExecutorStats"]


class ExecutorStats:
    """Counts kept by the executor; each update also moves the matching Prometheus metric.

    - ``profiles_sent``: SetChargingProfile calls written to a charger (counted when sent, whatever the
      answer). Prometheus: ``ocpp_calls_total{action="SetChargingProfile"}`` summed over results.
    - ``calls_by_result``: answers per result (``Accepted``, ``Rejected``, ``NotSupported``, ``CallError``,
      ``Timeout``). Prometheus: ``ocpp_calls_total{action, result}``.
    - ``updates_collapsed``: desired values replaced by a newer setpoint before the dispatcher took them
      for sending (rapid changes merged into one call).
      Prometheus: ``executor_setpoint_updates_collapsed_total``.
    - ``stale_ignored``: setpoint records ignored for an older ``computed_at``.
      Prometheus: ``executor_setpoints_stale_total``.
    - ``connected``: chargers with a live connection. Prometheus: ``ocpp_connected_chargers``.
    - ``in_flight``: calls sent and not yet answered or timed out. Prometheus: ``ocpp_calls_in_flight``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.profiles_sent = 0
        self.updates_collapsed = 0
        self.stale_ignored = 0
        self.calls_by_result: dict[str, int] = {}
        self.connected = 0
        self.in_flight = 0
        self._connected = Gauge(
            "ocpp_connected_chargers", "Chargers with a live OCPP connection", registry=registry)
        self._calls = Counter(
            "ocpp_calls", "OCPP calls made to chargers, by action and result", ["action", "result"],
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

    def set_connected(self, count: int) -> None:
        self.connected = count
        self._connected.set(count)

    def call_sent(self, action: str) -> None:
        if action == "SetChargingProfile":
            self.profiles_sent += 1
        self.in_flight += 1
        self._in_flight.inc()

    def call_answered(self, action: str, result: str) -> None:
        self.in_flight -= 1
        self._in_flight.dec()
        self.calls_by_result[result] = self.calls_by_result.get(result, 0) + 1
        self._calls.labels(action=action, result=result).inc()

    def call_abandoned(self) -> None:
        """A call ended without an answer to count (its connection closed or the executor stopped)."""
        self.in_flight -= 1
        self._in_flight.dec()

    def collapsed(self) -> None:
        self.updates_collapsed += 1
        self._collapsed.inc()

    def stale(self) -> None:
        self.stale_ignored += 1
        self._stale.inc()
