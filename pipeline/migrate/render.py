"""How the migration commands look in a terminal (rich): plans, apply progress, status, diffs, lint.

Kept apart from the commands so they stay plain data and from the click layer so tests can render to a
string (``Console(file=StringIO(), color_system=None)``) and compare with a stored snapshot.
"""

from __future__ import annotations

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from pipeline.migrate.model import (
    CHANGED,
    CREATE,
    DROP,
    IN_SYNC,
    NOT_APPLIED,
    ApplyResult,
    LintIssue,
    ObjectDiff,
    Plan,
    PlanSize,
    Status,
    Step,
)

ACTION_STYLE = {CREATE: "green", DROP: "red", "recreate": "yellow"}
STATE_STYLE = {IN_SYNC: "green", NOT_APPLIED: "cyan", CHANGED: "yellow"}
_SQL = Syntax("", "sql", theme="ansi_dark", background_color="default")


def _sql(text: str, indent: str = "      ") -> Text:
    """``text`` highlighted as SQL, every line indented (no padding to the console width)."""
    out = Text()
    highlighted = _SQL.highlight(text.rstrip())
    highlighted.rstrip()
    for line in highlighted.split("\n", allow_blank=True):
        out.append(indent)
        out.append_text(line)
        out.append("\n")
    out.rstrip()
    return out


def step_line(number: int, step: Step) -> Text:
    """``  3. recreate materialized_view session_setpoints`` with the action colored."""
    line = Text(f"{number:>3}. ")
    line.append(f"{step.action:<8}", style=ACTION_STYLE.get(step.action, ""))
    line.append(f" {step.kind:<17} ", style="dim")
    line.append(step.name, style="bold")
    return line


def render_plan(plan: Plan, console: Console, *, show_sql: bool = True) -> None:
    """The plan: a header, each step with its reason (and change class) and SQL, the kept objects."""
    if plan.empty:
        console.print(f"No changes: {plan.engine} target {plan.target} matches sql/.", soft_wrap=True)
    else:
        destructive = len(plan.destructive)
        console.print(
            Text.assemble(
                f"Plan for {plan.engine} target {plan.target}: {len(plan.steps)} step(s), ",
                (f"{destructive} destructive", "bold red" if destructive else ""),
            ),
            soft_wrap=True,
        )
        for number, step in enumerate(plan.steps, 1):
            console.print()
            console.print(step_line(number, step), soft_wrap=True)
            reason = step.reason
            if step.change is not None and step.change.details:
                reason += " - " + "; ".join(step.change.details)
            console.print(Text(f"      {reason}", style="italic"), soft_wrap=True)
            if show_sql and step.sql:
                console.print(_sql(step.sql), soft_wrap=True)
    if plan.kept:
        console.print()
        console.print(
            f"Kept (removed from sql/, dropped only with --allow-drop): {', '.join(plan.kept)}", soft_wrap=True
        )


class Progress:
    """An ``on_step`` callback for :func:`pipeline.migrate.commands.apply` printing one line per step."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, index: int, step: Step, seconds: float, error: str | None) -> None:
        line = step_line(index + 1, step)
        line.append(f"  {seconds * 1000:.0f} ms", style="dim")
        line.append("  failed" if error else "  ok", style="bold red" if error else "green")
        self.console.print(line, soft_wrap=True)


def render_apply(result: ApplyResult, console: Console) -> None:
    """The outcome: nothing to do, all applied, or what was applied and what was not."""
    plan = result.plan
    if plan.empty:
        console.print(f"No changes: {plan.engine} target {plan.target} matches sql/; nothing applied.", soft_wrap=True)
    elif result.failed is None:  # result.ok
        console.print(f"Applied {len(result.applied)} step(s) to {plan.engine} target {plan.target}.", soft_wrap=True)
    else:
        console.print(
            Text(
                f"Stopped at step {len(result.applied) + 1} of {len(plan.steps)}: "
                f"{result.failed.label()} failed: {result.error}",
                style="bold red",
            ),
            soft_wrap=True,
        )
        console.print(
            f"Applied ({len(result.applied)}): " + (", ".join(s.label() for s in result.applied) or "none"),
            soft_wrap=True,
        )
        console.print(
            f"Not applied ({len(result.not_applied)}): " + ", ".join(s.label() for s in result.not_applied),
            soft_wrap=True,
        )
    if plan.kept:
        console.print(
            f"Kept (removed from sql/, dropped only with --allow-drop): {', '.join(plan.kept)}", soft_wrap=True
        )


def render_status(status: Status, console: Console) -> None:
    """A table of every object and its state, under a one-line verdict."""
    total = len(status.entries)
    if status.clean:
        console.print(
            f"{status.engine} target {status.target}: clean, {total} object(s) in sync with sql/.", soft_wrap=True
        )
    else:
        console.print(
            Text(
                f"{status.engine} target {status.target}: drift in {len(status.drift)} of {total} object(s).",
                style="bold yellow",
            ),
            soft_wrap=True,
        )
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("object", "kind", "state", "detail"):
        table.add_column(column, overflow="fold")
    for entry in status.entries:
        state = Text(entry.state, style=STATE_STYLE.get(entry.state, "red"))
        table.add_row(entry.name, entry.kind, state, entry.detail)
    console.print(table)


def render_diff(diff: ObjectDiff, console: Console) -> None:
    """The object's state, change class and details, and the unified diff (colored by line)."""
    head = f"{diff.name}: {diff.state}"
    if diff.change is not None:
        head += f" ({diff.change})"
    console.print(head, soft_wrap=True)
    if not diff.unified:
        return
    for line in diff.unified.splitlines():
        style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "")
        console.print(Text(line, style=style), soft_wrap=True)


def render_lint(issues: list[LintIssue], console: Console) -> None:
    """``path:line: [code] message`` per issue, or a one-line all-clear."""
    if not issues:
        console.print("lint: no problems found.")
        return
    for issue in issues:
        console.print(Text(str(issue)), soft_wrap=True)
    console.print(Text(f"lint: {len(issues)} problem(s).", style="bold red"))


def render_plan_sizes(sizes: list[PlanSize], budget: int, console: Console) -> None:
    """One line per view and sink: name, kind, relation scans with every CTE expanded, and what is read
    more than once; counts over ``budget`` in red."""
    table = Table(
        box=None,
        pad_edge=False,
        title=f"relation scans per view, every CTE expanded (budget {budget})",
        title_justify="left",
    )
    table.add_column("object")
    table.add_column("kind")
    table.add_column("scans", justify="right")
    table.add_column("read more than once")
    for size in sizes:
        style = "bold red" if size.scans > budget else None
        table.add_row(
            size.name,
            size.kind,
            Text(str(size.scans), style=style or ""),
            ", ".join(f"{n} ({k}x)" for n, k in size.repeated),
        )
    console.print(table)
