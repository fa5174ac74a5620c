"""docs/architecture.md matches the tree, and the repository explains itself.

The "Modules" section of docs/architecture.md lists every module of ``pipeline`` and ``executor`` with the
first sentence of its docstring; ``python -m tests.test_docs`` rewrites it after modules move. No file
points at a design or an issue outside the repository.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
START, END = "<!-- modules: generated from the tree; tests/test_docs.py checks it -->", "<!-- /modules -->"


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(doc.split())
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0] if text else ""
    return first.rstrip(":;").replace("|", "\\|")


def module_listing() -> str:
    """The Markdown listing: one table per package, a row per module with its docstring's first sentence."""
    out: list[str] = []
    for top in ("pipeline", "executor"):
        rows = []
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            rows.append(f"| `{rel}` | {_summary(path)} |")
        out += [f"**`{top}/`**", "", "| module | why it exists |", "| --- | --- |", *rows, ""]
    return "\n".join(out).rstrip() + "\n"


def _section(text: str) -> str:
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def test_the_module_listing_matches_the_tree():
    assert _section(DOC.read_text()) == module_listing(), "run: python -m tests.test_docs"


def test_every_module_says_why_it_exists():
    missing = [
        str(p.relative_to(ROOT))
        for top in ("pipeline", "executor")
        for p in (ROOT / top).rglob("*.py")
        if not _summary(p) and p.name != "__main__.py"
    ]
    assert missing == []


def test_nothing_points_outside_the_repository():
    pattern = re.compile(r"DESIGN\.md|\bissue [0-9]|\.\./shared")
    hits = []
    for top in ("pipeline", "executor", "sql", "tests", "benchmarks", "docs", "examples", "deploy"):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".sql", ".md", ".yaml", ".yml", ".sh", ".toml"):
                if path == Path(__file__).resolve():
                    continue
                for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if pattern.search(line):
                        hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    for name in ("README.md", "docker-compose.yml", "Dockerfile", "pyproject.toml"):
        for n, line in enumerate((ROOT / name).read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{name}:{n}: {line.strip()}")
    assert hits == []


if __name__ == "__main__":  # python -m tests.test_docs: rewrite the listing
    text = DOC.read_text()
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    DOC.write_text(f"{before}{START}\n{module_listing()}{END}{after}")
    sys.exit(0)
