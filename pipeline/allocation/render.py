"""Renders the allocation views: hierarchical admission and water-filling over the breaker tree, unrolled.

RisingWave has no recursive CTE, so an allocation over a breaker tree is written out level by level,
from the deepest level (``MAX_DEPTH``) up to the site (depth 0). The levels are identical but for their
index, so this module writes them and a test checks that the committed files are what it renders
(``python -m pipeline.allocation.render`` rewrites them in ``sql/views/`` after a change here).

Five materialized views, each reading every CTE of its own once:

* ``session_admission_deep``: admission at the breakers at depth ``SPLIT_DEPTH`` and below, over the
  sessions whose path reaches that deep (each with what the levels above carry on with);
* ``session_admission``: every session of ``session_limits``, ``admitted`` or not (the levels above
  ``SPLIT_DEPTH``, from ``session_admission_deep``'s rows for the sessions below it);
* ``session_fill_deep`` and ``session_fill``: likewise, the admitted sessions with their
  ``allocated_kw`` and ``binding``;
* ``session_allocation``: both together, the paused ones at 0 (what ``session_setpoints`` reads).

The deep views exist for speed: each level's windows sort every row they are given, so a site whose tree
is shallower than ``SPLIT_DEPTH`` (a site, its panels, its chargers: the common one) would otherwise sort
all its sessions through three levels where none of them has a breaker (a 20-session site's evaluation
on SQLite: ~9 ms before the split, ~6 ms after).

Why the split: RisingWave plans a CTE anew at every place it is read, so a CTE read twice doubles the
plan below it, and a chain of levels that each read the level below twice grows as ``2 ** depth``. Here
every CTE is read once: a level's water level is a window aggregate over the session rows (not a GROUP BY
joined back to them), and the paused sessions, which the last step needs beside the filled ones, come
from ``session_admission``, a materialized view, which RisingWave reads as stored rows.
``pipeline migrate lint`` counts the scans each view expands to (rule ``plan-size``).

What the levels carry: only what the rules read (:data:`ADMIT_KEEP`, :data:`FILL_KEEP`, the ancestors
still to visit, the fill's state); each view joins its other columns back from its input by
``session_id`` at the end (a second read of a materialized view, stored rows: the plan does not double).
On the embedded engine's SQLite a window costs per row, per column carried and
per distinct window (each is a sort of the site's rows), and these two views are most of a site's
evaluation: carrying 10 columns fewer through the fill's window layers and running each pass's
weight-from-here sum off the same sort as its running sum (its total less the running sum before the
member) made a 20-session site's evaluation ~25 % cheaper. Each pass of the fill is then two window
layers: the candidate levels (a running sum and partition totals, one sort) and the levels with what
tells which limits are full (partition maxima); telling full limits from the levels rather than by
summing the grants saved a third layer per later pass (the fill ~11 % cheaper, with plain ``LEAST``).

The rule, at every node ``a`` on a session's path (``anc{d}`` is the session's ancestor at depth ``d``):

* **Admission** (deepest level first): among the sessions under ``a`` still admitted at the deeper
  levels, ordered by priority (high first), laxity (least first; sessions without a plan last),
  arrival, then session id, a session stays admitted while its floor fits in ``a``'s headroom beside
  what those before it hold: their floors and, for a session whose plan is not at risk, the caps of
  those before it whose plan is (``reserve_kw``, session_limits.sql; among sessions at risk the floors
  alone). The others are paused (0), never set below a floor.
* **Fill**: weighted max-min fair progressive filling of the extras ``cap - floor`` under every node's
  spare headroom (headroom minus the admitted floors). Node ``a`` saturates at the water level
  ``lam{d}`` where the sum of ``min(extra, weight * min(lam, levels of deeper nodes))`` reaches its
  spare; each session ends at ``floor + min(extra, weight * min(levels on its path))``. On trees
  (laminar constraints) this is exactly global progressive filling, so every ancestor's headroom holds,
  and no headroom is left while an admitted session below its cap could use it.

Phases. A session loads the grid phases ``on_r``/``on_s``/``on_t`` (its EV's phases through the charger's
wiring, ``session_telemetry``) with ``a_per_kw = 1000 / (ev_phases * V)`` amperes per kW on each. A breaker
with a per-phase rating (``limit_a``; ``node_headroom.headroom_a_r`` ..) admits a session only if, besides
the kW running sum, the running sum of floor currents on each grid phase it loads fits. In the fill each
breaker has up to four limits: its kW headroom and, with ``limit_a``, each grid phase's (the same closed
form with ``a_per_kw * extra`` and ``a_per_kw * weight``, so every level is in kW per weight). The phase
limits are not laminar with the kW ones (a 3-phase session shares each phase with different 1-phase
ones), so a breaker fills in ``PASSES`` passes: each takes the levels of all its limits side by side over
the sessions not yet frozen (after what the frozen ones hold), a session rises to the lowest of its limits'
levels, and a session at its extra or on a limit now full is frozen (:func:`_pass` says how a full limit
is told from the levels). Each pass fills at least one more limit, so three leave no phase of the
breaker with current unused while a session on it could take more.
Across breakers it is not exact: a breaker's level counts on its sessions rising to it, and one cut by a
phase above it leaves room the others under it do not take. Every level holds its limit for what it saw
and the frozen sessions hold what they had, so no phase and no kW limit is exceeded. Without ``limit_a``
the phase levels are null and one pass is the kW fill above.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAX_DEPTH = 5
SPLIT_DEPTH = 3
"""The breakers at this depth and below are admitted and filled in views of their own
(``session_admission_deep``, ``session_fill_deep``) over the sessions whose path reaches that deep, so a
site whose tree is shallower (a site, its panels, its chargers) does not run those levels at all."""
# Admission order: priority, then urgency (least laxity first: a planned session, docs/architecture.md
# "Plans"; unplanned ones have none and come after), then arrival.
ORDER = "x.priority DESC, x.laxity_s ASC NULLS LAST, x.started_at, x.session_id"
RUNNING = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
PHASES = ("r", "s", "t")
PASSTHROUGH = [
    "session_id",
    "charge_point_id",
    "connector_id",
    "transaction_id",
    "site_id",
    "node_id",
    "phases",
    "ev_phases",
    "voltage_v",
    "started_at",
    "cap_kw",
    "floor_kw",
]
# the grid phases a session loads (1/0) and its current per loaded phase for 1 kW (A)
PHASE_COLS = ["on_r", "on_s", "on_t", "a_per_kw"]
ANCESTORS = [f"anc{d}" for d in range(MAX_DEPTH + 1)]
ADMIT_COLS = PASSTHROUGH + PHASE_COLS + ["priority", "weight", "cap_binding", "paused_by", "laxity_s"] + ANCESTORS
ADMIT_KEEP = [
    "session_id",
    "site_id",
    "started_at",
    "floor_kw",
    "reserve_kw",
    "priority",
    "laxity_s",
    "paused_by",
] + PHASE_COLS
"""What admission carries from level to level besides the ancestors still to visit; the other columns of
``session_admission`` are joined back from ``session_limits`` at the end (see :data:`FILL_KEEP`)."""


def admit_cols(d: int) -> list[str]:
    """The columns admission carries into level ``d``: :data:`ADMIT_KEEP` and ``anc0..anc{d}``."""
    return ADMIT_KEEP + ANCESTORS[: d + 1]


FILL_KEEP = ["session_id", "site_id", "floor_kw", "weight"] + PHASE_COLS
"""What the fill carries from level to level besides the ancestors still to fill and its own state; the
rest of a session's columns are joined back from ``session_admission`` at the end (fewer columns through
every window of every pass: the fill's cost on SQLite is per row and column)."""


