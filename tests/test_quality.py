"""The house stays clean: ruff (lint and format) and mypy pass on the code, as CI runs them.

mypy checks ``pipeline`` and ``executor`` with ``check_untyped_defs`` and the pydantic plugin (the
``[tool.mypy]`` section of pyproject.toml); ruff checks and formats every Python file of the repository.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ["pipeline", "executor", "tests", "benchmarks"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_passes():
    done = _run("ruff", "check", "--no-cache", *CODE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_is_applied():
    done = _run("ruff", "format", "--check", "--no-cache", *CODE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_passes():
    done = _run("mypy", "--no-incremental")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr
