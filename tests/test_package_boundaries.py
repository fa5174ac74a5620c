"""The executor and the pipeline talk only through topics: the executor imports nothing else of pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

import executor

ALLOWED = {"pipeline.topics", "pipeline.transport", "pipeline.transport.base", "pipeline.clock"}


def test_executor_imports_only_the_topic_contracts_transport_and_clock():
    for path in Path(executor.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name == "pipeline" or name.startswith("pipeline."):
                    assert name in ALLOWED, f"{path.name} imports {name}"


def test_modules_stay_small():
    root = Path(executor.__file__).parent.parent
    for path in [*root.joinpath("pipeline").rglob("*.py"), *root.joinpath("executor").rglob("*.py")]:
        assert len(path.read_text().splitlines()) < 650, f"{path} is getting too long"
