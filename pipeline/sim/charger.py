"""One simulated OCPP 1.6J charge point: a real websocket and real OCPP messages over simulated physics.

It exists so the executor and the SQL views can be exercised end to end without hardware. The charger boots,
starts transactions for plugged EVs, obeys SetChargingProfile (TxProfile, TxDefaultProfile,
ChargePointMaxProfile; A or W) and reports MeterValues. Power is piecewise constant and energy is integrated
exactly over :mod:`pipeline.contracts.clock` time (see :mod:`pipeline.sim.session`). Each session task sleeps
until its next event (meter tick, need met, departure, schedule boundary) or until a new limit wakes it; it
never polls. Message shapes live in :mod:`pipeline.sim.ocpp16`, the profile-to-power control in
:mod:`pipeline.sim.control`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ocpp.v16 import call
from ocpp.v16.enums import ReadingContext
from websockets.asyncio.client import connect

from pipeline.contracts.clock import Clock
from pipeline.sim.control import PowerControl
from pipeline.sim.ev import EV
from pipeline.sim.ocpp16 import ACCEPTED, CentralSystemLink, configuration, id_tag_status, iso, meter_values
from pipeline.sim.session import DEAUTHORIZED, OTHER, REMOTE, Connector, Session, SessionSummary

log = logging.getLogger(__name__)

PowerCallback = Callable[[str, int, float, datetime], None]
"""on_power(charge_point_id, connector_id, power_kw, at): a connector's draw changed at clock time ``at``."""

AVAILABLE, PREPARING, CHARGING, SUSPENDED_EVSE = "Available", "Preparing", "Charging", "SuspendedEVSE"