def fill_cols(d: int) -> list[str]:
    """The columns the fill carries into level ``d``: :data:`FILL_KEEP` and the ancestors ``anc0..anc{d}``."""
    return FILL_KEEP + ANCESTORS[: d + 1]


GENERATED = (
    "-- GENERATED by pipeline/allocation/render.py (python -m pipeline.allocation.render); edit that, not this.\n"
)


def _cols(names: list[str], prefix: str = "x.", indent: int = 8) -> str:
    """``names`` as a select list (each followed by a comma), wrapped at about 100 characters."""
    lines, line = [], ""
    for name in names:
        item = f"{prefix}{name},"
        if line and len(line) + len(item) > 100:
            lines.append(line)
            line = ""
        line = f"{line} {item}" if line else item
    lines.append(line)
    return ("\n" + " " * indent).join(lines)


def _admission(d: int) -> list[str]:
    """Admission at ``anc{d}``, in two rounds. ``adm{d}a``: in order, sessions admitted below stay admitted
    while the running sum of what they hold fits (in kW, their reserves ``reserve_kw`` for a session not
    at risk, their floors for one at risk; with ``limit_a``, their floor currents on each phase they
    load). ``adm{d}b``: what those leave (``left_*``, after their reserves). ``adm{d}``: the sessions the first round
    paused whose own floor fits in what is left get a second round over that, in the same order, so one
    session too large to fit does not pause every later one that would."""
    prev = "deep" if d == MAX_DEPTH else f"adm{d + 1}"
    below = "(x.paused_by IS NULL)" if d == MAX_DEPTH else "x.ok"
    part = f"PARTITION BY x.site_id, x.anc{d}"
    window = f"{part} ORDER BY {ORDER} {RUNNING}"
    phases = "".join(
        f"\n            AND (h.headroom_a_{p} IS NULL OR x.on_{p} = 0 OR SUM(\n"
        f"                CASE WHEN {below} THEN x.floor_kw * x.a_per_kw * x.on_{p} ELSE 0 END\n"
        f"            ) OVER ({window}) <= h.headroom_a_{p} + 1e-9)"
        for p in PHASES
    )
    carried = ",\n        ".join(["h.headroom_kw AS h_kw", *(f"h.headroom_a_{p} AS h_a_{p}" for p in PHASES)])
    first = (
        f"adm{d}a AS (\n"
        f"    SELECT\n"
        f"        {_cols(admit_cols(d))}\n"
        f"        {below} AS live,\n"
        f"        {below} AND (\n"
        f"            x.anc{d} IS NULL\n"
        f"            OR CASE WHEN x.reserve_kw > x.floor_kw\n"
        f"                THEN SUM(CASE WHEN {below} THEN x.floor_kw ELSE 0 END) OVER ({window})\n"
        f"                ELSE SUM(CASE WHEN {below} THEN x.reserve_kw ELSE 0 END) OVER ({window})\n"
        f"            END <= h.headroom_kw + 1e-9{phases}\n"
        f"        ) AS ok1,\n"
        f"        {carried}\n"
        f"    FROM {prev} AS x\n"
        f"    LEFT JOIN node_headroom AS h ON h.node_id = x.anc{d}\n"
        f")"
    )
    left = ",\n        ".join(
        [
            f"x.h_kw - SUM(CASE WHEN x.ok1 THEN x.reserve_kw ELSE 0 END) OVER ({part}) AS left_kw",
            *(
                f"x.h_a_{p} - SUM(CASE WHEN x.ok1 THEN x.floor_kw * x.a_per_kw * x.on_{p} ELSE 0 END) OVER ({part})"
                f" AS left_a_{p}"
                for p in PHASES
            ),
        ]
    )
    second = (
        f"adm{d}b AS (\n    SELECT\n        {_cols(admit_cols(d))}\n        x.live,\n        x.ok1,\n        {left}\n"
        f"    FROM adm{d}a AS x\n)"
    )
    fits_alone = "".join(
        f" AND (x.left_a_{p} IS NULL OR x.on_{p} = 0 OR x.floor_kw * x.a_per_kw <= x.left_a_{p} + 1e-9)" for p in PHASES
    )
    cand = f"(x.live AND NOT x.ok1 AND x.anc{d} IS NOT NULL AND x.floor_kw <= x.left_kw + 1e-9{fits_alone})"
    phases2 = "".join(
        f"\n            AND (x.left_a_{p} IS NULL OR x.on_{p} = 0 OR SUM(\n"
        f"                CASE WHEN {cand} THEN x.floor_kw * x.a_per_kw * x.on_{p} ELSE 0 END\n"
        f"            ) OVER ({window}) <= x.left_a_{p} + 1e-9)"
        for p in PHASES
    )
    third = (
        f"adm{d} AS (\n"
        f"    SELECT\n"
        f"        {_cols(admit_cols(d - 1))}\n"
        f"        x.ok1 OR (\n"
        f"            {cand}\n"
        f"            AND SUM(CASE WHEN {cand} THEN x.reserve_kw ELSE 0 END) OVER (\n"
        f"                {window}\n"
        f"            ) - x.reserve_kw + x.floor_kw <= x.left_kw + 1e-9{phases2}\n"
        f"        ) AS ok\n"
        f"    FROM adm{d}b AS x\n"
        f")"
    )
    return [first, second, third]


