"""The migration commands as plain functions (Alembic-style): ``plan``, ``apply``, ``status``, ``diff``,
``lint``. The click layer (:mod:`pipeline.cli.migrate`) only parses options and renders what these
return; tests call them directly.

``target`` is a ``postgresql://`` DSN (RisingWave; Postgres in tests) or a DuckDB file path (embedded).
Every function raises :class:`pipeline.sqlmodel.objects.SqlError` when ``sql/`` does not load and
:class:`MigrateError` when the target cannot be used; ``apply`` also raises :class:`LockHeld`.
"""

from __future__ import annotations

import difflib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipeline.migrate.changes import classify, parse_source, pretty
from pipeline.migrate.kafka import ConnectorSettings, is_kafka, redact_text
from pipeline.migrate.lint import lint
from pipeline.migrate.model import (
    CHANGED,
    DROP,
    IN_SYNC,
    MISSING,
    NOT_APPLIED,
    UNKNOWN_TO_SQL,
    UNTRACKED,
    ApplyResult,
    MigrateError,
    ObjectDiff,
    Plan,
    Status,
    StatusEntry,
    Step,
)
from pipeline.migrate.planner import build_plan
from pipeline.migrate.targets import DEFAULT_LOCK_TTL_S, Target, is_wire, open_target
from pipeline.migrate.targets.pg_errors import describe
from pipeline.sqlmodel.objects import DEFAULT_SQL_DIR, load_objects
from pipeline.transport.config import KafkaSettings

StepCallback = Callable[[int, Step, float, "str | None"], None]
F = TypeVar("F", bound=Callable[..., Any])


