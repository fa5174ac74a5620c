"""The breaker tree from ``site.topology``, as the executor needs it: charger facts and safe shares.

Chargers are the ``kind='charger'`` leaves; their ``parent_id`` is the breaker (panel or site) they hang
on. The *safe share* of a charger is what it may draw when the executor has nothing fresher to go on (at
boot, or when its setpoints are older than the TTL): on every breaker on its path to the site, the
breaker's limit divided among the chargers under it in proportion to their ratings,

    safe_kw(c) = fraction x min(rating(c), min over ancestors A of limit(A) x rating(c) / sum of ratings under A)

so that if every charger drew its safe share at once, no breaker on any path would be exceeded (with no
building load; ``fraction`` < 1 leaves room for it). Unmanaged chargers count in the sums: their draw is
not ours to shape but it is on the same breakers.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.contracts.topics import PhaseRotation, TopologyNode

__all__ = ["ChargerInfo", "Topology"]


@dataclass(frozen=True)
class ChargerInfo:
    """A charger's static facts from its ``site.topology`` node (``node_id`` is the breaker it hangs on;
    ``phase_rotation`` how its L1, L2, L3 are wired to the grid's R, S, T, ``None`` for straight through)."""

    site_id: str
    node_id: str | None
    rated_power_kw: float
    phases: int
    voltage_v: float
    managed: bool
    connectors: int
    priority: int = 0
    weight: float = 1.0
    flexible: bool = False
    phase_rotation: PhaseRotation | None = None  # the wiring, copied onto its sessions


class Topology:
    """The latest ``site.topology`` node per key."""

    def __init__(self) -> None:
        self._nodes: dict[str, TopologyNode] = {}
        # Derived from _nodes and dropped on every apply: dispatchers ask for these on every plan, and
        # computing them by a walk over every node made planning O(chargers) (benchmarks/scale.py).
        self._infos: dict[str, ChargerInfo] = {}
        self._ratings: dict[str, float] | None = None  # node id -> sum of the ratings of chargers under it
        self._by_site: dict[str, list[str]] | None = None  # site id -> charger ids

    def apply(self, key: str | None, node: TopologyNode | None) -> None:
        """Upsert ``node`` under ``key``; ``node=None`` (a tombstone) deletes the key."""
        if key is None:
            return
        if node is None:
            self._nodes.pop(key, None)
        else:
            self._nodes[key] = node
        if self._infos or self._ratings is not None or self._by_site is not None:
            self._infos, self._ratings, self._by_site = {}, None, None

    def charger(self, charge_point_id: str) -> ChargerInfo | None:
        """The charger's facts, or ``None`` if topology has no charger node with that id."""
        info = self._infos.get(charge_point_id)
        if info is not None:
            return info
        node = self._nodes.get(charge_point_id)
        if node is None or node.kind != "charger":
            return None
        info = self._infos[charge_point_id] = ChargerInfo(
            site_id=node.site_id,
            node_id=node.parent_id,
            rated_power_kw=node.limit_kw,
            phases=node.phases,
            voltage_v=node.voltage_v,
            managed=node.managed,
            connectors=node.connectors,
            priority=node.priority,
            weight=node.weight,
            flexible=node.flexible,
            phase_rotation=node.phase_rotation,
        )
        return info

    def site_chargers(self, site_id: str) -> list[str]:
        """The ids of every charger whose ``site_id`` is ``site_id`` (as :meth:`charger` reports it)."""
        if self._by_site is None:
            by_site: dict[str, list[str]] = {}
            for key, node in self._nodes.items():
                if node.kind == "charger":
                    by_site.setdefault(node.site_id, []).append(key)
            self._by_site = by_site
        return self._by_site.get(site_id, [])

    def ancestors(self, node_id: str | None) -> list[TopologyNode]:
        """The nodes from ``node_id`` up to its root (cycles and dangling parents end the walk)."""
        out: list[TopologyNode] = []
        seen: set[str] = set()
        while node_id is not None and node_id not in seen:
            seen.add(node_id)
            node = self._nodes.get(node_id)
            if node is None:
                break
            out.append(node)
            node_id = node.parent_id
        return out

    def node(self, node_id: str | None) -> TopologyNode | None:
        """The node with this id, if any."""
        return None if node_id is None else self._nodes.get(node_id)

    def chargers_under(self, node_id: str) -> list[TopologyNode]:
        """Every charger whose path to the root passes through ``node_id``."""
        return [
            n
            for n in self._nodes.values()
            if n.kind == "charger" and any(a.node_id == node_id for a in self.ancestors(n.parent_id))
        ]

    def safe_share_kw(self, charge_point_id: str, fraction: float = 1.0) -> float | None:
        """The charger's safe share in kW (see the module docstring), or ``None`` if it is not in topology."""
        me = self._nodes.get(charge_point_id)
        if me is None or me.kind != "charger":
            return None
        if self._ratings is None:  # one pass: the same sums as chargers_under, for every breaker at once
            sums: dict[str, float] = {}
            for node in self._nodes.values():
                if node.kind == "charger":
                    for above in self.ancestors(node.parent_id):
                        sums[above.node_id] = sums.get(above.node_id, 0) + node.limit_kw
            self._ratings = sums
        share = me.limit_kw
        for breaker in self.ancestors(me.parent_id):
            ratings = self._ratings.get(breaker.node_id, 0) or me.limit_kw
            share = min(share, breaker.limit_kw * me.limit_kw / ratings)
        return max(0.0, share * fraction)
