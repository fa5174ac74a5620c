"""``pipeline migrate lint``: reject what cannot run, with file and line, before anything is applied.

Unlike :func:`pipeline.sqlmodel.objects.load_objects`, which stops at the first problem, lint reads every file
and reports every problem it finds:

* ``parse``: the file is not exactly one CREATE statement in sqlglot's ``risingwave`` dialect (or
  sqlglot only kept it as an unparsed command);
* ``duplicate``: two files create the same name; ``unknown-ref``: a reference to no object in ``sql/``;
  ``cycle``: a dependency cycle;
* ``streaming``: what RisingWave cannot maintain in a materialized view: recursive CTEs, ``NOW()`` (or
  ``CURRENT_TIMESTAMP``) outside ``WHERE``/``HAVING`` (its only use is a temporal filter), random
  functions;
* ``connector``: a Kafka table, source or sink without a topic; an upsert table not keyed by the message
  key (``INCLUDE KEY AS k`` with ``PRIMARY KEY (k)``, k not declared as well:
  :func:`pipeline.sqlmodel.objects.upsert_key_problem`); an upsert sink without ``primary_key``;
* ``plan-size``: a view whose streaming plan would be too big. RisingWave plans a CTE (and a plain,
  non-materialized view) anew at every place it is read, so a CTE read twice doubles the plan below it
  and a chain of such CTEs grows exponentially (an allocation written that way printed a 272,556-line
  EXPLAIN on RisingWave 2.8 and outgrew 19 GB while being created). Lint counts, per view, the relation
  scans with every CTE and plain view expanded at each reference (:func:`plan_sizes`; tables, sources and
  materialized views count 1) and rejects a count above :data:`SCAN_BUDGET`. Read a CTE once, or make
  it a materialized view, which RisingWave reads as stored rows;
* ``embedded``: what the embedded engine cannot run: no DuckDB form (sqlglot cannot transpile it, or
  DuckDB rejects the transpiled DDL), or a topic without a contract in :mod:`pipeline.contracts.topics`.
"""

from __future__ import annotations

from collections.abc import Iterable
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError

from pipeline.contracts.topics import TOPICS
from pipeline.migrate.kafka import is_kafka
from pipeline.migrate.model import LintIssue, PlanSize
from pipeline.migrate.targets.embedded import embedded_statements
from pipeline.sqlmodel.objects import DEFAULT_SQL_DIR, DIALECT, SqlError, SqlObject, parse_file, upsert_key_problem

#: The most relation scans a view may expand to (see ``plan-size`` above). Every view of sql/ is within it
#: (the largest, session_limits, is 71; the allocation views 8 or less); the allocation written as one
#: view whose levels read their CTEs twice was 647.
SCAN_BUDGET = 100


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


def _first_line(text: str) -> int:
    """The line of the first token (the CREATE keyword, after leading comments)."""
    try:
        tokens = sqlglot.tokenize(text, read=DIALECT)
    except SqlglotError:
        return 1
    return tokens[0].line if tokens else 1


def _line(node: exp.Expr, default: int) -> int:
    """The source line of ``node``, from its own position or, failing that, the nearest enclosing
    expression that has one."""
    current: exp.Expr | None = node
    while current is not None:
        lines = [n.meta["line"] for n in current.walk() if "line" in n.meta]
        if lines:
            return min(lines)
        current = current.parent
    return default


def _is_now(node: exp.Expr) -> bool:
    return isinstance(node, exp.CurrentTimestamp) or (isinstance(node, exp.Anonymous) and node.name.upper() == "NOW")


def _streaming(obj: SqlObject, line: int) -> Iterable[tuple[int, str]]:
    body = obj.ast.expression
    if body is None:
        return
    for with_ in body.find_all(exp.With):
        if with_.args.get("recursive"):
            yield _line(with_, line), "recursive CTE: RisingWave cannot maintain WITH RECURSIVE incrementally"
    for node in body.walk():
        if _is_now(node):
            clause = node.find_ancestor(exp.Where, exp.Having, exp.Select)
            if not isinstance(clause, (exp.Where, exp.Having)):
                yield _line(node, line), "NOW() outside WHERE/HAVING: RisingWave allows it only as a temporal filter"
        elif isinstance(node, exp.Rand):
            yield _line(node, line), "random(): a materialized view must be deterministic"


