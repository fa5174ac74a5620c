"""Per-connector state of a simulated station, and its exact energy arithmetic.

Split from the station and the OCPP adapters so the physics stays small and checkable: a connector's draw is
piecewise constant, energy is power x clock time between changes, and a session ends exactly when its need
is met or its EV leaves, at an instant computed rather than found by polling. The draw is what a real AC
charge looks like from the grid: a current per phase on the EV's own phases only (a 1-phase EV on L1, a
2-phase one on L1 and L2), the least of what the charger offers (its pilot, which the EV follows
``lag_s`` after it changed) and what the EV accepts, which tapers in 1 % steps of SoC above the EV's
``taper_from_pct`` (each step is an instant computed like the session end). Nothing here knows a message:
states, stop reasons and meter contexts are the station's own words, which the adapters map to their
version's enumerations.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
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


PHASE_NAMES: Final = ("L1", "L2", "L3")
"""The charger's phases as a meter names them (the ``phase`` of a SampledValue, OCPP 1.6 section 7 and 2.0.1
PhaseEnumType)."""


@dataclass(frozen=True)
class MeterReading:
    """One sample of a connector's meter: ``power_kw`` (kW, sent as W), ``register_wh`` (the connector's
    energy register, Wh), ``soc_pct`` (the EV's state of charge, percent) and ``currents_a`` (A on each of
    the charger's phases, L1 first: 0 on a phase the EV does not use); the last two are None when not
    measured."""

    power_kw: float
    register_wh: float
    soc_pct: float | None = None
    currents_a: tuple[float, ...] | None = None


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


TAPER_STEP_PCT: Final = 1.0
"""The SoC step (percent) over which an EV's tapering acceptance is held constant."""


def taper_step_top_pct(taper_from_pct: float, band: int) -> float:
    """The SoC (percent, at most 100) at which taper step ``band`` ends: step k spans [taper_from_pct + k,
    taper_from_pct + k + 1) in :data:`TAPER_STEP_PCT` steps; the EV takes the taper at this top for the
    whole step."""
    return min(100.0, taper_from_pct + (band + 1) * TAPER_STEP_PCT)


@dataclass
class Session:
    """A running transaction. Energies in Wh; ``lag_s`` (clock seconds) is how long its EV takes to follow a
    change of the charger's pilot; ``band`` is the taper step the SoC is in (-1 below the taper, k for SoC in
    [taper_from_pct + k, taper_from_pct + k + 1))."""

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
    lag_s: float = 0.0
    band: int = field(init=False)

    def __post_init__(self) -> None:
        over = self.ev.arrival_soc_pct - self.ev.taper_from_pct
        self.band = -1 if over < 0 else math.floor(over / TAPER_STEP_PCT)

    @property
    def soc_pct(self) -> float:
        """The EV's state of charge now, percent."""
        return self.ev.soc_pct(self.energy_wh / 1000.0)

    def band_end_wh(self) -> float:
        """The session energy (Wh) at which the present taper step ends; infinite in the last one (the
        session ends at full)."""
        top = taper_step_top_pct(self.ev.taper_from_pct, self.band)
        if top >= 100.0:
            return math.inf
        return (top - self.ev.arrival_soc_pct) * self.ev.battery_kwh * 10.0

    def acceptance_a(self) -> float:
        """The current per phase the EV takes in the present taper step, A: its maximum, scaled by its taper
        at the step's top (so it never takes more than the linear taper allows)."""
        if self.band < 0:
            return self.ev.max_current_a
        top = taper_step_top_pct(self.ev.taper_from_pct, self.band)
        return self.ev.max_current_a * self.ev.taper_fraction(top)

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


DrawCallback = Callable[["Connector", float, datetime], None]
"""on_draw(connector, power_kw, at): the connector's draw changed at clock time ``at``."""


@dataclass
class Connector:
    """One connector (an EVSE with one connector in 2.0.1): its meter register (Wh), present draw and
    session, integrated up to ``last_t``.

    The draw: ``current_a`` (A per phase) on ``phases_in_use`` phases at ``voltage_v``, ``power_kw`` their
    product. ``pilot_a`` is what the charger offers now (A per phase, on ``pilot_phases``), ``followed_a`` the
    offer the EV follows (it lags the pilot by the session's ``lag_s``; None before the first). ``on_draw``
    hears of every change of the draw."""

    connector_id: int
    phases_in_use: int
    voltage_v: float = 230.0
    register_wh: float = 0.0
    power_kw: float = 0.0
    current_a: float = 0.0
    pilot_a: float | None = None
    pilot_phases: int | None = None
    followed_a: float | None = None
    pilot_seq: int = 0  # pilot changes made in this session
    followed_seq: int = 0  # the newest of them the EV follows
    on_draw: DrawCallback | None = None
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

    def phase_currents_a(self, charger_phases: int) -> tuple[float, ...]:
        """The draw on each of the charger's ``charger_phases`` phases, L1 first, A: the EV's current on the
        phases it uses, 0 on the others."""
        return tuple(self.current_a if i < self.phases_in_use else 0.0 for i in range(charger_phases))

    def redraw(self, at: datetime) -> None:
        """Set the draw from the followed pilot and the EV's acceptance in its taper step, effective from
        ``at``; tell ``on_draw`` and wake the session task when it changed."""
        s = self.active
        amps = 0.0 if s is None or self.followed_a is None else max(0.0, min(self.followed_a, s.acceptance_a()))
        kw = round(amps * self.phases_in_use * self.voltage_v / 1000.0, 9)  # W per A per phase: no float dust
        self.current_a = amps
        if abs(kw - self.power_kw) > 1e-9:
            self.power_kw = kw
            if self.on_draw is not None:
                self.on_draw(self, kw, at)
            self.wake.set()

    def advance(self, t: datetime) -> None:
        """Integrate energy up to ``t`` at the present constant power, stopping exactly at the session end
        (need met: reason Local; departure: EVDisconnected) and stepping the draw down at each taper step
        the SoC enters. Wakes the session task when the end is found."""
        start = self.last_t
        s = self.active
        if start is None or s is None:
            self.last_t = t if start is None else max(start, t)
            return
        while s.end_at is None:
            start = self.last_t
            assert start is not None
            if s.energy_wh >= s.need_wh - 1e-9:
                s.end_at, s.end_reason = start, LOCAL
            elif s.ev.departure_at <= start:
                s.end_at, s.end_reason = start, EV_DISCONNECTED
            if s.end_at is not None or t <= start:
                break
            stop = min(t, s.ev.departure_at)
            left = s.need_wh - s.energy_wh
            to_band = max(0.0, s.band_end_wh() - s.energy_wh)
            # the need end and the taper step at the very instants finish_time() names (rounded to 1 us)
            t_need, t_band = self._after(start, left), self._after(start, to_band)
            stepped = False
            if t_need is not None and t_need <= stop and (t_band is None or t_need <= t_band):
                stop, add = t_need, left
                s.end_at, s.end_reason = stop, LOCAL
            elif t_band is not None and t_band <= stop:
                stop, add, stepped = t_band, to_band, True
            else:
                add = self.power_kw * (stop - start).total_seconds() / 3.6
                if stop >= s.ev.departure_at:
                    s.end_at, s.end_reason = stop, EV_DISCONNECTED
            s.energy_wh += add
            self.register_wh += add
            self.last_t = stop
            if stepped:
                s.band += 1
                self.redraw(stop)
        if s.end_at is not None:
            self.wake.set()

    def finish_time(self) -> datetime | None:
        """When the draw changes by itself next at the present power: the energy need is met or the SoC
        enters the next taper step (None when not charging)."""
        s = self.active
        if s is None or self.last_t is None:
            return None
        left = min(s.need_wh, s.band_end_wh()) - s.energy_wh
        return self._after(self.last_t, max(0.0, left))

    def _after(self, start: datetime, wh: float) -> datetime | None:
        """When ``wh`` (Wh) more are in at the present power from ``start`` (None: never)."""
        if self.power_kw <= 0 or wh == math.inf:
            return None
        return start + timedelta(seconds=wh * 3.6 / self.power_kw)


GRID_PHASE: Final = {"R": 0, "S": 1, "T": 2}
"""A rotation letter's grid phase (R is L1, S is L2, T is L3)."""


def grid_currents_a(phase_rotation: str, charger_currents_a: tuple[float, ...]) -> tuple[float, float, float]:
    """The charger's currents (A on its L1, L2, L3) on the grid's L1, L2, L3: the charger's L(i+1) is wired to
    the grid phase named by letter i of ``phase_rotation`` (``"SRT"``: charger L1 on grid L2; OCPP 1.6
    ``ConnectorPhaseRotation``, 2.0.1 ``EVSE.PhaseRotation``)."""
    grid = [0.0, 0.0, 0.0]
    for letter, amps in zip(phase_rotation, charger_currents_a, strict=False):
        grid[GRID_PHASE[letter]] += amps
    return grid[0], grid[1], grid[2]


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
