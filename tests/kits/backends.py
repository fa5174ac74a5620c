"""Run a test folder on the embedded-engine backends: ``from tests.kits.backends import backend`` in its
conftest makes each test there run once per backend under test, with
:data:`pipeline.engine.embedded.DEFAULT_BACKEND` set to it, so every ``EmbeddedEngine()`` built in the
test (what-ifs and services included) uses it. Module-scoped fixtures that build an engine take
``backend`` as an argument, so they are rebuilt per backend.

The backends under test are ``PIPELINE_TEST_BACKENDS`` (comma-separated names, or ``all``); by default the
default backend alone (``hybrid``: SQLite for the sites an input touches, DuckDB for full evaluations and
readers), which keeps the suite's time in bounds. Whoever changes an adapter or ``sql/`` runs
``PIPELINE_TEST_BACKENDS=all``; ``tests/pipeline/engine/test_backends.py`` holds the three to the same
setpoints on every run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipeline.engine import embedded
from pipeline.engine.backend import BACKENDS

_CHOSEN = os.environ.get("PIPELINE_TEST_BACKENDS", embedded.DEFAULT_BACKEND)
UNDER_TEST = BACKENDS if _CHOSEN == "all" else tuple(name.strip() for name in _CHOSEN.split(",") if name.strip())


@pytest.fixture(params=UNDER_TEST, autouse=True, scope="module")
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(embedded, "DEFAULT_BACKEND", request.param)
        yield str(request.param)