def render_admission_deep() -> str:
    """``session_admission_deep``: admission at the breakers at depth :data:`SPLIT_DEPTH` and below, over
    the sessions whose path reaches that deep; per session what the levels above carry on with
    (:func:`admit_cols` of the level above) and ``ok``, admitted so far."""
    ctes = ",\n".join(
        [
            f"deep AS (\n    SELECT\n        {_cols(admit_cols(MAX_DEPTH))[:-1]}\n    FROM session_limits AS x\n"
            f"    WHERE x.anc{SPLIT_DEPTH} IS NOT NULL\n)",
            *(cte for d in range(MAX_DEPTH, SPLIT_DEPTH - 1, -1) for cte in _admission(d)),
        ]
    )
    return (
        GENERATED
        + f"-- Admission (session_admission) at the breakers at depth {SPLIT_DEPTH} and below, for the sessions under them:\n"
        "-- a site's sessions whose path is shorter skip these levels (each level's windows would sort\n"
        "-- every session of the site), and session_admission carries on from here for the others.\n"
        "CREATE MATERIALIZED VIEW session_admission_deep AS\n"
        "WITH\n"
        + ctes
        + f"\nSELECT\n    {_cols(admit_cols(SPLIT_DEPTH - 1), indent=4)}\n    x.ok\nFROM adm{SPLIT_DEPTH} AS x;\n"
    )