def _connector(obj: SqlObject) -> Iterable[str]:
    if not is_kafka(obj):
        return
    if not obj.topic:
        yield f"a Kafka {obj.kind} needs topic = '...' in its WITH clause"
    problem = upsert_key_problem(obj)
    if problem:
        yield problem
    if obj.kind == "sink" and obj.format == "upsert" and "primary_key" not in obj.properties:
        yield "an upsert sink needs primary_key = '...' in its WITH clause"


def _embedded_contract(obj: SqlObject) -> Iterable[str]:
    if obj.kind in ("table", "source", "sink") and obj.topic and obj.topic not in TOPICS:
        yield f"topic {obj.topic!r} has no contract in pipeline.contracts.topics, so the embedded engine refuses it"
    if obj.kind == "sink" and not obj.primary_key:
        yield "the embedded engine needs a sink's primary_key to emit upserts and tombstones"


def _embedded_ddl(obj: SqlObject) -> list[str]:
    """The DuckDB statements that prove ``obj`` runs embedded (a sink's query as a view)."""
    if obj.kind == "sink":
        query = obj.ast.expression.sql("duckdb", unsupported_level=ErrorLevel.RAISE)
        return [f"CREATE VIEW {obj.name} AS {query}"]
    if obj.kind in ("materialized_view", "view"):
        obj.ast.expression.sql("duckdb", unsupported_level=ErrorLevel.RAISE)
    return embedded_statements(obj)


def _scans(node: exp.Expression, env: dict[str, int], reads: dict[str, tuple[int, int]]) -> int:
    """Relation scans under ``node`` with every name in ``env`` (CTEs in scope, plain views) expanded to
    its own count at each reference; ``reads`` gets, per such name, its references as written and its
    own count."""
    if isinstance(node, exp.Table):
        if node.name in env:
            reads[node.name] = (reads.get(node.name, (0, 0))[0] + 1, env[node.name])
            return env[node.name]
        return 1
    local = env
    with_ = node.args.get("with_") or node.args.get("with")
    if isinstance(with_, exp.With):
        local = dict(env)
        for cte in with_.expressions:  # each CTE sees the ones before it (no recursive CTEs here: see streaming)
            local[cte.alias_or_name] = _scans(cte.this, local, reads)
    total = 0
    for value in node.args.values():
        if value is with_:
            continue
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, exp.Expression):
                total += _scans(child, local, reads)
    return total


def _plan_sizes(order: list[str], objects: dict[str, SqlObject], lines: dict[str, int], root: Path) -> list[PlanSize]:
    plain_views: dict[str, int] = {}
    out: list[PlanSize] = []
    for name in order:
        obj = objects[name]
        body = obj.ast.expression
        if obj.kind not in ("materialized_view", "view", "sink") or body is None:
            continue
        reads: dict[str, tuple[int, int]] = {}
        scans = _scans(body, plain_views, reads)
        if obj.kind == "view":
            plain_views[name] = scans
        costliest = sorted(
            ((n, k, size) for n, (k, size) in reads.items() if k > 1), key=lambda r: (-r[1] * r[2], r[0])
        )
        repeated = tuple((n, k) for n, k, _ in costliest)
        out.append(PlanSize(name, obj.kind, _display(obj.path, root), lines[name], scans, repeated))
    return out


def _plan_size_issue(size: PlanSize) -> str:
    message = (
        f"{size.scans} relation scans (budget {SCAN_BUDGET}) once every CTE and plain view is expanded "
        "where it is read, as RisingWave plans them"
    )
    if size.repeated:
        shown = ", ".join(f"{n} ({k}x)" for n, k in size.repeated[:6])
        message += f"; read more than once: {shown}{', ...' if len(size.repeated) > 6 else ''}"
    return message + "; read each once, or make it a materialized view"


def lint(sql_dir: str | Path = DEFAULT_SQL_DIR) -> list[LintIssue]:
    """Every problem in ``sql_dir`` (``*.sql``, recursively), sorted by file and line; empty when all of
    it can run on RisingWave and on the embedded engine. Raises :class:`SqlError` if ``sql_dir`` is not a
    directory."""
    return _lint(sql_dir)[0]


