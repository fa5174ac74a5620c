"""Turn desired state (``sql/``) and applied state (the target's catalog) into an ordered plan.

The rules, in the manner of SQLMesh's plan:

* an object in ``sql/`` and not in the catalog is **created**; if a relation of that name already exists
  on the target (untracked), it is dropped and recreated so the catalog can vouch for it;
* an object whose normalized-SQL hash differs from the catalog's is **changed**: RisingWave cannot alter
  a view's query, so it and everything that depends on it (transitively, sinks included: they are
  reattached) are dropped, dependents first, and **recreated** in dependency order;
* an applied object that is gone from the target (dropped by hand) is created again;
* an applied object no longer in ``sql/`` is **dropped** only when drops are allowed, else kept and
  reported; if it depends on something being recreated, the plan needs the drop and says so.

Dependencies are the union of what ``sql/`` says now and what the catalog recorded at apply time, so
drops follow the dependencies that exist on the target.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from graphlib import TopologicalSorter

from pipeline.migrate.changes import classify
from pipeline.migrate.model import CREATE, DROP, RECREATE, CatalogEntry, Change, MigrateError, Plan, Step
from pipeline.migrate.targets.base import Target
from pipeline.sqlmodel.objects import SqlObject

CATALOG_ONLY = "-- nothing to run on the target: only the catalog row goes"


def _dependents(objects: Mapping[str, SqlObject], catalog: Mapping[str, CatalogEntry]) -> dict[str, set[str]]:
    deps: dict[str, set[str]] = {}
    for name, obj in objects.items():
        deps.setdefault(name, set()).update(obj.depends_on)
    for name, entry in catalog.items():
        deps.setdefault(name, set()).update(entry.depends_on)
    out: dict[str, set[str]] = {name: set() for name in deps}
    for name, uses in deps.items():
        for used in uses:
            out.setdefault(used, set()).add(name)
    return out


def _drop_order(names: set[str], objects: Mapping[str, SqlObject], catalog: Mapping[str, CatalogEntry]) -> list[str]:
    """``names`` with every object before what it depends on (dependents first)."""
    graph = {}
    for name in sorted(names):
        uses = set(objects[name].depends_on) if name in objects else set()
        uses |= set(catalog[name].depends_on) if name in catalog else set()
        graph[name] = sorted(uses & names)
    return list(reversed(list(TopologicalSorter(graph).static_order())))


def build_plan(
    objects: list[SqlObject],
    catalog: Mapping[str, CatalogEntry],
    existing: Mapping[str, str] | None,
    target: Target,
    *,
    allow_drop: bool = False,
) -> Plan:
    """The steps that bring ``target`` from ``catalog`` (and the relations ``existing`` on it, or
    ``None`` if unknown) to ``objects`` (dependency order, from :func:`pipeline.sqlmodel.objects.load_objects`).

    Raises :class:`MigrateError` when a change needs to drop an object removed from ``sql/`` and
    ``allow_drop`` is false.
    """
    desired = {o.name: o for o in objects}
    order = [o.name for o in objects]
    on_target = dict(existing or {})

    changes: dict[str, Change] = {}
    reasons: dict[str, str] = {}
    for name in order:
        entry = catalog.get(name)
        if entry is None:
            if name in on_target:
                reasons[name] = "exists on the target but not in the catalog; recreated from sql/"
        elif entry.hash != desired[name].hash:
            changes[name] = classify(entry.kind, entry.source, desired[name])
            reasons[name] = f"changed ({changes[name].category})"
    roots = set(reasons)

    # everything downstream of a changed or untracked object is dropped and recreated with it
    dependents = _dependents(desired, catalog)
    removed = [n for n in sorted(catalog) if n not in desired]
    rebuild = set(roots)
    queue = deque(sorted(roots))
    while queue:
        parent = queue.popleft()
        for child in sorted(dependents.get(parent, ())):
            if child in rebuild or (child in desired and child not in catalog and child not in on_target):
                continue  # already handled, or new: created below anyway
            if child not in desired and not allow_drop:
                raise MigrateError(
                    f"recreating {parent} needs dropping {child}, which depends on it on the target and is "
                    "removed from sql/; rerun with --allow-drop"
                )
            rebuild.add(child)
            queue.append(child)
            if child in desired:
                kind = desired[child].kind
                reasons[child] = (
                    f"sink reattached: reads from {parent}, which is recreated"
                    if kind == "sink"
                    else f"depends on {parent}, which is recreated"
                )

    dropped = rebuild | (set(removed) if allow_drop else set())
    steps: list[Step] = []
    for name in _drop_order(dropped, desired, catalog):
        if name in catalog:
            kind = catalog[name].kind
        else:
            kind = on_target.get(name, desired[name].kind)
        statement = target.drop_statement(name, kind)
        reason = reasons.get(name, "removed from sql/") if name in desired else "removed from sql/"
        shown = statement or CATALOG_ONLY
        steps.append(Step(DROP, name, kind, reason, shown, changes.get(name), statement=statement))

    for name in order:
        obj = desired[name]
        entry = catalog.get(name)
        if name in rebuild:
            action, reason = RECREATE, reasons[name]
        elif entry is None:
            action, reason = CREATE, "new in sql/"
        elif existing is not None and target.materializes(obj.kind) and name not in on_target:
            action, reason = CREATE, "in the catalog but missing on the target"
        else:
            continue
        statement, shown = target.create_statement(obj)
        steps.append(Step(action, name, obj.kind, reason, shown, changes.get(name), obj=obj, statement=statement))

    kept = tuple(n for n in removed if n not in dropped)
    return Plan(target.display, target.engine, tuple(steps), kept)