def render_admission() -> str:
    """``session_admission``: one row per ``session_limits`` row, ``admitted`` true, false (paused) or,
    only if a breaker on its path has no headroom row, null. The levels at depth :data:`SPLIT_DEPTH` and
    below come from ``session_admission_deep``."""
    start = (
        f"adm{SPLIT_DEPTH} AS (\n"
        f"    SELECT\n        {_cols(admit_cols(SPLIT_DEPTH - 1))}\n        x.paused_by IS NULL AS ok\n"
        f"    FROM session_limits AS x\n    WHERE x.anc{SPLIT_DEPTH} IS NULL\n"
        f"    UNION ALL\n"
        f"    SELECT\n        {_cols(admit_cols(SPLIT_DEPTH - 1))}\n        x.ok\n"
        f"    FROM session_admission_deep AS x\n)"
    )
    ctes = ",\n".join([start, *(cte for d in range(SPLIT_DEPTH - 1, -1, -1) for cte in _admission(d))])
    return (
        GENERATED + "-- Admission at every breaker on a session's path, deepest first: within each breaker, sessions\n"
        "-- ordered by priority, urgency (least laxity_s first, unplanned last), then arrival, stay admitted\n"
        "-- while the running sum of their floors fits in its headroom and, on a breaker with a per-phase\n"
        "-- rating, the running sum of their floor currents on each grid phase they load fits in that\n"
        "-- phase's headroom_a; then those left out whose own floor fits in what is left get a second round\n"
        "-- over it in the same order; the others are paused. anc0..anc5\n"
        "-- are the session's ancestors by depth (anc0 = the site). session_fill fills the admitted;\n"
        "-- session_allocation sets the paused to 0. The levels at depth "
        f"{SPLIT_DEPTH} and below are session_admission_deep's.\n"
        "CREATE MATERIALIZED VIEW session_admission AS\n"
        "WITH\n"
        + ctes
        + "\nSELECT\n"
        + f"    {_cols(ADMIT_COLS, 'l.', 4)}\n"
        + "    x.ok AS admitted\n"
        + "FROM adm0 AS x\n"
        + "JOIN session_limits AS l ON l.session_id = x.session_id;\n"
    )


