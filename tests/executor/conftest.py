"""Fixtures for the executor tests: started Executors on an ephemeral port and connected test charge points."""

from __future__ import annotations

from typing import Any

import pytest

from executor import Executor, ExecutorConfig
from pipeline.transport import MemoryTransport, publish
from tests.kits.ocpp import SITE_NODES, FixedClock, open_charge_point


@pytest.fixture
def transport() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


def executor_config(**kwargs: Any) -> ExecutorConfig:
    """An :class:`ExecutorConfig` for tests: loopback on a free port, and the status listener only when a
    test asks for one (``http_port=0``)."""
    kwargs.setdefault("metrics", "http_port" in kwargs)
    return ExecutorConfig(**{"host": "127.0.0.1", "port": 0, **kwargs})


@pytest.fixture
async def make_executor(transport: MemoryTransport, clock: FixedClock):
    """Factory for started executors on port 0 (topology published first); all are stopped at teardown."""
    started: list[Executor] = []

    async def factory(with_topology: bool = True, **kwargs: Any) -> Executor:
        if with_topology and not transport.log("site.topology"):
            for node in SITE_NODES:
                await publish(transport, "site.topology", node)
        kwargs.setdefault("call_timeout_s", 1.0)
        kwargs.setdefault("retry_initial_s", 0.05)
        kwargs.setdefault("retry_max_s", 0.2)
        kwargs.setdefault("boot_wait_s", 0.05)
        # the frozen test clock never lets a lag or debounce pass: tests of those use a moving clock
        kwargs.setdefault("ev_response_lag_s", 0.0)
        kwargs.setdefault("increase_debounce_s", 0.0)
        executor = Executor(transport, executor_config(**kwargs), clock)
        await executor.start()
        started.append(executor)
        return executor

    yield factory
    for executor in started:
        await executor.stop()


@pytest.fixture
async def executor(make_executor) -> Executor:
    return await make_executor()


@pytest.fixture
def charge_point(executor: Executor):
    """``async with charge_point("CP1") as cp``: a test charge point connected to ``executor``."""

    def open_cp(cp_id: str = "CP1"):
        return open_charge_point(executor.port, cp_id)

    return open_cp
