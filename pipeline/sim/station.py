"""The version-neutral simulated charging station: physics, sessions, profiles and the connection's life.

Tests, demos and the replay need chargers that behave like real ones whatever OCPP version they speak. This
module holds everything OCPP 1.6 and 2.0.1 share, as the ``ocpp`` library splits its own ``ChargePoint``
from the ``v16`` and ``v201`` classes: the websocket (OCPP-J, HTTP Basic auth, reconnection with the back-off
of :mod:`pipeline.sim.link`), boot and lifecycle, EVs plugging in, the session tasks that integrate energy
exactly over :mod:`pipeline.contracts.clock` time and report meter values, and the profile stack (:mod:`pipeline.sim.control`,
:mod:`pipeline.sim.profiles`). It never builds or reads a message: :class:`Station` calls abstract hooks
that the sibling adapters :mod:`pipeline.sim.v16` and :mod:`pipeline.sim.v201` implement, and those call
back the neutral methods here (:meth:`Station.receive_profile`, :meth:`Station.request_stop`, ...).

Each session task sleeps until its next event (meter tick, need met, taper step, departure, schedule
boundary) or until a new limit wakes it; it never polls.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, get_args

from websockets.asyncio.client import ClientConnection, connect

from pipeline.contracts.clock import Clock
from pipeline.contracts.topics import PhaseRotation, TopologyNode
from pipeline.sim.control import PowerControl
from pipeline.sim.ev import EV, ResponseLag, lag_range
from pipeline.sim.link import DEFAULT_BACKOFF, FLEET_BACKOFF, Link, ReconnectBackoff, call_until_ended
from pipeline.sim.profiles import Profile, Purpose, RateUnit, TransactionId
from pipeline.sim.session import (
    AVAILABLE,
    CHARGING,
    DEAUTHORIZED,
    OTHER,
    PERIODIC,
    PREPARING,
    REMOTE,
    SUSPENDED_EVSE,
    TRIGGER,
    Connector,
    ConnectorState,
    MeterContext,
    MeterReading,
    Session,
    SessionSummary,
    grid_currents_a,
)

__all__ = ["FLEET_BACKOFF", "Link", "PowerCallback", "ReconnectBackoff", "Station"]

log = logging.getLogger(__name__)

PowerCallback = Callable[[str, int, float, datetime], None]
"""on_power(charge_point_id, connector_id, power_kw, at): a connector's draw changed at clock time ``at``."""