def _least(exprs: list[str]) -> str:
    """The smallest of ``exprs`` ignoring nulls, null when all are: ``LEAST``, which skips nulls in
    PostgreSQL, RisingWave (its ``least`` is variadic over the non-null arguments) and DuckDB; the
    embedded engine's SQLite adapter rewrites it so."""
    return "LEAST(" + ", ".join(exprs) + ")"


# The limits of a breaker in the fill: its grid phases (A, when it has limit_a) and its kW headroom.
# Per limit: (suffix, the breaker's headroom column, a member's load per kW of it (A or 1), is it a member).
LIMITS = [(p, f"h.headroom_a_{p}", f"x.a_per_kw * x.on_{p}", f"x.on_{p} = 1") for p in PHASES] + [
    ("kw", "h.headroom_kw", "1.0", "TRUE")
]
PASSES = 3
"""Passes of the fill at each breaker. Each saturates at least one more of its limits, and a session on a
saturated limit rises no further, so three (the grid phases; the kW limit holds every session) leave no
limit with spare current while a session below its extra could use it."""
FROZEN_TOL = 1e-6
"""How close to its extra (kW) a session's grant must be for it to count as there."""
LEVEL_TOL = 1e-9
"""How far apart two water levels (kW per weight) must be for one to hold a session below the other."""


def depth_cols(d: int) -> list[str]:
    """What every CTE of level ``d`` carries: :func:`fill_cols`, the breaker's label, the deeper levels'
    ``lam``/``bind``, the session's ``extra`` under them and the spare of each of the breaker's limits."""
    return fill_cols(d) + ["node_label", "lam", "bind", "extra"] + [f"spare_{c}" for c, *_ in LIMITS]


def pass_cols(d: int) -> list[str]:
    """:func:`depth_cols` and a pass's state: the grant ``g``, its level ``plam``, what set it ``pbind``
    and whether the session is ``frozen`` (rises no further at this breaker)."""
    return depth_cols(d) + ["g", "plam", "pbind", "frozen"]


def _groups() -> list[tuple[str, str]]:
    """The session sets whose largest extra per weight (``top_*``) tells which limits a pass fills: each
    limit's members and, for two grid phases, the sessions on both (the kW limit holds every session, so
    a pair with it is the phase's own set). ``(suffix, membership condition)``."""
    phases = [(c, member) for c, _, _, member in LIMITS if c != "kw"]
    pairs = [(f"{a}{b}", f"{ma} AND {mb}") for i, (a, ma) in enumerate(phases) for b, mb in phases[i + 1 :]]
    return [(c, member) for c, _, _, member in LIMITS] + pairs


def _top(c: str, other: str) -> str:
    """The ``top_*`` column over the sessions on both limit ``c`` and limit ``other``."""
    if c == other:
        return f"x.top_{c}"
    if "kw" in (c, other):
        return f"x.top_{other if c == 'kw' else c}"
    return f"x.top_{''.join(sorted((c, other), key=PHASES.index))}"


def _full(c: str) -> str:
    """Whether a pass fills limit ``c``: its level is below some extra per weight on it (so it binds), and
    no session on it is held lower by another of its limits (one whose level is below this one's and
    below the extra per weight of some session on both)."""
    held = " OR ".join(
        f"COALESCE(x.level_{o} < x.level_{c} - {LEVEL_TOL} AND x.level_{o} < {_top(c, o)} - {LEVEL_TOL}, FALSE)"
        for o, *_ in LIMITS
        if o != c
    )
    return f"COALESCE(x.level_{c} < x.top_{c} - {LEVEL_TOL}, FALSE) AND NOT ({held})"


