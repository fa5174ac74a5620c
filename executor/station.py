"""The protocol-neutral seam between an OCPP version module and the rest of the executor.

A version module (:mod:`executor.v16` today, ``executor.v201`` later) owns one websocket connection: it
parses that version's messages, answers them, and reports what happened through :class:`StationEvents`
in plain, unit-normalised terms (kWh, kW, aware UTC datetimes). In the other direction the dispatcher asks
a :class:`Station` to install a per-transaction limit and gets a :class:`CallOutcome` back, without knowing
how that version spells SetChargingProfile. Sessions and dispatch therefore never import ``ocpp``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

RateUnit = Literal["A", "W"]
CallStatus = Literal["Accepted", "Rejected", "NotSupported", "CallError", "Timeout"]


@dataclass(frozen=True)
class MeterSample:
    """One timestamped meter reading of a transaction, already converted to the pipeline's units.

    ``power_kw`` is the active import power (kW), ``energy_register_kwh`` the import energy register (kWh,
    cumulative, the same register as the transaction's meter start) and ``soc_pct`` the EV state of charge
    (0-100); any of them is ``None`` when the charger did not report it in this sample.
    """

    timestamp: datetime
    power_kw: float | None = None
    energy_register_kwh: float | None = None
    soc_pct: float | None = None


@dataclass(frozen=True)
class LimitRequest:
    """A per-transaction charging limit to install on one connector.

    ``limit`` is in ``unit``: amperes per phase for ``"A"``, watts (total) for ``"W"``; it is already
    rounded to the 0.1 resolution the OCPP 1.6 schema allows (``multipleOf 0.1``). ``profile_id`` is stable
    per connector so a newer profile replaces the previous one on the charger.
    """

    connector_id: int
    transaction_id: str
    profile_id: int
    limit: float
    unit: RateUnit
    number_phases: int


@dataclass(frozen=True)
class CallOutcome:
    """What became of one call to a charger.

    ``status`` is the charger's answer (``Accepted``, ``Rejected``, ``NotSupported``), ``CallError`` when it
    answered with a CALLERROR (or an answer that failed schema validation), or ``Timeout`` when it did
    not answer within the call timeout; ``error`` carries the error code and description when there is one.
    """

    status: CallStatus
    error: str | None = None


class StationEvents(Protocol):
    """What a version module reports to the executor; implemented by :class:`executor.service.Executor`.

    Exceptions raised here reach the version module's handler, which answers the charger with a
    CALLERROR (OCPP-J 1.6 section 4.2.3), so the charger retries transaction messages rather than losing them.
    """

    async def on_boot(self, charge_point_id: str, vendor: str, model: str) -> None:
        """A BootNotification was accepted."""

    async def on_start_transaction(
        self, charge_point_id: str, connector_id: int, meter_start_kwh: float, timestamp: datetime
    ) -> int:
        """A transaction started; return the new transaction id (unique across executor restarts)."""

    def on_transaction_confirmed(self, charge_point_id: str, transaction_id: int) -> None:
        """The answer carrying ``transaction_id`` has been sent, so the charger now knows the id."""

    async def on_meter_values(
        self, charge_point_id: str, connector_id: int, transaction_id: int | None, samples: list[MeterSample]
    ) -> None:
        """Meter readings arrived (``transaction_id`` is ``None`` for readings outside a transaction)."""

    async def on_stop_transaction(self, charge_point_id: str, transaction_id: int, timestamp: datetime) -> None:
        """A transaction stopped."""


class Station(Protocol):
    """One live charger connection, as the dispatcher and the server see it."""

    id: str

    async def serve(self) -> None:
        """Read and answer the charger's messages until the connection closes (then return normally)."""

    async def set_limit(self, request: LimitRequest) -> CallOutcome:
        """Install ``request`` as the transaction's limit; never raises for a charger-side failure.

        Raises ``websockets.exceptions.ConnectionClosed`` if the connection is gone.
        """


@dataclass(frozen=True)
class StationOptions:
    """Settings every version module receives: call timeout (s), heartbeat interval (s), clock."""

    call_timeout_s: float
    heartbeat_interval_s: int
    clock: Any


StationFactory = Callable[[str, Any, StationEvents, StationOptions], Station]
"""``factory(charge_point_id, connection, events, options)`` builds a :class:`Station` for a connection."""
