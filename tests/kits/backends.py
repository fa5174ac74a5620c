"""Run a test folder on every embedded-engine backend: ``from tests.kits.backends import backend`` in its
conftest makes each test there run once per backend (``duckdb``, ``sqlite``, ``hybrid``), with
:data:`pipeline.engine.embedded.DEFAULT_BACKEND` set to it, so every ``EmbeddedEngine()`` built in the
test (what-ifs and services included) uses it. Module-scoped fixtures that build an engine take
``backend`` as an argument, so they are rebuilt per backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.engine import embedded
from pipeline.engine.backend import BACKENDS


@pytest.fixture(params=BACKENDS, autouse=True, scope="module")
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(embedded, "DEFAULT_BACKEND", request.param)
        yield str(request.param)