def plan_sizes(sql_dir: str | Path = DEFAULT_SQL_DIR) -> list[PlanSize]:
    """Per view and sink of ``sql_dir``, in dependency order: its relation scans with every CTE and plain
    view expanded at each reference (the ``plan-size`` rule's measure). Files that do not load, and
    objects in a dependency cycle, are left out (``lint`` reports them). Raises :class:`SqlError` if
    ``sql_dir`` is not a directory."""
    return _lint(sql_dir)[1]


def _lint(sql_dir: str | Path) -> tuple[list[LintIssue], list[PlanSize]]:
    root = Path(sql_dir)
    if not root.is_dir():
        raise SqlError(f"{root}: not a directory")
    issues: list[LintIssue] = []
    objects: dict[str, SqlObject] = {}
    lines: dict[str, int] = {}

    def add(path: Path, line: int, code: str, message: str) -> None:
        issues.append(LintIssue(_display(path, root), line, code, message))

    for path in sorted(root.rglob("*.sql")):
        text = path.read_text()
        line = _first_line(text)
        try:
            statements = [s for s in sqlglot.parse(text, read=DIALECT) if s is not None]
        except ParseError as exc:
            err = exc.errors[0] if exc.errors else {}
            add(path, err.get("line") or line, "parse", err.get("description") or str(exc).splitlines()[0])
            continue
        if len(statements) != 1 or not isinstance(statements[0], exp.Create):
            add(path, line, "parse", f"expected exactly one CREATE statement, found {len(statements)} statement(s)")
            continue
        if list(statements[0].find_all(exp.Command)):
            add(path, line, "parse", "sqlglot's risingwave dialect does not understand this statement")
            continue
        try:
            obj = parse_file(path)
        except SqlError as exc:
            add(path, line, "parse", str(exc).split(": ", 1)[-1])
            continue
        if obj.name in objects:
            first = _display(objects[obj.name].path, root)
            add(path, line, "duplicate", f"duplicate object name {obj.name!r} (also in {first})")
            continue
        objects[obj.name] = obj
        lines[obj.name] = line

    for name, obj in objects.items():
        line = lines[name]
        for table in obj.ast.expression.find_all(exp.Table) if obj.ast.expression else ():
            if table.name in obj.depends_on and table.name not in objects:
                add(obj.path, _line(table, line), "unknown-ref", f"unknown reference {table.name!r}")
        for at, message in _streaming(obj, line):
            add(obj.path, at, "streaming", message)
        for message in _connector(obj):
            add(obj.path, line, "connector", message)
        for message in _embedded_contract(obj):
            add(obj.path, line, "embedded", message)

    graph = {n: sorted(o.depends_on & objects.keys()) for n, o in sorted(objects.items())}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        add(objects[cycle[0]].path, lines[cycle[0]], "cycle", f"dependency cycle: {' -> '.join(cycle)}")
        order = []
    sizes = _plan_sizes(order, objects, lines, root)
    for size in sizes:
        if size.scans > SCAN_BUDGET:
            add(objects[size.name].path, size.line, "plan-size", _plan_size_issue(size))
    _embedded_check(order, objects, lines, add)
    return sorted(issues, key=lambda i: (i.path, i.line, i.code)), sizes


def _embedded_check(order: list[str], objects: dict[str, SqlObject], lines: dict[str, int], add) -> None:
    """Create every object on an in-memory DuckDB in dependency order; report what DuckDB rejects.
    Objects whose dependencies failed are skipped, so one failure is reported once."""
    con = duckdb.connect(":memory:")
    failed: set[str] = set()
    try:
        for name in order:
            obj = objects[name]
            if obj.depends_on & failed or obj.depends_on - objects.keys():
                failed.add(name)
                continue
            try:
                for statement in _embedded_ddl(obj):
                    con.execute(statement)
            except (SqlglotError, SqlError, duckdb.Error) as exc:
                failed.add(name)
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                add(obj.path, lines[name], "embedded", f"the embedded engine cannot run it: {text}")
    finally:
        con.close()
