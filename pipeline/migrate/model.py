"""The migrator's plain data: steps, plans, catalog rows, results, and its errors.

Everything the commands return is one of these dataclasses, so tests and other tools read results as
data (``to_dict`` gives the JSON form) and the click layer only renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.contracts.errors import PipelineError
from pipeline.sqlmodel.objects import SqlObject

CREATE, DROP, RECREATE = "create", "drop", "recreate"
BREAKING, NON_BREAKING, UNKNOWN = "breaking", "non-breaking", "unknown"


class MigrateError(PipelineError):
    """A migration cannot proceed (bad target, missing setting, refused confirmation); one-line message."""


class LockHeld(MigrateError):
    """Another migrator holds the target's lock. ``owner`` and ``expires_at`` say whose and until when."""

    def __init__(self, owner: str, acquired_at: datetime | None, expires_at: datetime | None) -> None:
        self.owner = owner
        self.acquired_at = acquired_at
        self.expires_at = expires_at
        since = f" since {acquired_at:%Y-%m-%dT%H:%M:%SZ}" if acquired_at else ""
        until = f", expires {expires_at:%Y-%m-%dT%H:%M:%SZ}" if expires_at else ""
        super().__init__(f"target is locked by another migrator ({owner}{since}{until}); try again later")


@dataclass(frozen=True)
class Change:
    """How an object changed between the applied and the desired SQL.

    ``category`` is ``breaking``, ``non-breaking`` or ``unknown``; ``details`` are short human lines
    (e.g. ``"adds column(s) at the end: d"``), taken from sqlglot's diff where it can tell.
    """

    category: str
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.category + (f": {'; '.join(self.details)}" if self.details else "")


@dataclass(frozen=True)
class CatalogEntry:
    """One row of the target's catalog table: an object this tool applied.

    ``hash`` is the normalized-SQL hash of the ``sql/`` object; ``sql`` the statement that ran (secrets
    redacted; empty for an embedded sink); ``source`` the ``sql/`` file's text as applied;
    ``depends_on`` the object's references when it was applied.
    """

    name: str
    kind: str
    hash: str
    depends_on: tuple[str, ...]
    sql: str
    source: str
    applied_at: datetime | None


@dataclass(frozen=True)
class Step:
    """One step of a plan: ``action`` is ``create``, ``drop`` or ``recreate`` (the create half of a drop
    and create); ``sql`` is what runs, secrets redacted (empty when nothing runs, e.g. an embedded sink);
    ``change`` says how the object itself changed, for changed objects only."""

    action: str
    name: str
    kind: str
    reason: str
    sql: str
    change: Change | None = None
    obj: SqlObject | None = field(default=None, repr=False, compare=False)
    statement: str = field(default="", repr=False, compare=False)

    @property
    def destructive(self) -> bool:
        return self.action == DROP

    def label(self) -> str:
        return f"{self.action} {self.kind} {self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "name": self.name,
            "kind": self.kind,
            "reason": self.reason,
            "change": self.change.category if self.change else None,
            "change_details": list(self.change.details) if self.change else [],
            "destructive": self.destructive,
            "sql": self.sql,
        }


@dataclass(frozen=True)
class Plan:
    """An ordered list of steps for one target: drops (dependents first), then creates in dependency
    order. ``kept`` names objects removed from ``sql/`` that stay because drops were not allowed."""

    target: str
    engine: str
    steps: tuple[Step, ...]
    kept: tuple[str, ...] = ()

    @property
    def destructive(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.destructive)

    @property
    def empty(self) -> bool:
        return not self.steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "engine": self.engine,
            "steps": [s.to_dict() for s in self.steps],
            "destructive_steps": len(self.destructive),
            "kept": list(self.kept),
        }


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` did: the plan, the steps applied (in order), the step that failed and its error
    (``None`` when all went through) and the steps not applied (the failed one and those after it)."""

    plan: Plan
    applied: tuple[Step, ...]
    failed: Step | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def not_applied(self) -> tuple[Step, ...]:
        return self.plan.steps[len(self.applied) :]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.plan.target,
            "engine": self.plan.engine,
            "ok": self.ok,
            "applied": [s.label() for s in self.applied],
            "failed": self.failed.label() if self.failed else None,
            "error": self.error,
            "not_applied": [s.label() for s in self.not_applied],
        }


IN_SYNC = "in sync"
NOT_APPLIED = "not applied"
CHANGED = "changed"
UNTRACKED = "untracked"
MISSING = "missing on target"
UNKNOWN_TO_SQL = "unknown to sql/"


@dataclass(frozen=True)
class StatusEntry:
    """One object's state: ``in sync``; ``not applied`` (in ``sql/`` only); ``changed`` (applied, hash
    differs; ``detail`` says how); ``untracked`` (in ``sql/`` and on the target, not in the catalog);
    ``missing on target`` (in the catalog, gone from the target); ``unknown to sql/`` (applied or on the
    target, not in ``sql/``)."""

    name: str
    kind: str
    state: str
    detail: str = ""


@dataclass(frozen=True)
class Status:
    """Drift between ``sql/`` and a target; ``clean`` when every entry is in sync."""

    target: str
    engine: str
    entries: tuple[StatusEntry, ...]

    @property
    def drift(self) -> tuple[StatusEntry, ...]:
        return tuple(e for e in self.entries if e.state != IN_SYNC)

    @property
    def clean(self) -> bool:
        return not self.drift

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "engine": self.engine,
            "clean": self.clean,
            "objects": [e.__dict__ for e in self.entries],
        }


@dataclass(frozen=True)
class ObjectDiff:
    """``diff OBJECT``: the applied and desired SQL (normalized, pretty), a unified diff of the two, the
    change category and sqlglot's edit summary. ``applied`` or ``desired`` is empty when absent."""

    name: str
    state: str
    applied: str
    desired: str
    unified: str
    change: Change | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "change": self.change.category if self.change else None,
            "change_details": list(self.change.details) if self.change else [],
            "unified": self.unified,
        }


@dataclass(frozen=True)
class LintIssue:
    """A reason ``sql/`` cannot run: ``path:line: [code] message``."""

    path: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.code}] {self.message}"


@dataclass(frozen=True)
class PlanSize:
    """How big a view's (or sink's) streaming plan gets: ``scans`` is the number of relation scans once
    every CTE and plain view is expanded at each place it is read, as RisingWave plans them; ``repeated``
    names the CTEs and plain views read more than once, with their read counts, costliest first."""

    name: str
    kind: str
    path: str
    line: int
    scans: int
    repeated: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "scans": self.scans, "path": self.path, "line": self.line}