def _database_errors(func: F) -> F:
    """The commands' boundary: a database or file error becomes a :class:`MigrateError` whose message is
    the server's whole answer (message, detail, hint: :func:`describe`), so callers catch one error."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import duckdb
        import psycopg

        try:
            return func(*args, **kwargs)
        except (psycopg.Error, duckdb.Error) as exc:
            raise MigrateError(describe(exc)) from exc
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise MigrateError(f"{where}{exc.strerror or exc}") from exc

    return wrapper  # type: ignore[return-value]


def _settings(target: str, kafka: ConnectorSettings | None) -> ConnectorSettings:
    """``kafka``, or for a RisingWave target the Kafka settings' defaults (the CLI passes the deployment's,
    :func:`pipeline.cli.migrate.connector_settings`)."""
    if kafka is not None:
        return kafka
    return ConnectorSettings.from_kafka(KafkaSettings()) if is_wire(target) else ConnectorSettings()


@_database_errors
def plan(
    target: str,
    sql_dir: str | Path = DEFAULT_SQL_DIR,
    *,
    allow_drop: bool = False,
    kafka: ConnectorSettings | None = None,
) -> Plan:
    """The steps ``apply`` would run now. Reads the target, never writes to it (an embedded file that
    does not exist is not created)."""
    objects = load_objects(sql_dir)
    with open_target(target, _settings(target, kafka), read_only=True) as t:
        return build_plan(objects, t.read_catalog(), t.list_objects(), t, allow_drop=allow_drop)


def _check_settings(plan_: Plan, target: Target) -> None:
    if target.engine != "risingwave" or target.kafka.bootstrap_servers:
        return
    needing = [s.name for s in plan_.steps if s.action != DROP and s.obj is not None and is_kafka(s.obj)]
    if needing:
        raise MigrateError(
            f"no Kafka bootstrap for {', '.join(needing)}: pass --kafka-bootstrap or set "
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS"
        )


@_database_errors
def apply(
    target: str,
    sql_dir: str | Path = DEFAULT_SQL_DIR,
    *,
    allow_drop: bool = False,
    yes: bool = False,
    confirm: Callable[[Plan], bool] | None = None,
    kafka: ConnectorSettings | None = None,
    owner: str | None = None,
    lock_ttl_s: float = DEFAULT_LOCK_TTL_S,
    on_step: StepCallback | None = None,
) -> ApplyResult:
    """Bring ``target`` to ``sql_dir``: take the lock, plan afresh under it, confirm destructive steps
    (``yes``, or ``confirm(plan)`` returning true), then run the steps in order, recording each in the
    catalog as it succeeds. Stops at the first failed step: the result says what was applied, what
    failed (with the database's error: message, detail and hint, :func:`pipeline.migrate.targets.pg_errors.describe`)
    and what was not applied.

    ``on_step(index, step, seconds, error)`` is called after each step. Raises :class:`LockHeld` when
    another migrator holds the lock, and :class:`MigrateError` (nothing applied) when destructive steps
    are not confirmed or RisingWave connectors lack a Kafka bootstrap.
    """
    objects = load_objects(sql_dir)
    with open_target(target, _settings(target, kafka)) as t, t.locked(owner, lock_ttl_s) as me:
        plan_ = build_plan(objects, t.read_catalog(), t.list_objects(), t, allow_drop=allow_drop)
        if plan_.empty:
            return ApplyResult(plan_, ())
        _check_settings(plan_, t)
        if plan_.destructive and not yes and not (confirm is not None and confirm(plan_)):
            raise MigrateError(
                f"not applied: the plan has {len(plan_.destructive)} destructive step(s) and was not "
                "confirmed (pass --yes)"
            )
        applied: list[Step] = []
        for index, step in enumerate(plan_.steps):
            try:
                t.refresh_lock(me, lock_ttl_s)  # also proves the lock is still ours
            except MigrateError as exc:
                return ApplyResult(plan_, tuple(applied), step, str(exc))
            started = time.perf_counter()
            try:
                t.run_step(step)
            except t.errors as exc:
                error = redact_text(describe(exc), t.kafka)
                if on_step:
                    on_step(index, step, time.perf_counter() - started, error)
                return ApplyResult(plan_, tuple(applied), step, error)
            applied.append(step)
            if on_step:
                on_step(index, step, time.perf_counter() - started, None)
        return ApplyResult(plan_, tuple(applied))


def _existing(target: str) -> None:
    """A read of an embedded target needs its file: a typo must not read as 'nothing applied yet'."""
    if target and not is_wire(target) and not Path(target).exists():
        raise MigrateError(f"{target}: no such DuckDB file (apply creates it; plan shows what it would create)")


@_database_errors
def status(target: str, sql_dir: str | Path = DEFAULT_SQL_DIR) -> Status:
    """Drift between ``sql_dir`` and ``target``, one entry per object (``sql/`` order, then the rest).
    Reads only. Raises :class:`MigrateError` for an embedded target whose file does not exist."""
    _existing(target)
    objects = load_objects(sql_dir)
    with open_target(target, read_only=True) as t:
        catalog, existing = t.read_catalog(), t.list_objects()
        display, engine, materializes = t.display, t.engine, t.materializes
    on_target = existing or {}
    entries: list[StatusEntry] = []
    for obj in objects:
        entry = catalog.get(obj.name)
        if entry is None:
            state = (
                StatusEntry(obj.name, obj.kind, UNTRACKED, "on the target, not applied by pipeline migrate")
                if obj.name in on_target
                else StatusEntry(obj.name, obj.kind, NOT_APPLIED)
            )
        elif entry.hash != obj.hash:
            state = StatusEntry(obj.name, obj.kind, CHANGED, str(classify(entry.kind, entry.source, obj)))
        elif existing is not None and materializes(obj.kind) and obj.name not in on_target:
            state = StatusEntry(obj.name, obj.kind, MISSING, "in the catalog, not on the target")
        else:
            state = StatusEntry(obj.name, obj.kind, IN_SYNC)
        entries.append(state)
    names = {o.name for o in objects}
    for name, entry in sorted(catalog.items()):
        if name not in names:
            when = f" on {entry.applied_at:%Y-%m-%d %H:%M}Z" if entry.applied_at else ""
            entries.append(StatusEntry(name, entry.kind, UNKNOWN_TO_SQL, f"applied{when}; apply --allow-drop drops it"))
    for name, kind in sorted(on_target.items()):
        if name not in names and name not in catalog:
            entries.append(StatusEntry(name, kind, UNKNOWN_TO_SQL, "on the target, never applied by pipeline migrate"))
    return Status(display, engine, tuple(entries))


@_database_errors
def diff(target: str, name: str, sql_dir: str | Path = DEFAULT_SQL_DIR) -> ObjectDiff:
    """Object ``name`` as applied on ``target`` against ``sql_dir``: normalized SQL on both sides (so
    whitespace, comments and keyword case never show), a unified diff, and the change category.

    Raises :class:`MigrateError` when ``name`` is neither in ``sql/`` nor applied.
    """
    objects = {o.name: o for o in load_objects(sql_dir)}
    with open_target(target, read_only=True) as t:
        entry = t.read_catalog().get(name)
        display = t.display
    obj = objects.get(name)
    if obj is None and entry is None:
        raise MigrateError(f"{name}: not in {sql_dir} and not applied on {display}")
    desired = pretty(obj.ast) if obj else ""
    applied_ast = parse_source(entry.source) if entry else None
    applied = pretty(applied_ast) if applied_ast is not None else (entry.source.strip() if entry else "")
    change = None
    if obj is None:
        state = UNKNOWN_TO_SQL
    elif entry is None:
        state = NOT_APPLIED
    elif entry.hash == obj.hash:
        state = IN_SYNC
    else:
        state, change = CHANGED, classify(entry.kind, entry.source, obj)
    when = f"applied {entry.applied_at:%Y-%m-%d %H:%M}Z" if entry and entry.applied_at else "not applied"
    unified = "\n".join(
        difflib.unified_diff(
            applied.splitlines(),
            desired.splitlines(),
            fromfile=f"{name} ({when})",
            tofile=f"{name} (sql/)" if obj else f"{name} (not in sql/)",
            lineterm="",
        )
    )
    return ObjectDiff(name, state, applied, desired, unified, change)


__all__ = ["apply", "diff", "lint", "plan", "status"]
