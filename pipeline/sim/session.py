"""Per-connector state of a simulated station, and its exact energy arithmetic.

Split from the station and the OCPP adapters so the physics stays small and checkable: a connector's power
is piecewise constant, energy is power x clock time between changes, and a session ends exactly when its need
is met or its EV leaves, at an instant computed rather than found by polling. Nothing here knows a message:
states, stop reasons and meter contexts are the station's own words, which the adapters map to their
version's enumerations.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from pipeline.sim.ev import EV
from pipeline.sim.profiles import TransactionId

ConnectorState = Literal["Available", "Preparing", "Charging", "SuspendedEVSE"]
"""What a connector is doing. The 1.6 adapter reports it as ChargePointStatus (the same names); the 2.0.1
adapter as ConnectorStatus (Available, else Occupied)."""
AVAILABLE: Final = "Available"
PREPARING: Final = "Preparing"
CHARGING: Final = "Charging"
SUSPENDED_EVSE: Final = "SuspendedEVSE"

StopReason = Literal["EVDisconnected", "Local", "Other", "Remote", "DeAuthorized"]
"""Why a session ended: the names are those of OCPP 1.6 StopTransaction ``reason`` and OCPP 2.0.1
TransactionEvent ``stoppedReason`` (ReasonEnumType), which agree on these five."""
EV_DISCONNECTED: Final = "EVDisconnected"  # the driver left at departure_at
LOCAL: Final = "Local"  # energy need met: the driver ends the transaction at the station
OTHER: Final = "Other"  # the simulator was stopped
REMOTE: Final = "Remote"  # the central system asked to stop (1.6 RemoteStopTransaction, 2.0.1 F03)
DEAUTHORIZED: Final = "DeAuthorized"  # the transaction start was answered with an id that is not Accepted

MeterContext = Literal["Sample.Periodic", "Trigger", "Transaction.Begin", "Transaction.End"]
"""Why a meter reading was taken: ReadingContext, spelled the same in OCPP 1.6 and 2.0.1."""
PERIODIC: Final = "Sample.Periodic"
TRIGGER: Final = "Trigger"
BEGIN: Final = "Transaction.Begin"
END: Final = "Transaction.End"


@dataclass(frozen=True)
class MeterReading:
    """One sample of a connector's meter: ``power_kw`` (kW, sent as W), ``register_wh`` (the connector's
    energy register, Wh), ``soc_pct`` (the EV's state of charge, percent) and ``current_a`` (A per phase);
    the last two are None when not measured."""

    power_kw: float
    register_wh: float
    soc_pct: float | None = None
    current_a: float | None = None


@dataclass
class SessionSummary:
    """A finished session. Energy in kWh; times are clock times (aware UTC); ``reason`` is a
    :data:`StopReason`."""

    ev_id: str
    connector_id: int
    transaction_id: TransactionId | None
    energy_kwh: float
    requested_kwh: float
    started_at: datetime
    ended_at: datetime
    reason: StopReason


@dataclass
class Session:
    """A running transaction. Energies in Wh."""

    ev: EV
    started_at: datetime
    meter_start_wh: int
    need_wh: float
    next_meter: datetime
    transaction_id: TransactionId | None = None  # None while the central system has not named it yet
    energy_wh: float = 0.0
    end_at: datetime | None = None  # set once the end instant is known
    end_reason: StopReason | None = None
    booked: bool = False  # its summary is in the station's sessions list

    def summary(self, connector_id: int) -> SessionSummary:
        return SessionSummary(
            self.ev.ev_id,
            connector_id,
            self.transaction_id,
            self.energy_wh / 1000.0,
            self.need_wh / 1000.0,
            self.started_at,
            self.end_at or self.started_at,
            self.end_reason or OTHER,
        )


@dataclass
class Connector:
    """One connector (an EVSE with one connector in 2.0.1): its meter register (Wh), present draw (kW) and
    session, integrated up to ``last_t``."""

    connector_id: int
    phases_in_use: int
    register_wh: float = 0.0
    power_kw: float = 0.0
    last_t: datetime | None = None
    limits_at: datetime | None = None  # profile schedule boundaries up to here are accounted for
    status: ConnectorState = AVAILABLE
    session: Session | None = None
    stop_reason: StopReason | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def active(self) -> Session | None:
        """The session if it is charging: its transaction started and its end is not known yet."""
        s = self.session
        return s if s is not None and s.transaction_id is not None and s.end_at is None else None

    @property
    def charging(self) -> bool:
        """A started transaction whose end is not known yet."""
        return self.active is not None

    def advance(self, t: datetime) -> None:
        """Integrate energy up to ``t`` at the present constant power, stopping exactly at the session end
        (need met: reason Local; departure: EVDisconnected). Wakes the session task when the end is found."""
        start = self.last_t
        s = self.active
        if start is None or s is None:
            self.last_t = t if start is None else max(start, t)
            return
        if s.energy_wh >= s.need_wh - 1e-9:
            s.end_at, s.end_reason = start, LOCAL
        elif s.ev.departure_at <= start:
            s.end_at, s.end_reason = start, EV_DISCONNECTED
        elif t > start:
            stop = min(t, s.ev.departure_at)
            add = self.power_kw * (stop - start).total_seconds() / 3.6
            left = s.need_wh - s.energy_wh
            if add >= left:
                stop = start + timedelta(seconds=left * 3.6 / self.power_kw)
                add = left
                s.end_at, s.end_reason = stop, LOCAL
            elif stop >= s.ev.departure_at:
                s.end_at, s.end_reason = stop, EV_DISCONNECTED
            s.energy_wh += add
            self.register_wh += add
            self.last_t = stop
        if s.end_at is not None:
            self.wake.set()

    def finish_time(self) -> datetime | None:
        """When the energy need will be met at the present power (None when not charging)."""
        s = self.active
        if s is None or self.power_kw <= 0 or self.last_t is None:
            return None
        return self.last_t + timedelta(seconds=(s.need_wh - s.energy_wh) * 3.6 / self.power_kw)


def water_fill(cap_kw: float, wants_kw: dict[int, float]) -> dict[int, float]:
    """Share ``cap_kw`` (kW) among connectors: each gets what it wants (kW) or an equal share of what is left."""
    out: dict[int, float] = {}
    left = max(0.0, cap_kw)
    ordered = sorted(wants_kw.items(), key=lambda kv: kv[1])
    for i, (cid, want) in enumerate(ordered):
        give = max(0.0, min(want, left / (len(ordered) - i)))
        out[cid] = give
        left -= give
    return out
