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

:meth:`Ledger.check_increase` lets a connector go up only if, on its node and on its site, the sum of every
other connector's bound plus its new limit stays within the newest ``node_limit_kw`` / ``site_limit_kw``.
A node or site whose newest limit is unknown (``None``) has no known headroom: increases there wait.
A transaction that ended draws nothing. Unmanaged chargers are not counted (their load is the building's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from executor.topology import Topology

__all__ = ["Blocked", "Ledger"]

EPS_KW = 1e-6


@dataclass
class _Connector:
    cp: str
    transaction_id: str
    tx_kw: float | None = None  # TxProfile limit in force for this transaction
    in_flight_kw: float | None = None
    cooling: list[tuple[float, float]] = field(default_factory=list)  # (until, kW) by timestamp


@dataclass
class _Charger:
    default_kw: float | None = None  # TxDefaultProfile in force (per connector)
    max_kw: float | None = None  # station maximum in force


@dataclass(frozen=True)
class Blocked:
    """Why an increase cannot go yet: the ``level`` (``node`` or ``site``) and id whose sum would exceed
    ``limit_kw``, and ``until`` (epoch seconds) when a cut on it ends its lag, or ``None`` when only an
    acknowledgement (or a new setpoint) can free headroom."""

    level: str
    group: str
    limit_kw: float
    needed_kw: float
    until: float | None
    known: bool = True  # False: no limit is known for the group, so no headroom is (``limit_kw`` is 0)


class Ledger:
    """Bounds per ``(charge_point_id, connector_id)``; membership and limits come from the callables.

    ``node_limit`` and ``site_limit`` map a node or site id to its newest EV headroom (kW) or ``None``.
    """

    def __init__(
        self,
        topology: Topology,
        node_limit: Callable[[str | None], float | None],
        site_limit: Callable[[str | None], float | None],
        lag_s: float,
    ) -> None:
        self._topology = topology
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
    ) -> None:
        """Restore what a previous run knew (its acks, in order): ``certain`` is an Accepted limit, else a
        maybe. A cut acknowledged at ``answered_at`` cools from then, as it would have in that run, so a
        restart inside the EV response lag does not spend headroom the EV has not yet freed."""
        c = self._connectors.get((cp, connector_id))
        if c is None or c.transaction_id != transaction_id:
            return
        before = self._in_force(cp, c)
        c.tx_kw = kw if certain or c.tx_kw is None else max(c.tx_kw, kw)
        if answered_at is not None:
            self._cool(c, before, answered_at)

    def rebooted(self, cp: str) -> None:
        """A BootNotification: station-wide profiles may be gone until they are accepted again."""
        self._chargers.pop(cp, None)

    # -- calls -----------------------------------------------------------------------------------------

    def sending(self, cp: str, connector_id: int, kw: float) -> None:
        c = self._connectors.get((cp, connector_id))
        if c is not None:
            c.in_flight_kw = kw

    def answered(self, cp: str, connector_id: int, transaction_id: str, kw: float, status: str, now: datetime) -> None:
        """The charger answered a TxProfile call; ``status`` as in :class:`executor.ocpp.station.CallOutcome`,
        or ``"Lost"`` when the connection dropped with the call in flight."""
        c = self._connectors.get((cp, connector_id))
        if c is None or c.transaction_id != transaction_id:
            return
        c.in_flight_kw = None
        before = self._in_force(cp, c)
        if status == "Accepted":
            c.tx_kw = kw
        elif status in ("Timeout", "Lost"):  # it may have been applied
            c.tx_kw = max(before, kw)
        self._cool(c, before, now)

    def tx_cleared(self, cp: str, connector_id: int, now: datetime) -> None:
        """The connector's TxProfile was cleared: it falls back to the TxDefaultProfile (or worse)."""
        c = self._connectors.get((cp, connector_id))
        if c is not None:
            before = self._in_force(cp, c)
            c.tx_kw = None
            self._cool(c, before, now)

    def station_profile(self, cp: str, purpose: str, kw: float | None, now: datetime) -> None:
        """A station-wide profile was accepted (``kw``) or is no longer known to be there (``None``)."""
        befores = {(cp, i): self._in_force(cp, self._connectors[(cp, i)]) for i in self._of_charger.get(cp, ())}
        charger = self._chargers.setdefault(cp, _Charger())
        if purpose == "TxDefault":
            charger.default_kw = kw
        else:
            charger.max_kw = kw
        for key, before in befores.items():
            self._cool(self._connectors[key], before, now)

    def _cool(self, c: _Connector, before: float, now: datetime) -> None:
        after = self._in_force(c.cp, c)
        if after < before - EPS_KW and self.lag_s > 0:
            c.cooling.append((now.timestamp() + self.lag_s, before))

    # -- bounds ----------------------------------------------------------------------------------------

    def _uncovered_kw(self, cp: str) -> float:
        charger = self._chargers.get(cp, _Charger())
        info = self._topology.charger(cp)
        rating = info.rated_power_kw if info is not None else float("inf")
        if charger.default_kw is not None:
            return min(charger.default_kw, rating)
        if charger.max_kw is not None:
            return min(charger.max_kw, rating)
        return rating

    def _in_force(self, cp: str, c: _Connector) -> float:
        return c.tx_kw if c.tx_kw is not None else self._uncovered_kw(cp)

    def in_force_kw(self, cp: str, connector_id: int) -> float:
        """The connector's limit in force (kW): 0 without an open transaction."""
        c = self._connectors.get((cp, connector_id))
        return 0.0 if c is None else self._in_force(cp, c)

    def bound_kw(self, cp: str, connector_id: int, now: datetime) -> float:
        """The most the connector may be drawing now (kW); see the module docstring."""
        c = self._connectors.get((cp, connector_id))
        if c is None:
            return 0.0
        t = now.timestamp()
        c.cooling = [(until, kw) for until, kw in c.cooling if until > t]
        return max([self._in_force(cp, c), c.in_flight_kw or 0.0, *(kw for _, kw in c.cooling)])

    def _groups(self, cp: str) -> tuple[str | None, str | None]:
        info = self._topology.charger(cp)
        if info is None or not info.managed:
            return None, None
        return info.node_id, info.site_id

    def check_increase(self, cp: str, connector_id: int, new_kw: float, now: datetime) -> Blocked | None:
        """``None`` if raising the connector to ``new_kw`` keeps its node and site within their limits
        (counting every other connector's bound), else why not.

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
        return None

    def _covered_until(self, cp: str, connector_id: int, new_kw: float, now: datetime) -> float:
        """Epoch seconds until which the connector's own cuts still bound it at ``new_kw`` or more (``now``
        when none does)."""
        t = now.timestamp()
        c = self._connectors.get((cp, connector_id))
        if c is None:
            return t
        return max([t, *(until for until, kw in c.cooling if until > t and kw >= new_kw - EPS_KW)])

    def _bound_at(self, c: _Connector, t: float) -> float:
        """:meth:`bound_kw` at epoch seconds ``t`` (later than now), from what is known now; prunes nothing."""
        return max([self._in_force(c.cp, c), c.in_flight_kw or 0.0, *(kw for until, kw in c.cooling if until > t)])

    def _in_group(self, cp: str, level: str, group: str) -> bool:
        node, site = self._groups(cp)
        return (node if level == "node" else site) == group

    def group_sum_kw(self, level: str, group: str, now: datetime) -> float:
        """The sum of bounds on a node or site (kW), for tests and status views."""
        return sum(self.bound_kw(k[0], k[1], now) for k in self._connectors if self._in_group(k[0], level, group))