@dataclass(frozen=True)
class ReconnectBackoff:
    """How long a charger waits before each attempt to reconnect, in real seconds.

    The OCPP-J reconnection rule of OCPP 2.0.1 Part 4, section 5.3 (``OCPPCommCtrlr.RetryBackOff*``): the
    first attempt waits ``wait_minimum_s`` plus a random share of ``random_range_s``; each further attempt
    doubles the fixed part, ``repeat_times`` times at most, and keeps it from then on. The random part keeps
    a fleet from reconnecting all at once after a central system restart. OCPP-J 1.6 leaves the schedule to
    the charger; the same one is used for both.
    """

    wait_minimum_s: float = 0.05
    random_range_s: float = 0.05
    repeat_times: int = 5

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before attempt ``attempt`` (0 for the first after the connection was lost)."""
        doubled = self.wait_minimum_s * 2 ** min(max(attempt, 0), self.repeat_times)
        return doubled + (rng or random).uniform(0.0, self.random_range_s)


FLEET_BACKOFF = ReconnectBackoff(wait_minimum_s=2.0, random_range_s=3.0, repeat_times=3)
"""The back-off of ``pipeline simulate`` chargers: 2-5 s for the first attempt, at most 16-19 s later."""


class SimulatedChargePoint:
    """One OCPP 1.6J charge point with ``connectors`` connectors, driven by ``clock``.

    ``auto_reconnect`` makes it reconnect (without rebooting) when the connection drops, as real chargers
    do, waiting ``reconnect_backoff`` between attempts (:class:`ReconnectBackoff`); calls made meanwhile
    wait for the link. With it, :meth:`start` also keeps trying while the central system cannot be reached.
    A reconnect is not a reboot: no BootNotification (OCPP 1.6 section 4.2 and 2.0.1 B01 send it after a
    boot), but a StatusNotification per connector, and running transactions go on with their meter values
    (2.0.1 B04). :meth:`reconnect` does it on demand.

    Units: power in kW, energy in kWh (Wh on the wire), voltage in V, ``meter_interval_s`` and
    ``ev_response_s`` in clock seconds. The charger connects to f"{url}/{charge_point_id}". ``password``
    turns on HTTP Basic auth with the charge point id as username; ``ssl`` goes to the websocket client for
    wss:// URLs; ``response_timeout_s`` is the real-time OCPP call timeout.
    """

    subprotocol = "ocpp1.6"

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
        ev_response_s: float = 0.0,
        vendor: str = "EVSim",
        model: str = "SimCP",
        password: str | None = None,
        ssl: Any = None,
        response_timeout_s: float = 30.0,
        auto_reconnect: bool = False,
        reconnect_backoff: ReconnectBackoff = ReconnectBackoff(),
    ) -> None:
        self.charge_point_id = charge_point_id
        self.url = url.rstrip("/")
        self.clock = clock
        self.rated_power_kw = rated_power_kw
        self.phases = phases
        self.voltage_v = voltage_v
        self.meter_interval_s = meter_interval_s
        self.on_power = on_power
        self.ev_response_s = ev_response_s
        self.vendor, self.model = vendor, model
        self.password, self.ssl = password, ssl
        self.response_timeout_s = response_timeout_s
        self._connectors = {i: Connector(i, phases) for i in range(1, connectors + 1)}
        for c in self._connectors.values():
            c.done.set()
        self._control = PowerControl(self)
        self._ws: Any = None
        self._link: CentralSystemLink | None = None
        self._loop_task: asyncio.Task | None = None
        self._stopped = False
        self.auto_reconnect = auto_reconnect
        self.reconnect_backoff = reconnect_backoff
        self.reconnects = 0
        """Connections re-opened after one was lost (or :meth:`reconnect` was called)."""
        self._online = asyncio.Event()
        self._reconnecting: asyncio.Task | None = None
        self.sessions: list[SessionSummary] = []
        """Finished sessions, in the order they ended."""
        self.profiles_received = 0
        """SetChargingProfile requests received (accepted or not)."""
        self.profiles_rejected = 0
        self.meter_values_sent = 0
        self.heartbeat_interval_s: int | None = None

    # ----------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect, start the OCPP message loop, BootNotification, StatusNotification Available per connector.

        With ``auto_reconnect`` a connection that fails is tried again after the back-off until it works or
        :meth:`stop` is called; without it the error (``OSError``, a websocket error) is raised.
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
        self._ws = await connect(f"{self.url}/{self.charge_point_id}", **kwargs)
        if self._ws.subprotocol != self.subprotocol:
            await self._ws.close()
            raise ConnectionError(f"{self.charge_point_id}: the server did not accept subprotocol {self.subprotocol}")
        self._link = self._make_link(self._ws)
        self._online.set()
        self._loop_task = asyncio.create_task(self._message_loop(), name=f"ocpp-{self.charge_point_id}")

    async def reconnect(self) -> None:
        """Drop the connection (if any) and connect again, as after a network outage: no BootNotification
        (the charger did not reboot), a StatusNotification per connector, profiles and sessions kept."""
        self._online.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._loop_task is not None and self._loop_task is not asyncio.current_task():
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._connect()
        self.reconnects += 1
        for c in self._connectors.values():
            await self._status(c, c.status)

    # Protocol hooks: OCPP 1.6J here; pipeline.sim.v201 overrides them for 2.0.1.

    def _make_link(self, ws: Any) -> Any:
        return CentralSystemLink(self, ws)

    async def _boot(self) -> tuple[bool, int | None]:
        res = await self._call(call.BootNotification(charge_point_model=self.model, charge_point_vendor=self.vendor))
        return (res is not None and res.status == ACCEPTED), (res.interval if res is not None else None)

    async def _authorize(self, id_tag: str) -> bool:
        auth = await self._call(call.Authorize(id_tag=id_tag))
        return auth is not None and id_tag_status(auth.id_tag_info) == ACCEPTED

    async def _start_transaction(self, c: Connector, s: Session, id_tag: str) -> tuple[Any, bool] | None:
        """Report the start; ``(transaction id, idTag accepted)``, or None when it failed."""
        res = await self._call(
            call.StartTransaction(
                connector_id=c.connector_id, id_tag=id_tag, meter_start=s.meter_start_wh, timestamp=iso(s.started_at)
            )
        )
        return None if res is None else (res.transaction_id, id_tag_status(res.id_tag_info) == ACCEPTED)

    async def _stop_transaction(self, c: Connector, s: Session, summary: SessionSummary) -> None:
        await self._call(
            call.StopTransaction(
                meter_stop=int(round(c.register_wh)),
                timestamp=iso(summary.ended_at),
                transaction_id=s.transaction_id,
                reason=summary.reason,
                id_tag=s.ev.ev_id[:20],
            )
        )

    async def _meter(self, c: Connector, at: datetime, context: str, **values: float) -> None:
        await self._call(meter_values(c.connector_id, c.session.transaction_id, at, context, **values))

    async def stop(self) -> None:
        """End any session (StopTransaction reason Other) and close the socket. Idempotent."""
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

    async def _message_loop(self) -> None:
        try:
            await self._link.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ConnectionClosed, or anything the library lets through
            log.info("%s: OCPP connection ended: %r", self.charge_point_id, exc)
        self._online.clear()
        if self.auto_reconnect and not self._stopped:
            self._reconnecting = asyncio.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        """Reconnect after the back-off, again and again until it works or the charger stops."""
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

    async def _call(self, payload: Any) -> Any:
        """An OCPP call; None on CallError, timeout or a dead connection (logged, never raised). With
        ``auto_reconnect`` a call made while the connection is down waits for it (up to the call timeout)."""
        if self.auto_reconnect and not self._online.is_set() and not self._stopped:
            try:
                await asyncio.wait_for(self._online.wait(), self.response_timeout_s)
            except TimeoutError:
                return None
        try:
            return await self._link.call(payload)
        except Exception as exc:
            log.warning("%s: %s failed: %r", self.charge_point_id, type(payload).__name__, exc)
            return None

    async def _status(self, c: Connector, status: str) -> None:
        c.status = status
        await self._call(
            call.StatusNotification(
                connector_id=c.connector_id, error_code="NoError", status=status, timestamp=iso(self.clock.now())
            )
        )

    # ------------------------------------------------------------------------------------------ sessions

    async def plug_in(self, ev: EV, connector_id: int = 1) -> int | None:
        """Authorize and StartTransaction for ``ev``, spawn its charging task; return the transaction id
        (None when the idTag or StartTransaction was refused or failed)."""
        c = self._connectors[connector_id]
        if c.session is not None:
            raise RuntimeError(f"{self.charge_point_id}/{connector_id} is occupied")
        if self._link is None or self._stopped:
            raise RuntimeError(f"{self.charge_point_id} is not running")
        c.done.clear()
        id_tag = ev.ev_id[:20]
        await self._status(c, PREPARING)
        if not await self._authorize(id_tag):
            await self._status(c, AVAILABLE)
            c.done.set()
            return None
        now = self.clock.now()
        c.advance(now)
        s = Session(
            ev=ev,
            started_at=now,
            meter_start_wh=int(round(c.register_wh)),
            need_wh=ev.energy_need_kwh * 1000.0,
            next_meter=now + timedelta(seconds=self.meter_interval_s),
        )
        c.session, c.last_t, c.limits_at, c.stop_reason = s, now, now, None
        res = await self._start_transaction(c, s, id_tag)
        if res is None:
            c.session = None
            self._control.profiles.drop_tx(connector_id)
            await self._status(c, AVAILABLE)
            c.done.set()
            return None
        s.transaction_id = res[0]
        # a TxProfile that came while StartTransaction was in flight must name this transaction
        self._control.profiles.drop_tx(connector_id, keep_transaction_id=s.transaction_id)
        if not res[1]:
            s.end_at, s.end_reason = now, DEAUTHORIZED
        else:
            if self._stopped:
                c.stop_reason = OTHER
            self._control.recompute(now)
            await self._status(c, CHARGING if c.power_kw > 0 else SUSPENDED_EVSE)
        c.task = asyncio.create_task(self._run_session(c), name=f"session-{self.charge_point_id}-{connector_id}")
        return s.transaction_id

    async def wait_done(self, connector_id: int = 1) -> None:
        """Wait until the connector's session (if any) has ended and StopTransaction was answered."""
        await self._connectors[connector_id].done.wait()

    async def _run_session(self, c: Connector) -> None:
        s = c.session
        try:
            while True:
                now = self.clock.now()
                boundary = self._control.profiles.next_change(c.connector_id, c.limits_at, s.started_at)
                if boundary is not None and boundary <= now and s.end_at is None:
                    c.limits_at = boundary  # a schedule period began or ended: apply it from that instant
                    self._control.limits_changed(boundary)
                    continue
                c.advance(now)
                if s.end_at is None and c.stop_reason is not None:
                    s.end_at, s.end_reason = c.last_t, c.stop_reason
                if s.end_at is not None:
                    break
                want = CHARGING if c.power_kw > 0 else SUSPENDED_EVSE
                if c.status != want:
                    await self._status(c, want)
                    continue
                if self.meter_interval_s > 0 and now >= s.next_meter:
                    await self._send_meter(c, now, ReadingContext.sample_periodic)
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
                await self._sleep_or_wake(c, (min(w for w in wake if w is not None) - now).total_seconds())
        except asyncio.CancelledError:
            s.end_at, s.end_reason = s.end_at or c.last_t, s.end_reason or OTHER
            self._finish_locally(c)
            c.session, c.stop_reason = None, None
            c.done.set()
            raise
        except Exception:
            log.exception("%s/%d: session task failed", self.charge_point_id, c.connector_id)
            s.end_at, s.end_reason = s.end_at or c.last_t, s.end_reason or OTHER
        await self._end_session(c)

    async def _sleep_or_wake(self, c: Connector, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(max(0.0, seconds)))
        waker = asyncio.ensure_future(c.wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    def _finish_locally(self, c: Connector) -> SessionSummary:
        """Book-keeping at the session end: power to 0 (on_power), summary, TxProfiles dropped, others
        rebalanced under the ChargePointMaxProfile."""
        s = c.session
        c.power_kw = 0.0
        self._control.emit(c, 0.0, s.end_at)
        summary = s.summary(c.connector_id)
        self.sessions.append(summary)
        s.booked = True
        self._control.profiles.drop_tx(c.connector_id)
        self._control.recompute(s.end_at)
        return summary

    async def _end_session(self, c: Connector) -> None:
        """Finish the session, then StopTransaction and StatusNotification Available; release wait_done()."""
        s = c.session
        summary = self._finish_locally(c)
        try:
            if s.transaction_id is not None:
                await self._stop_transaction(c, s, summary)
            await self._status(c, AVAILABLE)
        finally:
            c.session, c.stop_reason = None, None
            c.done.set()

    async def _send_meter(self, c: Connector, at: datetime, context: str) -> None:
        s = c.session
        self.meter_values_sent += 1
        await self._meter(
            c,
            at,
            context,
            power_kw=c.power_kw,
            register_wh=c.register_wh,
            soc_pct=s.ev.soc_pct(s.energy_wh / 1000.0),
            current_a=c.power_kw * 1000.0 / (c.phases_in_use * self.voltage_v),
        )

    # --------------------------------------------------------------- CSMS-initiated calls (from ocpp16)

    def handle_set_charging_profile(self, connector_id: int, raw: dict) -> str:
        """SetChargingProfile: Accepted, or Rejected (bad connector or purpose, TxProfile without a matching
        transaction)."""
        self.profiles_received += 1
        now = self.clock.now()
        status = self._control.set_profile(connector_id, raw, now)
        if status != ACCEPTED:
            self.profiles_rejected += 1
        return status

    def handle_clear_charging_profile(
        self, profile_id: int | None, connector_id: int | None, purpose: str | None, stack_level: int | None
    ) -> int:
        """ClearChargingProfile: how many profiles were removed (0 means Unknown)."""
        return self._control.clear(profile_id, connector_id, purpose, stack_level, self.clock.now())

    def handle_remote_stop(self, transaction_id: int) -> bool:
        """RemoteStopTransaction: end that transaction with reason Remote."""
        for c in self._connectors.values():
            if c.session is not None and c.session.transaction_id == transaction_id:
                c.stop_reason = REMOTE
                c.wake.set()
                return True
        return False

    def configuration(self) -> dict[str, tuple[str, bool]]:
        """GetConfiguration keys: name -> (value, readonly)."""
        return configuration(self.meter_interval_s, len(self._connectors))

    async def handle_trigger(self, message: str, connector_id: int | None) -> None:
        """Send what a TriggerMessage asked for (after it was answered)."""
        if message == "Heartbeat":
            await self._call(call.Heartbeat())
        elif message == "BootNotification":
            await self._boot()
        for cid, c in self._connectors.items():
            if connector_id not in (None, 0, cid):
                continue
            if message == "StatusNotification":
                await self._status(c, c.status)
            elif message == "MeterValues" and c.charging:
                now = self.clock.now()
                c.advance(now)
                if c.charging:
                    await self._send_meter(c, now, ReadingContext.trigger)

    # --------------------------------------------------------------------------------------- inspection

    def held_limit(self, connector_id: int = 1) -> float | None:
        """The TxProfile limit the connector holds now, as received, in :meth:`held_limit_unit`."""
        held = self._held(connector_id)
        return None if held is None else held[1]

    def held_limit_unit(self, connector_id: int = 1) -> str | None:
        """The unit of :meth:`held_limit`: "A" (per phase) or "W"."""
        held = self._held(connector_id)
        return None if held is None else held[0]

    def _held(self, connector_id: int) -> tuple[str, float] | None:
        s = self._connectors[connector_id].session
        return self._control.profiles.held_tx(connector_id, self.clock.now(), s.started_at if s else None)

    def effective_limit_kw(self, connector_id: int = 1) -> float | None:
        """min(ChargePointMaxProfile, TxProfile or TxDefaultProfile) now, kW; None when unlimited."""
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

    def status(self, connector_id: int = 1) -> str:
        """The last OCPP status reported for the connector."""
        return self._connectors[connector_id].status