class Station(abc.ABC):
    """A simulated station with ``connectors`` connectors (EVSEs in 2.0.1), driven by ``clock``.

    ``auto_reconnect`` makes it reconnect (without rebooting) when the connection drops, as real chargers
    do, waiting ``reconnect_backoff`` between attempts (:class:`ReconnectBackoff`); calls made meanwhile
    wait for the link. With it, :meth:`start` also keeps trying while the central system cannot be reached.
    A reconnect is not a reboot: no BootNotification (OCPP 1.6 section 4.2 and 2.0.1 B01 send it after a
    boot), but a StatusNotification per connector, and running transactions go on with their meter values
    (2.0.1 B04). :meth:`reconnect` does it on demand.

    The charger has ``phases`` phases wired to the grid in ``phase_rotation`` (a
    :data:`~pipeline.contracts.topics.PhaseRotation`, reported as 1.6 ``ConnectorPhaseRotation`` and 2.0.1
    ``EVSE.PhaseRotation``); each EV draws on its own phases (:class:`~pipeline.sim.ev.EV` ``phases``), at most
    the rating per phase, ``rated_power_kw`` over ``phases`` x ``voltage_v``. ``ev_response_s`` is how long an
    EV takes to follow a new limit (:data:`~pipeline.sim.ev.ResponseLag`: fixed, or a (low, high) range drawn
    once per session from a generator seeded with ``seed`` and the charge point id;
    :data:`~pipeline.sim.ev.REAL_EV_RESPONSE_S` for real EVs).

    Units: power in kW, energy in kWh (Wh on the wire), voltage in V, ``meter_interval_s`` and
    ``ev_response_s`` in clock seconds. The station connects to f"{url}/{charge_point_id}" with the
    adapter's ``subprotocol``. ``password`` turns on HTTP Basic auth with the charge point id as username;
    ``ssl`` goes to the websocket client for wss:// URLs; ``response_timeout_s`` is the real-time OCPP call
    timeout.
    """

    subprotocol: ClassVar[str]
    """The websocket subprotocol of the adapter's OCPP version (``ocpp1.6``, ``ocpp2.0.1``)."""

    def __init__(
        self,
        charge_point_id: str,
        url: str,
        clock: Clock,
        *,
        rated_power_kw: float = 22.0,
        phases: int = 3,
        voltage_v: float = 230.0,
        connectors: int = 1,
        meter_interval_s: float = 60.0,
        on_power: PowerCallback | None = None,
        ev_response_s: ResponseLag = 0.0,
        seed: int = 0,
        phase_rotation: PhaseRotation = "RST",
        vendor: str = "EVSim",
        model: str = "SimCP",
        password: str | None = None,
        ssl: Any = None,
        response_timeout_s: float = 30.0,
        auto_reconnect: bool = False,
        reconnect_backoff: ReconnectBackoff = DEFAULT_BACKOFF,
    ) -> None:
        self.charge_point_id = charge_point_id
        self.url = url.rstrip("/")
        self.clock = clock
        self.rated_power_kw = rated_power_kw
        if phases not in (1, 2, 3):
            raise ValueError(f"phases must be 1, 2 or 3, not {phases!r}")
        if phase_rotation not in get_args(PhaseRotation):
            raise ValueError(f"phase_rotation must be one of {get_args(PhaseRotation)}, not {phase_rotation!r}")
        self._lag_range = lag_range(ev_response_s)
        self.phases = phases
        self.phase_rotation = phase_rotation
        self.voltage_v = voltage_v
        self.meter_interval_s = meter_interval_s
        self.on_power = on_power
        self.ev_response_s = ev_response_s
        self._rng = random.Random(f"{seed}:{charge_point_id}")
        self.vendor, self.model = vendor, model
        self.password, self.ssl = password, ssl
        self.response_timeout_s = response_timeout_s
        self._control = PowerControl(self)
        self._connectors = {
            i: Connector(i, phases, voltage_v=voltage_v, on_draw=self._control.emit) for i in range(1, connectors + 1)
        }
        for c in self._connectors.values():
            c.done.set()
        self._ws: ClientConnection | None = None
        self._link: Link | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._stopped = False
        self.auto_reconnect = auto_reconnect
        self.reconnect_backoff = reconnect_backoff
        self.reconnects = 0
        """Connections re-opened after one was lost (or :meth:`reconnect` was called)."""
        self._online = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        self.sessions: list[SessionSummary] = []
        """Finished sessions, in the order they ended."""
        self.profiles_received = 0
        """SetChargingProfile requests received (accepted or not)."""
        self.profiles_rejected = 0
        self.meter_values_sent = 0
        self.heartbeat_interval_s: int | None = None

    @property
    def connectors(self) -> Mapping[int, Connector]:
        """The connectors by id (1..n)."""
        return self._connectors

    # ------------------------------------------------------------------ hooks: the version adapters

    @abc.abstractmethod
    def _make_link(self, ws: ClientConnection) -> Link:
        """The adapter's OCPP connection object over the open websocket."""

    @abc.abstractmethod
    async def _boot(self) -> tuple[bool, int | None]:
        """Send BootNotification: (accepted, heartbeat interval in seconds or None)."""

    @abc.abstractmethod
    async def _authorize(self, ev: EV) -> bool:
        """Ask whether ``ev`` (its id as the adapter's id token) may charge (1.6 Authorize, 2.0.1 C01): True
        when Accepted."""

    @abc.abstractmethod
    def _new_transaction_id(self) -> TransactionId | None:
        """The id of a transaction about to start when the station names it (2.0.1 E01); None when the
        central system does (1.6 StartTransaction.conf)."""

    @abc.abstractmethod
    async def _start_transaction(self, c: Connector, s: Session) -> tuple[TransactionId, bool] | None:
        """Report the start of ``s``: (transaction id, id token accepted), or None when it failed."""

    async def _transaction_started(self, c: Connector, s: Session) -> None:  # noqa: B027 (a hook; 1.6 has none)
        """The transaction of ``s`` runs: tell the central system what the EV knows of its needs (2.0.1 K15
        NotifyEVChargingNeeds); nothing in 1.6, which has no such message."""

    @abc.abstractmethod
    async def _stop_transaction(self, c: Connector, s: Session, summary: SessionSummary) -> None:
        """Report the end of ``s`` (``summary`` holds the end time and the stop reason)."""

    @abc.abstractmethod
    async def _send_meter_values(
        self, c: Connector, s: Session, at: datetime, context: MeterContext, reading: MeterReading
    ) -> None:
        """Report ``reading``, sampled at ``at``, of the running session ``s``."""

    @abc.abstractmethod
    async def _send_status(self, c: Connector, state: ConnectorState) -> None:
        """Report that the connector is now in ``state``."""

    # ----------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect, start the OCPP message loop, BootNotification, a StatusNotification Available per connector.

        A boot that is not accepted is tried again after the interval the central system gave (10 clock
        seconds without one), five times; then ``ConnectionError``. With ``auto_reconnect`` a connection
        that fails is tried again after the back-off until it works or :meth:`stop` is called; without it
        the error (``OSError``, a websocket error) is raised.
        """
        attempt = 0
        while True:
            try:
                await self._connect()
                break
            except Exception as exc:
                if not self.auto_reconnect or self._stopped:
                    raise
                delay = self.reconnect_backoff.delay_s(attempt)
                log.info("%s: connecting failed (%r); next attempt in %.1fs", self.charge_point_id, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
        for _ in range(5):
            accepted, interval = await self._boot()
            if accepted:
                self.heartbeat_interval_s = interval
                break
            await self.clock.sleep(float(interval) if interval else 10.0)
        else:
            await self.stop()
            raise ConnectionError(f"{self.charge_point_id}: BootNotification was not accepted")
        for c in self._connectors.values():
            await self._status(c, AVAILABLE)

    async def _connect(self) -> None:
        """Open the websocket (HTTP Basic auth when a password is set) and start the message loop."""
        kwargs: dict[str, Any] = {
            "subprotocols": [self.subprotocol],
            "open_timeout": self.response_timeout_s,
            "compression": None,
        }  # like most chargers; saves CPU in big fleets
        if self.password is not None:
            token = base64.b64encode(f"{self.charge_point_id}:{self.password}".encode()).decode()
            kwargs["additional_headers"] = {"Authorization": f"Basic {token}"}
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
        ws = self._ws = await connect(f"{self.url}/{self.charge_point_id}", **kwargs)
        if ws.subprotocol != self.subprotocol:
            await ws.close()
            raise ConnectionError(f"{self.charge_point_id}: the server did not accept subprotocol {self.subprotocol}")
        link = self._link = self._make_link(ws)
        self._online.set()
        self._loop_task = asyncio.create_task(self._message_loop(link), name=f"ocpp-{self.charge_point_id}")

    async def reconnect(self) -> None:
        """Drop the connection (if any) and connect again, as after a network outage: no BootNotification
        (the station did not reboot), a StatusNotification per connector, profiles and sessions kept."""
        self._online.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._loop_task is not None and self._loop_task is not asyncio.current_task():
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._connect()
        self.reconnects += 1
        await self.report_status()

    async def stop(self) -> None:
        """End any session (stop reason Other) and close the socket. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for c in self._connectors.values():
            if c.session is not None:
                c.stop_reason = c.stop_reason or OTHER
                c.wake.set()
        tasks = [c.task for c in self._connectors.values() if c.task is not None and not c.task.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.response_timeout_s)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._control.cancel_pending()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def _message_loop(self, link: Link) -> None:
        try:
            await link.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ConnectionClosed, or anything the library lets through
            log.info("%s: OCPP connection ended: %r", self.charge_point_id, exc)
        self._online.clear()
        if self.auto_reconnect and not self._stopped:
            self._reconnecting = asyncio.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        """Reconnect after the back-off, again and again until it works or the station stops."""
        attempt = 0
        while not self._stopped:
            await asyncio.sleep(self.reconnect_backoff.delay_s(attempt))
            if self._stopped:
                return
            try:
                await self.reconnect()
                return
            except Exception as exc:
                attempt += 1
                log.info("%s: reconnect attempt %d failed: %r", self.charge_point_id, attempt, exc)

    async def _call(self, payload: Any, *, optional: bool = False) -> Any:
        """Send an adapter's request; its result, or None on CallError, timeout or a dead connection (logged,
        never raised; at info level for an ``optional`` request, which a central system may well not
        support). With ``auto_reconnect`` a call made while the connection is down waits for it (up to the
        call timeout). A call whose connection ends before its answer fails then, not at its timeout: the
        ocpp library sends one call at a time, so waiting would hold every later message back."""
        if self.auto_reconnect and not self._online.is_set() and not self._stopped:
            try:
                await asyncio.wait_for(self._online.wait(), self.response_timeout_s)
            except TimeoutError:
                return None
        try:
            if self._link is None or self._loop_task is None:
                raise ConnectionError("not connected")
            return await call_until_ended(self._link, self._loop_task, payload)
        except Exception as exc:
            level = logging.INFO if optional else logging.WARNING
            log.log(level, "%s: %s failed: %r", self.charge_point_id, type(payload).__name__, exc)
            return None

    async def _status(self, c: Connector, state: ConnectorState) -> None:
        c.status = state
        await self._send_status(c, state)

    # ------------------------------------------------------------------------------------------ sessions

    async def plug_in(self, ev: EV, connector_id: int = 1) -> TransactionId | None:
        """Authorize and start a transaction for ``ev``, spawn its charging task; return the transaction id
        (None when the id token or the transaction start was refused or failed). ``RuntimeError`` when the
        connector is occupied or the station is not running."""
        c = self._connectors[connector_id]
        if c.session is not None:
            raise RuntimeError(f"{self.charge_point_id}/{connector_id} is occupied")
        if self._link is None or self._stopped:
            raise RuntimeError(f"{self.charge_point_id} is not running")
        c.done.clear()
        await self._status(c, PREPARING)
        if not await self._authorize(ev):
            await self._status(c, AVAILABLE)
            c.done.set()
            return None
        now = self.clock.now()
        c.advance(now)
        s = Session(
            ev=ev,
            started_at=now,
            meter_start_wh=int(round(c.register_wh)),
            need_wh=min(ev.energy_need_kwh, ev.room_kwh) * 1000.0,  # a full battery takes no more
            next_meter=now + timedelta(seconds=self.meter_interval_s),
            lag_s=self._draw_lag(),
        )
        c.session, c.last_t, c.limits_at, c.stop_reason = s, now, now, None
        c.pilot_a = c.pilot_phases = c.followed_a = None
        c.pilot_seq = c.followed_seq = 0
        s.transaction_id = self._new_transaction_id()
        res = await self._start_transaction(c, s)
        if res is None:
            c.session = None
            self._control.profiles.drop_tx(connector_id)
            await self._status(c, AVAILABLE)
            c.done.set()
            return None
        s.transaction_id = res[0]
        # a TxProfile that came while the transaction start was in flight must name this transaction
        self._control.profiles.drop_tx(connector_id, keep_transaction_id=s.transaction_id)
        if not res[1]:
            s.end_at, s.end_reason = now, DEAUTHORIZED
        else:
            if self._stopped:
                c.stop_reason = OTHER
            self._control.recompute(now)
            await self._status(c, CHARGING if c.power_kw > 0 else SUSPENDED_EVSE)
        c.task = asyncio.create_task(self._run_session(c, s), name=f"session-{self.charge_point_id}-{connector_id}")
        return s.transaction_id

    def _draw_lag(self) -> float:
        """The response lag of the next session's EV, clock seconds (:data:`~pipeline.sim.ev.ResponseLag`)."""
        low, high = self._lag_range
        return low if low == high else self._rng.uniform(low, high)

    async def wait_done(self, connector_id: int = 1) -> None:
        """Wait until the connector's session (if any) has ended and its end was reported."""
        await self._connectors[connector_id].done.wait()

    async def _run_session(self, c: Connector, s: Session) -> None:
        try:
            if s.end_at is None:
                await self._transaction_started(c, s)
            while True:
                now = self.clock.now()
                since = c.limits_at or s.started_at
                boundary = self._control.profiles.next_change(c.connector_id, since, s.started_at)
                if boundary is not None and boundary <= now and s.end_at is None:
                    c.limits_at = boundary  # a schedule period began or ended: apply it from that instant
                    self._control.limits_changed(boundary)
                    continue
                c.advance(now)
                if s.end_at is None and c.stop_reason is not None:
                    s.end_at, s.end_reason = c.last_t, c.stop_reason
                if s.end_at is not None:
                    break
                want: ConnectorState = CHARGING if c.power_kw > 0 else SUSPENDED_EVSE
                if c.status != want:
                    await self._status(c, want)
                    continue
                if self.meter_interval_s > 0 and now >= s.next_meter:
                    await self._send_meter(c, s, now, PERIODIC)
                    while s.next_meter <= now:
                        s.next_meter += timedelta(seconds=self.meter_interval_s)
                    continue
                wake = [
                    s.ev.departure_at,
                    c.finish_time(),
                    boundary,
                    s.next_meter if self.meter_interval_s > 0 else None,
                ]
                c.wake.clear()
                await self._sleep_or_wake(c, min(w for w in wake if w is not None))
        except asyncio.CancelledError:
            s.end_at, s.end_reason = s.end_at or c.last_t, s.end_reason or OTHER
            self._finish_locally(c, s)
            c.session, c.stop_reason = None, None
            c.done.set()
            raise
        except Exception:
            log.exception("%s/%d: session task failed", self.charge_point_id, c.connector_id)
            s.end_at, s.end_reason = s.end_at or c.last_t, s.end_reason or OTHER
        await self._end_session(c, s)

    async def _sleep_or_wake(self, c: Connector, until: datetime) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep_until(until))
        waker = asyncio.ensure_future(c.wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    def _finish_locally(self, c: Connector, s: Session) -> SessionSummary:
        """Book-keeping at the session end: power to 0 (on_power), summary, TxProfiles dropped, others
        rebalanced under the station maximum."""
        ended_at = s.end_at or s.started_at
        c.power_kw = c.current_a = 0.0
        c.pilot_a = c.pilot_phases = c.followed_a = None
        self._control.emit(c, 0.0, ended_at)
        summary = s.summary(c.connector_id)
        self.sessions.append(summary)
        s.booked = True
        self._control.profiles.drop_tx(c.connector_id)
        self._control.recompute(ended_at)
        return summary

    async def _end_session(self, c: Connector, s: Session) -> None:
        """Finish the session, report its end and the connector Available; release wait_done()."""
        summary = self._finish_locally(c, s)
        try:
            if s.transaction_id is not None:
                await self._stop_transaction(c, s, summary)
            await self._status(c, AVAILABLE)
        finally:
            c.session, c.stop_reason = None, None
            c.done.set()

    def _reading(self, c: Connector, s: Session) -> MeterReading:
        """The connector's meter now: its draw, register, the EV's SoC and the current on each of the
        charger's phases (A: the draw's current on the phases the EV uses, L1 first, 0 on the others)."""
        currents = c.phase_currents_a(self.phases)
        return MeterReading(power_kw=c.power_kw, register_wh=c.register_wh, soc_pct=s.soc_pct, currents_a=currents)

    async def _send_meter(self, c: Connector, s: Session, at: datetime, context: MeterContext) -> None:
        self.meter_values_sent += 1
        await self._send_meter_values(c, s, at, context, self._reading(c, s))

    # ------------------------------------------- central-system requests, as the adapters hand them in

    def receive_profile(self, profile: Profile | None) -> bool:
        """Install a profile the central system set (1.6 SetChargingProfile, 2.0.1 K01) and apply it now;
        ``None`` stands for one the adapter could not translate. Counts it in ``profiles_received`` (and
        ``profiles_rejected``); False when rejected (the rules of :meth:`PowerControl.set_profile`)."""
        self.profiles_received += 1
        accepted = profile is not None and self._control.set_profile(profile, self.clock.now())
        if not accepted:
            self.profiles_rejected += 1
        return accepted

    def clear_profiles(
        self, profile_id: int | None, connector_id: int | None, purpose: Purpose | None, stack_level: int | None
    ) -> int:
        """ClearChargingProfile (1.6 section 5.5, 2.0.1 K10): how many profiles were removed (0 means the
        answer Unknown)."""
        return self._control.clear(profile_id, connector_id, purpose, stack_level, self.clock.now())

    def request_stop(self, transaction_id: TransactionId) -> bool:
        """The central system asks to end ``transaction_id`` (1.6 RemoteStopTransaction, 2.0.1 F03): the
        session ends with reason Remote; False when no running session has that id."""
        for c in self._connectors.values():
            if c.session is not None and c.session.transaction_id == transaction_id:
                c.stop_reason = REMOTE
                c.wake.set()
                return True
        return False

    async def report_status(self, connector_id: int | None = None) -> None:
        """Report every connector's state again (``connector_id`` None or 0), or one connector's."""
        for cid, c in self._connectors.items():
            if connector_id in (None, 0, cid):
                await self._status(c, c.status)

    async def report_meter(self, connector_id: int | None = None) -> None:
        """Send a meter reading now (context Trigger) for every charging connector, or one."""
        for cid, c in self._connectors.items():
            if connector_id not in (None, 0, cid) or not c.charging:
                continue
            now = self.clock.now()
            c.advance(now)
            s = c.active
            if s is not None:
                await self._send_meter(c, s, now, TRIGGER)

    # --------------------------------------------------------------------------------------- inspection

    def topology_node(self, site_id: str, parent_id: str | None = None, **fields: Any) -> TopologyNode:
        """The charger's ``site.topology`` record (rating, ``limit_a`` per phase, phases, ``phase_rotation``,
        voltage, connectors; ``fields``: priority, weight, ...). ``pydantic.ValidationError`` when invalid."""
        return TopologyNode(
            node_id=self.charge_point_id,
            site_id=site_id,
            parent_id=parent_id or site_id,
            kind="charger",
            limit_kw=self.rated_power_kw,
            limit_a=round(self.rated_power_kw * 1000.0 / (self.phases * self.voltage_v), 3),
            phases=self.phases,
            phase_rotation=self.phase_rotation,
            voltage_v=self.voltage_v,
            connectors=len(self._connectors),
            **fields,
        )

    def ev_phases(self, connector_id: int = 1) -> int | None:
        """The phases the connector's EV draws on now (None when no session runs)."""
        c = self._connectors[connector_id]
        return c.phases_in_use if c.charging and c.followed_a is not None else None

    def current_a(self, connector_id: int = 1) -> float:
        """The connector's present draw per phase on the EV's phases, A."""
        c = self._connectors[connector_id]
        return c.current_a if c.charging else 0.0

    def grid_currents_a(self) -> tuple[float, float, float]:
        """The station's draw on the grid's L1, L2, L3 (A), its connectors' phases mapped by ``phase_rotation``."""
        per = [grid_currents_a(self.phase_rotation, c.phase_currents_a(self.phases)) for c in self._connectors.values()]
        return sum(x[0] for x in per), sum(x[1] for x in per), sum(x[2] for x in per)

    def held_limit(self, connector_id: int = 1) -> float | None:
        """The TxProfile limit the connector holds now, as received, in :meth:`held_limit_unit`."""
        held = self._held(connector_id)
        return None if held is None else held[1]

    def held_limit_unit(self, connector_id: int = 1) -> RateUnit | None:
        """The unit of :meth:`held_limit`: "A" (per phase) or "W"."""
        held = self._held(connector_id)
        return None if held is None else held[0]

    def _held(self, connector_id: int) -> tuple[RateUnit, float] | None:
        s = self._connectors[connector_id].session
        return self._control.profiles.held_tx(connector_id, self.clock.now(), s.started_at if s else None)

    def effective_limit_kw(self, connector_id: int = 1) -> float | None:
        """min(station maximum, TxProfile or TxDefaultProfile) now, kW; None when unlimited."""
        return self._control.effective_limit_kw(connector_id, self.clock.now())

    def session_active(self, connector_id: int = 1) -> bool:
        """A transaction runs on the connector and its end is not known yet."""
        return self._connectors[connector_id].charging

    def power_kw(self, connector_id: int = 1) -> float:
        """The connector's present draw, kW."""
        c = self._connectors[connector_id]
        return c.power_kw if c.charging else 0.0

    def energy_kwh(self, connector_id: int = 1) -> float:
        """Energy delivered in the connector's running session so far, kWh (0 when idle)."""
        c = self._connectors[connector_id]
        c.advance(self.clock.now())
        s = c.session
        return s.energy_wh / 1000.0 if s is not None and not s.booked else 0.0

    @property
    def delivered_kwh(self) -> float:
        """Energy delivered across all sessions, finished and running, kWh."""
        return sum(s.energy_kwh for s in self.sessions) + sum(self.energy_kwh(i) for i in self._connectors)

    def wake_due(self) -> bool:
        """Wake every running session whose charging limit changes at or before the clock's now (a schedule
        period's start, a profile's end) without the change applied yet; True if any was. A driver that holds
        the clock asks this before it reads the station's draw or moves the clock on: a session task asleep
        on a running clock notices a held clock's instant only when its real-time nap ends."""
        now = self.clock.now()
        due = False
        for c in self._connectors.values():
            s = c.session
            if s is None or s.end_at is not None or s.transaction_id is None:
                continue
            boundary = self._control.profiles.next_change(c.connector_id, c.limits_at or s.started_at, s.started_at)
            if boundary is not None and boundary <= now:
                c.wake.set()
                due = True
        return due

    def status(self, connector_id: int = 1) -> ConnectorState:
        """The connector's state as last reported: Available, Preparing, Charging or SuspendedEVSE."""
        return self._connectors[connector_id].status