def _pass(d: int, k: int, prev: str) -> list[str]:
    """Pass ``k`` of the fill at ``anc{d}``: the water level of each of its limits (each grid phase over
    the sessions loading it, counting a session's kW at ``a_per_kw`` A; the kW limit over all), in kW per
    weight, over the sessions not yet frozen, after what the frozen ones hold; a session rises to the
    lowest of its limits' levels within its extra, and is frozen for the next pass once at its extra or
    on a limit the pass fills. Pass 1 joins ``node_headroom``.

    Which limits a pass fills follows from the levels, without summing the grants (a window more per
    pass): a limit's level is the one at which its sessions' grants sum to its spare if each rises to it,
    so it is full unless one of them is held lower, by another of its limits whose level is below this
    one's and below that session's extra per weight; the largest extra per weight over the sessions on
    both (``top_*``, in the window of the levels) tells whether one is."""
    key = f"PARTITION BY x.site_id, x.anc{d}"
    first, last = k == 1, k == PASSES
    if first:
        source = f"{prev} AS x\n    LEFT JOIN node_headroom AS h ON h.node_id = x.anc{d}"
        carried = (
            f"{_cols(fill_cols(d))}\n        h.limited_by AS node_label,\n        x.lam,\n        x.bind,\n"
            f"        x.extra,\n        "
            + ",\n        ".join(
                f"{lim} - SUM({scale} * x.floor_kw) OVER ({key}) AS spare_{c}" for c, lim, scale, _ in LIMITS
            )
            + ",\n        x.extra AS g,\n        CAST(NULL AS DOUBLE PRECISION) AS plam,\n"
            "        CAST(NULL AS VARCHAR) AS pbind,\n        FALSE AS frozen"
        )
        frozen, avail = "FALSE", {c: f"{lim} - SUM({scale} * x.floor_kw) OVER ({key})" for c, lim, scale, _ in LIMITS}
    else:
        source, frozen = f"{prev} AS x", "x.frozen"
        carried = _cols(pass_cols(d))[:-1]
        avail = {
            c: f"x.spare_{c} - SUM(CASE WHEN {frozen} THEN {scale} * x.g ELSE 0 END) OVER ({key})"
            for c, _, scale, _ in LIMITS
        }
    wins = []
    for c, _, scale, member in LIMITS:
        # each member, taken as the first not to reach its extra (members in the order of their extra
        # per weight), gives a candidate level: what is left of the limit after the members before it,
        # over the weight from it on; the level is the largest (the closed form of the water level: see
        # the module docstring). The weight from it on is the total less the running sum before it: one
        # sort, not a second one descending. Only a member's is computed (its weight from it on is > 0).
        order = f"{key} ORDER BY x.extra / x.weight, x.session_id {RUNNING}"
        live = "" if first else f"CASE WHEN {frozen} THEN 0 ELSE "
        tail = "" if first else " END"
        cum = f"SUM({live}{scale} * x.extra{tail}) OVER ({order})"
        wfrom = (
            f"SUM({live}{scale} * x.weight{tail}) OVER ({key}) - SUM({live}{scale} * x.weight{tail}) OVER ({order})"
            f" + {scale} * x.weight"
        )
        wins.append(
            f"CASE WHEN {member} AND NOT {frozen} THEN ({avail[c]} - {cum} + {scale} * x.extra) / ({wfrom}) END"
            f" AS cand_{c}"
        )
    ctes = [
        f"win{d}_{k} AS (\n    SELECT\n        {carried},\n        "
        + ",\n        ".join(wins)
        + f"\n    FROM {source}\n)"
    ]
    levels = []
    for c, *_, member in LIMITS:
        outside = f"x.anc{d} IS NULL OR x.frozen OR NOT ({member}) OR x.spare_{c} IS NULL"
        levels.append(
            f"CASE WHEN {outside} THEN CAST(NULL AS DOUBLE PRECISION) ELSE MAX(x.cand_{c}) OVER ({key}) END AS lv_{c}"
        )
    if not last:  # for the next pass: each limit's level on every row (lv_* is null off the limit)
        levels += [f"MAX(x.cand_{c}) OVER ({key}) AS level_{c}" for c, *_ in LIMITS]
        levels += [
            f"MAX(CASE WHEN {member} AND NOT x.frozen THEN x.extra / x.weight END) OVER ({key}) AS top_{g}"
            for g, member in _groups()
        ]
    ctes.append(
        f"lvl{d}_{k} AS (\n    SELECT\n        {_cols(pass_cols(d))}\n        "
        + ",\n        ".join(levels)
        + f"\n    FROM win{d}_{k} AS x\n)"
    )
    low = _least([f"x.lv_{c}" for c, *_ in LIMITS])
    on_phase = " OR ".join(f"x.lv_{p} = {low}" for p in PHASES)
    state = (
        f"        CASE WHEN x.frozen THEN x.g WHEN {low} IS NULL THEN x.extra\n"
        f"            ELSE LEAST(x.extra, x.weight * {low}) END AS g,\n"
        f"        CASE WHEN x.frozen THEN x.plam ELSE {low} END AS plam,\n"
        f"        CASE WHEN x.frozen THEN x.pbind WHEN {on_phase} THEN x.anc{d} ELSE x.node_label END AS pbind"
    )
    if not last:
        on_full = " OR ".join(f"(({member}) AND {_full(c)})" for c, _, _, member in LIMITS)
        at_extra = f"{low} IS NULL OR x.weight * {low} >= x.extra - {FROZEN_TOL}"
        state += f",\n        x.frozen OR {at_extra} OR {on_full} AS frozen"
    ctes.append(f"fill{d}_{k} AS (\n    SELECT\n        {_cols(depth_cols(d))}\n{state}\n    FROM lvl{d}_{k} AS x\n)")
    return ctes


