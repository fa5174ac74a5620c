"""Classify a changed object as breaking, non-breaking or unknown, in the manner of SQLMesh.

Change *detection* is by normalized-SQL hash (:attr:`pipeline.sqlmodel.objects.SqlObject.hash`). This module
only says what kind of change it is, for the plan and ``diff``: RisingWave recreates a changed view and
its dependents either way, but a reviewer wants to know whether downstream rows can change.

* **non-breaking**: the new object is the old one plus output columns appended at the end (a view's
  outermost projection, in every branch of a UNION; a table's or source's column list). Existing
  columns and rows are unchanged.
* **breaking**: anything else sqlglot's diff reports (removed, moved or updated nodes, or inserts
  outside the appended columns), or a change of kind.
* **unknown**: the applied SQL is not recorded or no longer parses.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.diff import Insert, Keep, Move, Remove, Update, diff
from sqlglot.errors import ParseError

from pipeline.migrate.model import BREAKING, NON_BREAKING, UNKNOWN, Change
from pipeline.sqlmodel.objects import DIALECT, SqlObject

MAX_DETAILS = 6


def parse_source(source: str) -> exp.Create | None:
    """The single CREATE statement in ``source`` (a ``sql/`` file's text), or ``None`` if it does not
    parse as one."""
    try:
        statements = [s for s in sqlglot.parse(source, read=DIALECT) if s is not None]
    except ParseError:
        return None
    if len(statements) != 1 or not isinstance(statements[0], exp.Create):
        return None
    return statements[0]


def pretty(ast: exp.Expr) -> str:
    """Normalized, pretty RisingWave SQL without comments: what change detection compares."""
    return ast.sql(DIALECT, pretty=True, normalize=True, comments=False)


def _strip(ast: exp.Create) -> exp.Create:
    """A copy with comments removed and identifiers normalized, so equality ignores both.

    Raises :class:`sqlglot.errors.ParseError` when the normalized SQL does not read back as a CREATE
    statement."""
    copy = ast.copy()
    for node in copy.walk():
        node.comments = None
    stripped = sqlglot.parse_one(copy.sql(DIALECT, normalize=True, comments=False), read=DIALECT)
    if not isinstance(stripped, exp.Create):
        raise ParseError(f"{_short(ast)} does not read back as a CREATE statement")
    return stripped


def _outputs(query: exp.Expr | None) -> list[exp.Select]:
    """The selects whose projections are the query's output columns (every branch of a set operation)."""
    if isinstance(query, exp.Select):
        return [query]
    if isinstance(query, exp.SetOperation):
        return _outputs(query.left) + _outputs(query.right)
    return []


def _column_lists(create: exp.Create) -> list[list[exp.Expr]]:
    """The output column lists of an object: a view's projections, a table's or source's column defs."""
    if isinstance(create.this, exp.Schema):
        return [[c for c in create.this.expressions if isinstance(c, exp.ColumnDef)]]
    return [list(s.expressions) for s in _outputs(create.expression)]


def _appended(old: exp.Create, new: exp.Create) -> list[str] | None:
    """The names of columns ``new`` appends to ``old``, if that is the only difference; else ``None``."""
    old_lists, new_lists = _column_lists(old), _column_lists(new)
    if not old_lists or len(old_lists) != len(new_lists):
        return None
    counts = {len(n) - len(o) for o, n in zip(old_lists, new_lists, strict=True)}
    if len(counts) != 1 or min(counts) <= 0:
        return None
    added = counts.pop()
    truncated = new.copy()
    for columns in _column_lists(truncated):
        for extra in columns[len(columns) - added :]:
            extra.pop()
    if truncated != old:
        return None
    return [c.alias_or_name or c.sql(DIALECT) for c in new_lists[0][len(old_lists[0]) :]]


def _short(node: exp.Expr) -> str:
    text = node.sql(DIALECT, comments=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _top_edits(old: exp.Expr, new: exp.Expr) -> list[str]:
    """sqlglot's edit script as short lines: only the outermost edited nodes are listed (an inserted
    expression's children are not listed again), and a removal and an insertion under the same matched
    parent read as one change of that parent (``changes a > 1 to a > 2``)."""
    edits = diff(old, new)
    kept = {id(e.source): e.target for e in edits if isinstance(e, Keep)}
    changed = [e for e in edits if not isinstance(e, Keep)]
    inserted = {id(e.expression) for e in changed if isinstance(e, Insert)}
    removed = {id(e.expression) for e in changed if isinstance(e, Remove)}

    def outermost(node: exp.Expr, ids: set[int]) -> bool:
        parent = node.parent
        while parent is not None:
            if id(parent) in ids:
                return False
            parent = parent.parent
        return True

    out: list[str] = []
    paired: set[int] = set()
    for edit in changed:
        if isinstance(edit, Remove) and outermost(edit.expression, removed):
            parent = edit.expression.parent
            target = kept.get(id(parent)) if parent is not None else None
            if (
                parent is not None
                and target is not None
                and any(isinstance(e, Insert) and e.expression.parent is target for e in changed)
            ):
                line = f"changes {_short(parent)} to {_short(target)}"
                paired.add(id(target))
                if line not in out:
                    out.append(line)
            else:
                out.append(f"removes {_short(edit.expression)}")
        elif isinstance(edit, Insert) and outermost(edit.expression, inserted):
            if id(edit.expression.parent) not in paired:
                out.append(f"inserts {_short(edit.expression)}")
        elif isinstance(edit, Update):
            out.append(f"changes {_short(edit.source)} to {_short(edit.target)}")
        elif isinstance(edit, Move):
            out.append(f"moves {_short(edit.source)}")
    return out


def classify(applied_kind: str | None, applied_source: str | None, obj: SqlObject) -> Change:
    """How ``obj`` (the desired object) differs from what was applied (its kind and ``sql/`` text).

    Returns a :class:`Change`; never raises for unparseable input (that is ``unknown``).
    """
    if not applied_source:
        return Change(UNKNOWN, ("the applied SQL is not recorded",))
    old_ast = parse_source(applied_source)
    if old_ast is None:
        return Change(UNKNOWN, ("the applied SQL no longer parses",))
    if applied_kind and applied_kind != obj.kind:
        return Change(BREAKING, (f"kind changes from {applied_kind} to {obj.kind}",))
    try:
        old, new = _strip(old_ast), _strip(obj.ast)
    except ParseError:
        return Change(UNKNOWN, ("the SQL does not round-trip through sqlglot",))
    if old == new:
        return Change(NON_BREAKING, ("no semantic change",))
    appended = _appended(old, new)
    if appended is not None:
        return Change(NON_BREAKING, (f"adds column(s) at the end: {', '.join(appended)}",))
    edits = _top_edits(old, new)
    details = edits[:MAX_DETAILS]
    if len(edits) > MAX_DETAILS:
        details.append(f"and {len(edits) - MAX_DETAILS} more edit(s)")
    return Change(BREAKING, tuple(details) or ("the statement changes",))
