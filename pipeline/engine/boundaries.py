"""Temporal boundaries: when a view's ``NOW()`` comparisons can next change their result, per site.

A view that reads ``NOW()`` in a temporal filter (a DR event's ``[event_start, event_end)``, a rule's or a
tariff slot's ``[valid_from, valid_to)``, a meter that turns stale ``600 seconds`` after ``sampled_at``)
changes its rows only at instants the inputs already name. So the engine need not poll: it evaluates a
site exactly when the next of those instants comes.

The instants are derived from the SQL, not written per view. Every comparison of ``NOW()`` (plus or
minus any expression free of ``NOW()``, e.g. an ``INTERVAL``) with an expression ``X`` over the row is
normalised to ``NOW() op B`` (``B`` = ``X`` minus that offset); it flips at ``B`` (for ``>=`` and ``<``) or
one microsecond, DuckDB's timestamp resolution, after ``B`` (for ``>`` and ``<=``; both for ``=`` and
``<>``). ``BETWEEN`` is its two comparisons. For each comparison a *boundary query* reads the rows the
comparison is evaluated on (the ``FROM`` and joins of its ``SELECT``, with the view's CTEs; the ``WHERE``
dropped so rows the filter hides now are included, the comparison itself taken as true in a join
condition) and returns ``(site_id, boundary_at)``; ``site_id`` is the comparing relation's, or
NULL (every site) when that relation has none. Other ``NOW()`` comparisons in those rows are kept, bound
to the current time: a row they hide appears only at one of their own boundaries, when the engine
evaluates and recomputes. The set of instants is a superset (a superseded DR signal still names one),
which costs an evaluation that changes nothing, never a missed change.

A use of ``NOW()`` this cannot bound (a ``NOW()`` in a projection's arithmetic, a comparison with an
aggregate) is reported by :func:`derive`; the engine's periodic tick covers it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlglot import exp

from pipeline.engine.partition import ALL

#: The instant column of a boundary query's rows (``site_id``, ``boundary_at``).
AT_COLUMN = "boundary_at"

_FLIP: dict[type[exp.Expr], type[exp.Expr]] = {
    exp.GT: exp.LT,
    exp.GTE: exp.LTE,
    exp.LT: exp.GT,
    exp.LTE: exp.GTE,
    exp.EQ: exp.EQ,
    exp.NEQ: exp.NEQ,
}


def is_now(node: exp.Expr) -> bool:
    """``NOW()`` or ``CURRENT_TIMESTAMP`` as sqlglot parses it in the ``risingwave`` dialect."""
    return isinstance(node, exp.CurrentTimestamp) or (isinstance(node, exp.Anonymous) and node.name.upper() == "NOW")


def _has_now(node: exp.Expr) -> bool:
    return any(is_now(n) for n in node.walk())


def _now_offsets(node: exp.Expr) -> list[tuple[int, exp.Expr]] | None:
    """``node`` as ``NOW() + sign1 * e1 + sign2 * e2 ...`` with no ``NOW()`` in the ``e``; ``None`` when it is
    not of that form."""
    if isinstance(node, exp.Paren):
        return _now_offsets(node.this)
    if is_now(node):
        return []
    if isinstance(node, exp.Add | exp.Sub):
        left = _now_offsets(node.this)
        if left is not None and not _has_now(node.expression):
            return [*left, (1 if isinstance(node, exp.Add) else -1, node.expression)]
        if isinstance(node, exp.Add):
            right = _now_offsets(node.expression)
            if right is not None and not _has_now(node.this):
                return [*right, (1, node.this)]
    return None


def _instants(op: type[exp.Expr], bound: exp.Expr) -> list[exp.Expr]:
    """The first instants at which ``NOW() op bound`` has a new value."""
    at = exp.cast(exp.paren(bound, copy=False), exp.DataType.build("TIMESTAMPTZ"))
    after = exp.Add(this=at.copy(), expression=exp.Interval(this=exp.Literal.string("1"), unit=exp.var("MICROSECOND")))
    if op in (exp.GTE, exp.LT):
        return [at]
    if op in (exp.GT, exp.LTE):
        return [after]
    return [at, after]  # = and <>: true (false) at the instant only


def _normalise(op: type[exp.Expr], left: exp.Expr, right: exp.Expr) -> list[exp.Expr] | None:
    """The instants ``left op right`` can flip at, when one side is ``NOW()`` plus offsets and the other has
    no ``NOW()``; else ``None``."""
    offsets = _now_offsets(left)
    other = right
    if offsets is None:
        offsets, other, op = _now_offsets(right), left, _FLIP[op]
    if offsets is None or _has_now(other):
        return None
    bound = other.copy()
    for sign, term in offsets:  # NOW() + s*e op X  <=>  NOW() op X - s*e
        kind = exp.Sub if sign > 0 else exp.Add
        bound = kind(this=exp.paren(bound, copy=False), expression=exp.paren(term.copy(), copy=False))
    return _instants(op, bound)


def _comparisons(node: exp.Expr) -> list[tuple[exp.Expr, list[exp.Expr] | None]]:
    """Each comparison under ``node`` that reads ``NOW()``, with its instants (``None``: not boundable)."""
    out: list[tuple[exp.Expr, list[exp.Expr] | None]] = []
    for cmp in node.find_all(*_FLIP, exp.Between):
        if not _has_now(cmp):
            continue
        if isinstance(cmp, exp.Between):
            low = _normalise(exp.GTE, cmp.this, cmp.args["low"])
            high = _normalise(exp.LTE, cmp.this, cmp.args["high"])
            out.append((cmp, None if low is None or high is None else low + high))
        else:
            out.append((cmp, _normalise(type(cmp), cmp.this, cmp.expression)))
    return out


@dataclass
class Boundary:
    """The rows one ``NOW()`` comparison of ``view`` is evaluated on, and the instants it flips at.

    :meth:`queries` builds the boundary queries for a given site expression (the engine tries the
    comparing relation's ``site_id``, then NULL for every site).
    """

    view: str
    text: str  # the comparison as written (for messages)
    instants: list[exp.Expr]
    select: exp.Select  # the FROM and joins, with the view's CTEs in scope
    qualifier: str  # the relation alias the compared columns come from ("" when unqualified)

    def queries(self, site: exp.Expr) -> list[exp.Select]:
        """One ``SELECT site_id, boundary_at FROM ...`` per instant: a row per (row, instant)."""
        return [
            self.select.copy().select(
                exp.cast(site.copy(), exp.DataType.build("VARCHAR")).as_("site_id"),
                instant.copy().as_(AT_COLUMN),
                copy=False,
            )
            for instant in self.instants
        ]

    def site_candidates(self) -> list[exp.Expr]:
        """The site expressions to try, best first: the compared relation's ``site_id``, then NULL."""
        return [exp.column("site_id", table=self.qualifier or None), exp.null()]


def _ctes_in_scope(select: exp.Select) -> list[exp.CTE]:
    """Every CTE of the queries enclosing ``select`` (its own included), outermost first."""
    found: list[exp.CTE] = []
    node: exp.Expr | None = select
    while node is not None:
        with_ = node.args.get("with_") if isinstance(node, exp.Query) else None
        if isinstance(with_, exp.With):
            found[:0] = [cte.copy() for cte in with_.expressions]
        node = node.parent
    return found


def _rows_of(cmp: exp.Expr, select: exp.Select) -> exp.Select | None:
    """The SELECT reading the rows ``cmp`` is evaluated on, or ``None`` when ``cmp`` is not row-level
    (a HAVING, or an aggregate or window compared)."""
    if any(isinstance(n, exp.AggFunc | exp.Window) for n in cmp.walk()):
        return None
    node = cmp.parent
    while node is not None and node is not select:
        if isinstance(node, exp.Having):
            return None
        node = node.parent
    rows = exp.Select()
    source = select.args.get("from_")
    if source is not None:
        rows.set("from_", source.copy())
    joins = []
    for join in select.args.get("joins") or []:
        join = join.copy()
        on = join.args.get("on")
        if on is not None:  # the comparison itself is taken as true, so rows it hides now are read
            join.set("on", on.transform(lambda n: exp.true() if n == cmp else n))
        joins.append(join)
    if joins:
        rows.set("joins", joins)
    ctes = _ctes_in_scope(select)
    if ctes:
        rows.set("with_", exp.With(expressions=ctes))
    return rows


def _qualifier(instants: list[exp.Expr]) -> str | None:
    """The one relation alias the instants' columns name ("" when none is named), ``None`` when several."""
    tables = {col.table for instant in instants for col in instant.find_all(exp.Column)}
    if len(tables) > 1:
        return None
    return tables.pop() if tables else ""


@dataclass
class Derivation:
    """What :func:`derive` found in one view: its boundaries and the ``NOW()`` uses it cannot bound."""

    boundaries: list[Boundary] = field(default_factory=list)
    unbounded: list[str] = field(default_factory=list)


def derive(view: str, query: exp.Expr) -> Derivation:
    """The boundaries of every ``NOW()`` comparison in ``query`` (a view's body, RisingWave dialect).

    A use of ``NOW()`` outside a comparison of the supported form lands in ``unbounded`` as SQL text.
    """
    found = Derivation()
    bounded: set[int] = set()
    for cmp, instants in _comparisons(query):
        select = cmp.find_ancestor(exp.Select)
        rows = _rows_of(cmp, select) if instants is not None and isinstance(select, exp.Select) else None
        qualifier = _qualifier(instants) if instants is not None else None
        if instants is None or rows is None or qualifier is None:
            continue
        found.boundaries.append(Boundary(view, cmp.sql("risingwave"), instants, rows, qualifier))
        bounded.update(id(n) for n in cmp.walk() if is_now(n))
    for node in query.walk():
        if is_now(node) and id(node) not in bounded:
            parent = node.parent
            while parent is not None and isinstance(parent, exp.Add | exp.Sub | exp.Paren):
                parent = parent.parent
            found.unbounded.append((parent or node).sql("risingwave"))
    return found


class BoundarySchedule:
    """Per view and site, the next instant (after the last evaluation) at which a ``NOW()`` comparison
    can change the view's rows; site ``None`` stands for every site.

    :meth:`next_at` is the earliest of them (a heap with lazy deletion, so it costs no scan of the
    fleet); :meth:`due` the sites each view must be re-run for at a given time.
    """

    def __init__(self) -> None:
        self._at: dict[tuple[str, str | None], datetime] = {}
        self._heap: list[tuple[datetime, str, bool, str]] = []  # (at, view, every site?, site or "")

    def __len__(self) -> int:
        return len(self._at)

    def _set(self, view: str, site: str | None, at: datetime) -> None:
        self._at[(view, site)] = at
        heapq.heappush(self._heap, (at, view, site is None, site or ""))

    def _live(self, entry: tuple[datetime, str, bool, str]) -> bool:
        at, view, every, site = entry
        return self._at.get((view, None if every else site)) == at

    def pending(self) -> dict[tuple[str, str | None], datetime]:
        """A copy of what is held: ``(view, site)`` -> the next instant."""
        return dict(self._at)

    def next_at(self) -> datetime | None:
        """The earliest pending boundary, or ``None`` when there is none."""
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def due(self, now: datetime) -> dict[str, frozenset[str] | None]:
        """Per view, the sites whose boundary is at or before ``now`` (``ALL`` for an every-site one).
        Does not consume them: :meth:`update` replaces them once the evaluation is done."""
        out: dict[str, frozenset[str] | None] = {}
        sites: dict[str, set[str]] = {}
        stack = [0] if self._heap else []
        while stack:  # the heap's entries at or before now form a subtree at its root
            i = stack.pop()
            entry = self._heap[i]
            if entry[0] > now:
                continue
            stack.extend(c for c in (2 * i + 1, 2 * i + 2) if c < len(self._heap))
            if not self._live(entry):
                continue
            _, view, every, site = entry
            if every:
                out[view] = ALL
            else:
                sites.setdefault(view, set()).add(site)
        for view, names in sites.items():
            if view not in out:
                out[view] = frozenset(names)
        return out

    def update(self, view: str, rows: Iterable[tuple[str | None, datetime]], scope: frozenset[str] | None) -> None:
        """Take ``view``'s boundary query rows ``(site, at)`` (its next instant per site), computed over every
        site (``scope`` ``ALL``) or over the sites in ``scope``: their entries are replaced, and rows for
        other sites or for every site lower what is held (a superset never misses a change)."""
        if scope is ALL:
            for key in [key for key in self._at if key[0] == view]:
                del self._at[key]
        else:
            for dirty in scope:
                self._at.pop((view, dirty), None)
        for site, at in rows:
            held = self._at.get((view, site))
            if scope is not ALL and (site is None or site not in scope) and held is not None and held <= at:
                continue
            self._set(view, site, at)
        if len(self._heap) > 2 * len(self._at) + 1024:  # drop the dead entries
            self._heap = [(at, v, s is None, s or "") for (v, s), at in self._at.items()]
            heapq.heapify(self._heap)

    def clear(self) -> None:
        self._at.clear()
        self._heap.clear()