def _fill(d: int) -> list[str]:
    """Every pass at ``anc{d}``, then ``fill{d}``: the lowest level so far (``lam``), what set it (``bind``)
    and each session's extra under it (its grant at this breaker)."""
    ctes: list[str] = []
    prev = "admitted" if d == MAX_DEPTH else f"fill{d + 1}"
    for k in range(1, PASSES + 1):
        ctes += _pass(d, k, prev)
        prev = f"fill{d}_{k}"
    tighter = "x.plam IS NOT NULL AND (x.lam IS NULL OR x.plam < x.lam)"
    ctes.append(
        f"fill{d} AS (\n    SELECT\n        {_cols(fill_cols(d - 1))}\n"
        f"        CASE WHEN {tighter} THEN x.plam ELSE x.lam END AS lam,\n"
        f"        CASE WHEN {tighter} THEN x.pbind ELSE x.bind END AS bind,\n"
        f"        x.g AS extra\n"
        f"    FROM {prev} AS x\n)"
    )
    return ctes


def _admitted(where: str, d: int) -> str:
    """The admitted sessions of ``session_admission`` matching ``where``, as the fill starts them at level
    ``d`` (:func:`fill_cols`): no level yet (``lam``), bound by their cap, their whole extra to fill."""
    return (
        f"    SELECT\n        {_cols(fill_cols(d))}\n"
        "        CAST(NULL AS DOUBLE PRECISION) AS lam,\n"
        "        x.cap_binding AS bind,\n"
        "        x.cap_kw - x.floor_kw AS extra\n"
        "    FROM session_admission AS x\n"
        f"    WHERE x.admitted AND {where}"
    )


def render_fill_deep() -> str:
    """``session_fill_deep``: the fill at the breakers at depth :data:`SPLIT_DEPTH` and below, of the
    admitted sessions under them; per session what the levels above carry on with (:func:`fill_cols` of
    the level above, ``lam``, ``bind``, ``extra``)."""
    ctes = [f"admitted AS (\n{_admitted(f'x.anc{SPLIT_DEPTH} IS NOT NULL', MAX_DEPTH)}\n)"]
    for d in range(MAX_DEPTH, SPLIT_DEPTH - 1, -1):
        ctes += _fill(d)
    return (
        GENERATED
        + f"-- The fill (session_fill) at the breakers at depth {SPLIT_DEPTH} and below, of the admitted sessions under them:\n"
        "-- a site's sessions whose path is shorter skip these levels (each level's windows would sort\n"
        "-- every session of the site), and session_fill carries on from here for the others.\n"
        "CREATE MATERIALIZED VIEW session_fill_deep AS\n"
        "WITH\n"
        + ",\n".join(ctes)
        + f"\nSELECT\n    {_cols(fill_cols(SPLIT_DEPTH - 1), indent=4)}\n    x.lam,\n    x.bind,\n    x.extra\n"
        + f"FROM fill{SPLIT_DEPTH} AS x;\n"
    )


