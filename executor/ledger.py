"""In-force and in-flight accounting: what each connector may be drawing, summed per node and per site.

The executor never sends an increase that could take a breaker over its limit while commands are in
transit and EVs are slow to follow (docs/architecture.md, "Executor", safe ordering). For every connector with an
open transaction the ledger keeps a *bound*: the most it may be drawing now, in kW,

    bound = max(limit in force, limit in flight, limits it was cut from less than ``lag_s`` ago)

- *in force* is the last TxProfile limit the charger answered ``Accepted`` for this transaction; before
  the first one it is the TxDefaultProfile floor if that was accepted, else the station maximum if that was
  accepted, else the charger's rating. A call that timed out or whose connection dropped may have been
  applied, so its limit counts as in force too when it is higher.
- *in flight* is the limit of a call sent and not yet answered.
- A cut (a lower limit in force) is only trusted ``lag_s`` clock seconds after it was acknowledged: EVs
  take that long to follow (about 10 s). That is break before make: an increase that needs the headroom a
  decrease frees waits until the decrease is acknowledged and the lag has passed.
- A TxProfile may carry a later, lower schedule period (a known decrease sent ahead: docs/architecture.md,
  "Schedule periods"). Its limit counts until that period starts, and the lower one after it, as a cut the
  charger made on its own at that instant: trusted ``lag_s`` after it. Counting the current limit up to
  then is conservative, as the charger cuts at the instant itself.

:meth:`Ledger.check_increase` lets a connector go up only if, on its node and on its site, the sum of every
other connector's bound plus its new limit stays within the newest ``node_limit_kw`` / ``site_limit_kw``.
A node or site whose newest limit is unknown (``None``) has no known headroom: increases there wait.
A transaction that ended draws nothing. Unmanaged chargers are not counted (their load is the building's).

**Per phase.** kW sums do not see that three 1-phase EVs on the same grid phase load it three times as
much as a balanced 3-phase EV. Every breaker on a charger's path whose topology node has ``limit_a`` (A per
phase) is also checked per grid phase R, S, T: the same bounds, in A on each phase the EV draws on, summed
per grid phase, plus the new limit, must stay within ``limit_a``. A connector's current per phase is its
limit in A when the limit was sent in A (whatever numberPhases: the charger holds each phase to it), else
its kW over (EV phases x voltage), at most the charger's rating per phase; the EV's phases are those
learned for the session (``ev_phases``), and while unknown the worst case: W over one phase, on every
phase of the charger. Charger phases map to grid phases by the charger's ``phase_rotation`` (``RST``, the
default, is straight through; a 1-phase EV draws on the charger's L1, a 2-phase one on L1 and L2). The
building's load per phase is not known here, so ``limit_a`` itself is the bound; the engine's setpoints
keep the steady state within the per-phase headroom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from executor.topology import ChargerInfo, Topology

__all__ = ["Blocked", "Ledger", "NextPeriod", "grid_phases"]

EPS_KW = 1e-6
EPS_A = 1e-6
_GRID = {"R": "L1", "S": "L2", "T": "L3"}


def grid_phases(rotation: str | None, charger_phases: int) -> list[str]:
    """The grid phases (``"L1"`` .. ``"L3"``) that a charger's first ``charger_phases`` phases are wired to,
    by its ``phase_rotation`` (``None``: ``RST``, straight through); e.g. ``grid_phases("SRT", 1) == ["L2"]``."""
    wiring = rotation or "RST"
    return [_GRID[wiring[i]] for i in range(max(1, min(3, charger_phases)))]


@dataclass(frozen=True)
class _Draw:
    """A limit a connector may draw up to: ``kw``, and ``a`` (A per phase) when it was sent in A; ``then`` is
    a later schedule period ``(epoch seconds, limit)`` that replaces it from that instant."""

    kw: float
    a: float | None = None
    then: tuple[float, _Draw] | None = None

    def at(self, t: float) -> _Draw:
        """The limit in force at ``t`` (epoch seconds)."""
        return self.then[1] if self.then is not None and t >= self.then[0] else self


NextPeriod = tuple[datetime, float, float | None]
"""A later schedule period of a TxProfile: ``(starts at, kW, A per phase when sent in A)``."""


def _draw(kw: float, limit_a: float | None, then: NextPeriod | None) -> _Draw:
    later = None if then is None else (then[0].timestamp(), _Draw(then[1], then[2]))
    return _Draw(kw, limit_a, later)


@dataclass
class _Connector:
    cp: str
    transaction_id: str
    tx: _Draw | None = None  # TxProfile limit in force for this transaction
    in_flight: _Draw | None = None
    cooling: list[tuple[float, _Draw]] = field(default_factory=list)  # (until, limit) by timestamp


@dataclass
class _Charger:
    default: _Draw | None = None  # TxDefaultProfile in force (per connector)
    max: _Draw | None = None  # station maximum in force


@dataclass(frozen=True)
class Blocked:
    """Why an increase cannot go yet: the ``level`` (``node`` or ``site``) and id whose sum would exceed
    ``limit_kw`` (or, with ``phase`` set, whose per-phase current ``needed_a`` would exceed ``limit_a`` on that grid
    phase; ``limit_kw`` and ``needed_kw`` are then 0), and ``until`` (epoch seconds) when a cut on it ends its lag, or
    ``None`` when only an acknowledgement (or a new setpoint) can free headroom."""

    level: str
    group: str
    limit_kw: float
    needed_kw: float
    until: float | None
    known: bool = True  # False: no limit is known for the group, so no headroom is (``limit_kw`` is 0)
    phase: str | None = None  # a grid phase (L1..L3): the node's limit_a would be exceeded on it
    limit_a: float | None = None
    needed_a: float | None = None


class Ledger:
    """Bounds per ``(charge_point_id, connector_id)``; membership and limits come from the callables.

    ``node_limit`` and ``site_limit`` map a node or site id to its newest EV headroom (kW) or ``None``;
    ``ev_phases(charge_point_id, connector_id)`` is the phase count the connector's EV draws on, ``None``
    while unknown. Limits may carry ``limit_a`` (A per phase) when they were sent in A.
    """

    def __init__(
        self,
        topology: Topology,
        node_limit: Callable[[str | None], float | None],
        site_limit: Callable[[str | None], float | None],
        lag_s: float,
        ev_phases: Callable[[str, int], int | None] | None = None,
    ) -> None:
        self._topology = topology
        self._ev_phases = ev_phases or (lambda cp, connector_id: None)
        self._node_limit = node_limit
        self._site_limit = site_limit
        self.lag_s = lag_s
        self._connectors: dict[tuple[str, int], _Connector] = {}
        self._of_charger: dict[str, set[int]] = {}  # cp -> connector ids in _connectors (no scan per cp)
        self._chargers: dict[str, _Charger] = {}

    # -- transactions ----------------------------------------------------------------------------------

    def transaction_started(self, cp: str, connector_id: int, transaction_id: str) -> None:
        current = self._connectors.get((cp, connector_id))
        if current is None or current.transaction_id != transaction_id:
            self._connectors[(cp, connector_id)] = _Connector(cp, transaction_id)
            self._of_charger.setdefault(cp, set()).add(connector_id)

    def transaction_ended(self, cp: str, connector_id: int) -> None:
        """The EV stopped drawing (StopTransaction / TransactionEvent Ended): its bound is 0."""
        self._connectors.pop((cp, connector_id), None)
        connectors = self._of_charger.get(cp)
        if connectors is not None:
            connectors.discard(connector_id)
            if not connectors:
                del self._of_charger[cp]

    def recover_in_force(
        self,
        cp: str,
        connector_id: int,
        transaction_id: str,
        kw: float,
        certain: bool,
        answered_at: datetime | None = None,
        limit_a: float | None = None,
    ) -> None:
        """Restore what a previous run knew (its acks, in order): ``certain`` is an Accepted limit, else a
        maybe. A cut acknowledged at ``answered_at`` cools from then, as it would have in that run, so a
        restart inside the EV response lag does not spend headroom the EV has not yet freed."""
        c = self._connectors.get((cp, connector_id))
        if c is None or c.transaction_id != transaction_id:
            return
        before = self._in_force(cp, c)
        new = _Draw(kw, limit_a)
        c.tx = new if certain or c.tx is None else _wider(c.tx, new)
        if answered_at is not None:
            self._cool(c, before, answered_at)

    def rebooted(self, cp: str) -> None:
        """A BootNotification: station-wide profiles may be gone until they are accepted again."""
        self._chargers.pop(cp, None)

    # -- calls -----------------------------------------------------------------------------------------

    def sending(
        self, cp: str, connector_id: int, kw: float, limit_a: float | None = None, then: NextPeriod | None = None
    ) -> None:
        """A TxProfile of ``kw`` (``limit_a`` A per phase when sent in A; ``then`` its later period, if any) is
        on its way to the charger."""
        c = self._connectors.get((cp, connector_id))
        if c is not None:
            c.in_flight = _draw(kw, limit_a, then)

    def answered(
        self,
        cp: str,
        connector_id: int,
        transaction_id: str,
        kw: float,
        status: str,
        now: datetime,
        limit_a: float | None = None,
        then: NextPeriod | None = None,
    ) -> None:
        """The charger answered a TxProfile call; ``status`` as in :class:`executor.ocpp.station.CallOutcome`,
        or ``"Lost"`` when the connection dropped with the call in flight; ``then`` is the call's later
        schedule period, if it had one. A profile that may or may not have been applied counts as the wider
        of the two, its later period dropped (the higher limit holds)."""
        c = self._connectors.get((cp, connector_id))
        if c is None or c.transaction_id != transaction_id:
            return
        c.in_flight = None
        self._promote(c, now)
        before = self._in_force(cp, c)
        if status == "Accepted":
            c.tx = _draw(kw, limit_a, then)
        elif status in ("Timeout", "Lost"):  # it may have been applied
            c.tx = _wider(before, _Draw(kw, limit_a))
        self._cool(c, before, now)
        self._promote(c, now, received=True)

    def tx_cleared(self, cp: str, connector_id: int, now: datetime) -> None:
        """The connector's TxProfile was cleared: it falls back to the TxDefaultProfile (or worse)."""
        c = self._connectors.get((cp, connector_id))
        if c is not None:
            before = self._in_force(cp, c)
            c.tx = None
            self._cool(c, before, now)

    def station_profile(
        self, cp: str, purpose: str, kw: float | None, now: datetime, limit_a: float | None = None
    ) -> None:
        """A station-wide profile was accepted (``kw``; ``limit_a`` A per phase when sent in A) or is no
        longer known to be there (``kw=None``)."""
        befores = {(cp, i): self._in_force(cp, self._connectors[(cp, i)]) for i in self._of_charger.get(cp, ())}
        charger = self._chargers.setdefault(cp, _Charger())
        draw = None if kw is None else _Draw(kw, limit_a)
        if purpose == "TxDefault":
            charger.default = draw
        else:
            charger.max = draw
        for key, before in befores.items():
            self._cool(self._connectors[key], before, now)

    def _promote(self, c: _Connector, now: datetime, received: bool = False) -> None:
        """Once the later period of the TxProfile in force has started, it is the limit in force: a cut the
        charger made on its own at that instant (or, ``received``, when a profile whose period had already
        started reached it at ``now``), trusted ``lag_s`` after it."""
        tx, t = c.tx, now.timestamp()
        if tx is None or tx.then is None or t < tx.then[0]:
            return
        starts, lower = tx.then
        c.tx = lower
        if self.lag_s > 0 and (lower.kw < tx.kw - EPS_KW or (tx.a is not None and (lower.a or 0.0) < tx.a - EPS_A)):
            c.cooling.append(((t if received else starts) + self.lag_s, _Draw(tx.kw, tx.a)))

    def _cool(self, c: _Connector, before: _Draw, now: datetime) -> None:
        after = self._in_force(c.cp, c)
        lower = after.kw < before.kw - EPS_KW or (
            before.a is not None and (after.a is None or after.a < before.a - EPS_A)
        )
        if lower and self.lag_s > 0:
            c.cooling.append((now.timestamp() + self.lag_s, before))

    # -- bounds ----------------------------------------------------------------------------------------

    def _uncovered(self, cp: str) -> _Draw:
        charger = self._chargers.get(cp, _Charger())
        info = self._topology.charger(cp)
        rating = info.rated_power_kw if info is not None else float("inf")
        for profile in (charger.default, charger.max):
            if profile is not None:
                return _Draw(min(profile.kw, rating), profile.a)
        return _Draw(rating)

    def _in_force(self, cp: str, c: _Connector) -> _Draw:
        return c.tx if c.tx is not None else self._uncovered(cp)

    def in_force_kw(self, cp: str, connector_id: int, now: datetime | None = None) -> float:
        """The connector's limit in force (kW) at ``now`` (a later schedule period counts once it started;
        ``None``: as last answered): 0 without an open transaction."""
        c = self._connectors.get((cp, connector_id))
        if c is not None and now is not None:
            self._promote(c, now)
        return 0.0 if c is None else self._in_force(cp, c).kw

    def in_force_a(self, cp: str, connector_id: int, now: datetime | None = None) -> float | None:
        """The connector's limit in force in A per phase when it was sent in A (``None``: sent in W, none
        known, or no open transaction), at ``now`` as :meth:`in_force_kw`. An increase is one in kW or in A
        per phase: a 1-phase TxProfile of 10 A after a 3-phase TxDefaultProfile of 6 A is less power but more
        current on L1."""
        c = self._connectors.get((cp, connector_id))
        if c is not None and now is not None:
            self._promote(c, now)
        return None if c is None else self._in_force(cp, c).a

    def ev_limit_kw(self, cp: str, connector_id: int) -> float | None:
        """The limit in force as the connector's EV can draw it (kW; ``None`` without an open transaction): with
        its phases known, the current per phase the limit allows (at most the charger's rating per phase) x those
        phases x voltage, so a 1-phase EV under 16 A is held to 3.68 kW, not 11; else :meth:`in_force_kw`."""
        c = self._connectors.get((cp, connector_id))
        if c is None:
            return None
        draw = self._in_force(cp, c)
        info, phases = self._topology.charger(cp), self._ev_phases(cp, connector_id)
        if info is None or phases is None:
            return draw.kw
        phases = min(phases, info.phases)
        return min(draw.kw, self._amps(cp, connector_id, info, draw) * phases * info.voltage_v / 1000.0)

    def _bounds(self, cp: str, c: _Connector, now: datetime) -> list[_Draw]:
        t = now.timestamp()
        self._promote(c, now)
        c.cooling = [(until, d) for until, d in c.cooling if until > t]
        return [self._in_force(cp, c), *([c.in_flight.at(t)] if c.in_flight else []), *(d for _, d in c.cooling)]

    def bound_kw(self, cp: str, connector_id: int, now: datetime) -> float:
        """The most the connector may be drawing now (kW); see the module docstring."""
        c = self._connectors.get((cp, connector_id))
        if c is None:
            return 0.0
        return max(d.kw for d in self._bounds(cp, c, now))

    def _amps(self, cp: str, connector_id: int, info: ChargerInfo, draw: _Draw) -> float:
        """A per phase that ``draw`` lets the connector's EV take (see "Per phase" in the module docstring)."""
        rating_a = info.rated_power_kw * 1000.0 / (info.phases * info.voltage_v)
        if draw.a is not None:
            return min(draw.a, rating_a)
        phases = self._ev_phases(cp, connector_id) or 1
        return min(draw.kw * 1000.0 / (phases * info.voltage_v), rating_a)

    def _phases_of(self, cp: str, connector_id: int, info: ChargerInfo) -> list[str]:
        ev = self._ev_phases(cp, connector_id)
        return grid_phases(info.phase_rotation, min(ev, info.phases) if ev else info.phases)

    def phase_bound_a(self, cp: str, connector_id: int, now: datetime) -> dict[str, float]:
        """The most the connector may be drawing now on each grid phase (``{"L1": A, ...}``; empty without
        an open transaction or a topology entry)."""
        c = self._connectors.get((cp, connector_id))
        info = self._topology.charger(cp)
        if c is None or info is None:
            return {}
        amps = max(self._amps(cp, connector_id, info, d) for d in self._bounds(cp, c, now))
        return {phase: amps for phase in self._phases_of(cp, connector_id, info)}

    def _groups(self, cp: str) -> tuple[str | None, str | None]:
        info = self._topology.charger(cp)
        if info is None or not info.managed:
            return None, None
        return info.node_id, info.site_id

    def check_increase(
        self, cp: str, connector_id: int, new_kw: float, now: datetime, new_a: float | None = None
    ) -> Blocked | None:
        """``None`` if raising the connector to ``new_kw`` (``new_a`` A per phase when sent in A) keeps its
        node and site within their limits, and each grid phase of every breaker above it with a ``limit_a``
        within that (counting every other connector's bound), else why not.

        Own cover: when the connector may already be drawing ``new_kw`` or more because of a cut of its own
        still inside the EV response lag (a transaction that started before its fail-safe profiles were
        acknowledged was bounded by the rating until then), raising it changes no bound before that lag
        ends, so the others are counted as they will be then (their bounds only fall while nothing is
        sent, and what is sent later is checked against this connector's new limit). The sum of bounds
        thus never exceeds a limit because of an increase, at any instant.
        """
        node, site = self._groups(cp)
        at = self._covered_until(cp, connector_id, new_kw, now)
        # Only the site's chargers can share its node or the site (topology's index, not a scan of every
        # connector: this runs for every increase, and a cold start of 1,000 chargers makes 1,000 of them).
        on_site = [
            (other, i)
            for other in (self._topology.site_chargers(site) if site is not None else ())
            for i in self._of_charger.get(other, ())
            if (other, i) != (cp, connector_id)
        ]
        for level, group, limit in (("node", node, self._node_limit(node)), ("site", site, self._site_limit(site))):
            if group is None:
                continue
            members = [k for k in on_site if self._in_group(k[0], level, group)]
            total = sum(self.bound_kw(k[0], k[1], now) for k in members) + new_kw
            if limit is None:  # no headroom known: hold, never treat it as unlimited
                return Blocked(level, group, 0.0, total, None, known=False)
            if total > limit + EPS_KW and at > now.timestamp():
                total = sum(self._bound_at(self._connectors[k], at) for k in members) + new_kw
            if total > limit + EPS_KW:
                t = now.timestamp()
                untils = [u for k in members for u, _ in self._connectors[k].cooling if u > t]
                return Blocked(level, group, limit, total, min(untils) if untils else None)
        return self._check_phases(cp, connector_id, _Draw(new_kw, new_a), now, on_site)

    def _check_phases(
        self, cp: str, connector_id: int, new: _Draw, now: datetime, on_site: list[tuple[str, int]]
    ) -> Blocked | None:
        """The per-phase half of :meth:`check_increase`; ``on_site`` are the site's other connectors."""
        info = self._topology.charger(cp)
        if info is None or not info.managed:
            return None
        rated = [n for n in self._topology.ancestors(info.node_id) if n.limit_a is not None]
        if not rated:
            return None
        mine = self._phases_of(cp, connector_id, info)
        new_a = self._amps(cp, connector_id, info, new)
        t = now.timestamp()
        for node in rated:
            assert node.limit_a is not None
            members = [k for k in on_site if self._under(k[0], node.node_id)]
            load: dict[str, float] = {phase: new_a for phase in mine}
            for k in members:
                for phase, amps in self.phase_bound_a(k[0], k[1], now).items():
                    load[phase] = load.get(phase, 0.0) + amps
            for phase in mine:
                if load[phase] > node.limit_a + EPS_A:
                    untils = [u for k in members for u, _ in self._connectors[k].cooling if u > t]
                    return Blocked(
                        "node",
                        node.node_id,
                        0.0,
                        0.0,
                        min(untils) if untils else None,
                        phase=phase,
                        limit_a=node.limit_a,
                        needed_a=load[phase],
                    )
        return None

    def _under(self, cp: str, node_id: str) -> bool:
        info = self._topology.charger(cp)
        if info is None or not info.managed:
            return False
        return any(n.node_id == node_id for n in self._topology.ancestors(info.node_id))

    def _covered_until(self, cp: str, connector_id: int, new_kw: float, now: datetime) -> float:
        """Epoch seconds until which the connector's own cuts still bound it at ``new_kw`` or more (``now``
        when none does)."""
        t = now.timestamp()
        c = self._connectors.get((cp, connector_id))
        if c is None:
            return t
        return max([t, *(until for until, d in c.cooling if until > t and d.kw >= new_kw - EPS_KW)])

    def _bound_at(self, c: _Connector, t: float) -> float:
        """:meth:`bound_kw` at epoch seconds ``t`` (later than now), from what is known now; prunes nothing."""
        flight = [c.in_flight.at(t).kw] if c.in_flight is not None else []
        return max([self._in_force(c.cp, c).at(t).kw, *flight, *(d.kw for until, d in c.cooling if until > t)])

    def _in_group(self, cp: str, level: str, group: str) -> bool:
        node, site = self._groups(cp)
        return (node if level == "node" else site) == group

    def group_sum_kw(self, level: str, group: str, now: datetime) -> float:
        """The sum of bounds on a node or site (kW), for tests and status views."""
        return sum(self.bound_kw(k[0], k[1], now) for k in self._connectors if self._in_group(k[0], level, group))


def _wider(a: _Draw, b: _Draw) -> _Draw:
    """The larger of two limits, per unit (either may be the one in force)."""
    amps = None if a.a is None or b.a is None else max(a.a, b.a)
    return _Draw(max(a.kw, b.kw), amps)
