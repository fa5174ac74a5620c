"""The executor's one configuration model: every setting and its default is written here, once.

:class:`executor.service.Executor` takes an :class:`ExecutorConfig`; the dispatchers read their policy
from it; the application's deployment settings use it as their ``executor`` section (so
``PIPELINE_EXECUTOR__INCREASE_DEBOUNCE_S=3`` or a settings file set these fields); the site file adds the
charger credentials and TLS files (:meth:`ExecutorConfig.model_copy` with ``update``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from executor.ocpp.station import RateUnit

__all__ = ["ExecutorConfig"]


class ExecutorConfig(BaseModel):
    """How the OCPP central system listens, dispatches and reports.

    Units: clock seconds for ``ev_response_lag_s``, ``increase_debounce_s`` and ``setpoint_ttl_s``
    (``None`` turns the TTL off); real seconds for ``call_timeout_s``, the retry back-off
    (``retry_initial_s`` x 2^(n-1), at most ``retry_max_s``), ``boot_wait_s`` (how long a new connection
    may stay silent before the first call) and ``outbox_drain_s``; amperes per phase for ``deadband_a``;
    seconds of the chargers' sample times for ``meter_heartbeat_s`` (:mod:`executor.telemetry`).

    Learning what each EV takes (:mod:`executor.learning`; docs/architecture.md, "Executor"): a phase
    counts towards a session's ``ev_phases`` when its ``Current.Import`` is above ``ev_phase_min_a`` (A),
    judged ``ev_phase_settle_s`` (s, sample time) after the EV starts drawing. A session drawing below
    ``learned_cap_ratio`` of its limit in force for ``learned_cap_sustain_s`` (s) gets ``learned_cap_kw`` =
    that draw plus the larger of ``learned_cap_margin_kw`` (kW) and ``learned_cap_margin_frac`` of it; a cap
    is lowered only by at least ``learned_cap_step_kw`` (kW), and removed ``learned_cap_probe_s`` (s) after
    it last changed so the EV may show it takes more; ``learned_cap: false`` learns no caps.

    Listeners: chargers connect to ``ws[s]://host:port/ocpp/{id}`` (``port`` 0 picks a free one).
    ``http_host``/``http_port`` is the separate plain-HTTP listener for operators (``GET /status``,
    ``GET /metrics``, ``GET /healthz``), loopback by default because the charger list is not for the
    chargers' network; ``metrics: false`` serves none of it.

    Security: ``credentials`` (``{charge_point_id: password hash}``, :mod:`executor.ocpp.auth` format)
    turns on HTTP Basic auth (security profile 1; 2 with TLS), ``None`` is open mode; ``tls_certfile`` and
    ``tls_keyfile`` turn on TLS 1.2+; ``tls_client_cafile`` requires client certificates (profile 3).

    Raises :class:`pydantic.ValidationError` for a value out of range, ``retry_max_s < retry_initial_s``,
    only one of the TLS files, or a client CA without TLS.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="OCPP websocket bind address")
    port: int = Field(9000, ge=0, le=65535, description="OCPP websocket port (0: a free one)")
    group: str = Field("executor", min_length=1, description="consumer group of the setpoint and topology topics")
    call_timeout_s: float = Field(10.0, gt=0, description="wait this long for a charger's answer, s")
    heartbeat_interval_s: int = Field(300, ge=1, description="BootNotification interval (1.6 4.2, 2.0.1 B01), s")
    charging_rate_unit: RateUnit = Field(
        "A", description="preferred chargingRateUnit (the other one if the charger accepts only that)"
    )
    deadband_a: float = Field(0.1, ge=0, description="skip increases smaller than this, A")
    ev_response_lag_s: float = Field(10.0, ge=0, description="a cut is trusted this long after its ack, s")
    increase_debounce_s: float = Field(1.0, ge=0, description="an increase waits this long unchanged, s")
    setpoint_ttl_s: float | None = Field(1800.0, gt=0, description="older setpoints fall back to the safe share")
    meter_heartbeat_s: float = Field(
        120.0, ge=0, le=300, description="publish a meter reading that moves nothing at least this often, s; 0: all"
    )
    failsafe_fraction: float = Field(1.0, gt=0, le=1, description="fraction of the safe share in the station max")
    retry_initial_s: float = Field(1.0, gt=0, description="first retry after a failed call, s")
    retry_max_s: float = Field(60.0, gt=0, description="longest retry back-off, s")
    boot_wait_s: float = Field(2.0, ge=0, description="wait for a charger's first message, s")
    ev_phase_min_a: float = Field(1.0, gt=0, description="a phase above this current counts as drawing, A")
    ev_phase_settle_s: float = Field(5.0, ge=0, description="phases are counted this long into a draw, s")
    learned_cap: bool = Field(True, description="learn a cap for EVs that take less than their limit")
    learned_cap_ratio: float = Field(0.85, gt=0, lt=1, description="under-draw: below this fraction of the limit")
    learned_cap_sustain_s: float = Field(60.0, ge=0, description="an under-draw lasts this long before it counts, s")
    learned_cap_margin_kw: float = Field(1.0, ge=0, description="the cap is the draw plus at least this, kW")
    learned_cap_margin_frac: float = Field(0.1, ge=0, le=1, description="... or plus this fraction of the draw")
    learned_cap_step_kw: float = Field(0.5, ge=0, description="a learned cap drops by at least this, kW")
    learned_cap_probe_s: float = Field(
        600.0, gt=0, description="a learned cap is removed this long after it changed, s"
    )
    metrics: bool = Field(True, description="serve GET /metrics and GET /status on http_host:http_port")
    http_host: str = Field("127.0.0.1", min_length=1, description="status and metrics bind address")
    http_port: int = Field(9002, ge=0, le=65535, description="status and metrics port (0: a free one)")
    outbox_limit: int = Field(100_000, ge=1, description="records per topic waiting for the transport")
    outbox_drain_s: float = Field(10.0, ge=0, description="stop waits this long for waiting records, s")
    credentials: Mapping[str, str] | None = Field(None, description="{charge_point_id: password hash}; None: open")
    tls_certfile: Path | None = Field(None, description="server certificate (PEM)")
    tls_keyfile: Path | None = Field(None, description="server private key (PEM)")
    tls_client_cafile: Path | None = Field(None, description="CA bundle for client certificates (profile 3)")

    @model_validator(mode="after")
    def _consistent(self) -> ExecutorConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be at least retry_initial_s")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("TLS needs both a certificate and a key file")
        if self.tls_client_cafile is not None and self.tls_certfile is None:
            raise ValueError("client certificates (tls_client_cafile) need TLS: give a certificate and a key file")
        return self