def render_fill() -> str:
    """``session_fill``: the admitted sessions of ``session_admission`` with ``allocated_kw`` and
    ``binding``. The levels at depth :data:`SPLIT_DEPTH` and below come from ``session_fill_deep``."""
    ctes = [
        f"fill{SPLIT_DEPTH} AS (\n{_admitted(f'x.anc{SPLIT_DEPTH} IS NULL', SPLIT_DEPTH - 1)}\n    UNION ALL\n"
        f"    SELECT\n        {_cols(fill_cols(SPLIT_DEPTH - 1))}\n        x.lam,\n        x.bind,\n        x.extra\n"
        "    FROM session_fill_deep AS x\n)"
    ]
    for d in range(SPLIT_DEPTH - 1, -1, -1):
        ctes += _fill(d)
    return (
        GENERATED
        + "-- Water-filling of the admitted sessions (session_admission): each gets its floor plus a weighted\n"
        "-- max-min fair share of the spare headroom (headroom minus admitted floors) up to its cap, under\n"
        "-- every breaker on its path, deepest level first; at each breaker its kW limit and, with a current\n"
        "-- rating, its grid phases R, S, T (each over the sessions loading it, in A) side by side, in three\n"
        "-- passes: a session rises to the lowest of its limits' levels, and one at its extra or on a full\n"
        "-- limit is frozen for the next pass, so current one limit leaves unused goes to the others on it.\n"
        "-- binding: the cap, or the breaker (its node id for a phase, its limited_by label for kW: node id,\n"
        f"-- 'dr' or a cap rule id) whose water level stopped it. The levels at depth {SPLIT_DEPTH} and below are\n"
        "-- session_fill_deep's.\n"
        "CREATE MATERIALIZED VIEW session_fill AS\n"
        "WITH\n"
        + ",\n".join(ctes)
        + "\nSELECT\n"
        + f"    {_cols(PASSTHROUGH, prefix='a.', indent=4)}\n"
        + "    a.floor_kw + CASE WHEN x.lam IS NULL THEN a.cap_kw - a.floor_kw\n"
        + "        ELSE LEAST(a.cap_kw - a.floor_kw, x.weight * x.lam) END AS allocated_kw,\n"
        + "    CASE WHEN x.lam IS NULL OR x.weight * x.lam >= a.cap_kw - a.floor_kw - 1e-9 THEN a.cap_binding\n"
        + "        ELSE x.bind END AS binding\n"
        + "FROM fill0 AS x\n"
        + "JOIN session_admission AS a ON a.session_id = x.session_id;\n"
    )


def render_allocation() -> str:
    """``session_allocation``: the filled sessions and the paused ones (at 0, bound by their pause rule or
    ``'paused'``)."""
    return (
        GENERATED + "-- The allocation per managed session with fresh telemetry: admitted sessions at their fill\n"
        "-- (session_fill), paused ones at 0 (session_admission), binding their pause rule or 'paused'.\n"
        "CREATE MATERIALIZED VIEW session_allocation AS\n"
        + f"SELECT\n    {_cols(PASSTHROUGH, indent=4)}\n"
        + "    x.allocated_kw,\n"
        + "    x.binding\n"
        + "FROM session_fill AS x\n"
        + "UNION ALL\n"
        + f"SELECT\n    {_cols(PASSTHROUGH, indent=4)}\n"
        + "    0.0 AS allocated_kw,\n"
        + "    COALESCE(x.paused_by, 'paused') AS binding\n"
        + "FROM session_admission AS x\n"
        + "WHERE NOT x.admitted;\n"
    )


def render() -> dict[str, str]:
    """Every generated view: ``{file name under sql/views/: SQL}``."""
    return {
        "session_admission_deep.sql": render_admission_deep(),
        "session_admission.sql": render_admission(),
        "session_fill_deep.sql": render_fill_deep(),
        "session_fill.sql": render_fill(),
        "session_allocation.sql": render_allocation(),
    }


def write(views_dir: str | Path) -> list[Path]:
    """Write the generated views into ``views_dir``; returns the paths written."""
    paths = []
    for name, text in render().items():
        path = Path(views_dir) / name
        path.write_text(text)
        paths.append(path)
    return paths


if __name__ == "__main__":
    from pipeline.sqlmodel.objects import DEFAULT_SQL_DIR

    for written in write(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SQL_DIR / "views"):
        print(written)
