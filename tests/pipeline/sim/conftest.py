"""Fixtures for the simulator tests: a fresh test central system per test."""

import pytest

from tests.kits.csms import _central


@pytest.fixture
async def central():
    async for c in _central():
        yield c
