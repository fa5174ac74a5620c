"""Fixtures for the Postgres-wire port's tests: Debian's ``psql`` client (:func:`tests.kits.postgres.find_psql`,
installed with apt-get when missing and we are root). In CI (``CI=true``) a missing ``psql`` fails the run
with the reason; elsewhere the psql tests are skipped with it."""

from __future__ import annotations

import os

import duckdb
import pytest

from tests.kits.backends import backend  # every test here runs on each embedded-engine backend
from tests.kits.postgres import ServerUnavailable, find_psql

__all__ = ["backend", "plain_db", "psql"]


@pytest.fixture(scope="session")
def psql() -> str:
    """The path of ``psql``."""
    try:
        return find_psql()
    except ServerUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"no psql for the Postgres-wire tests: {exc}", pytrace=False)
        pytest.skip(f"psql is not installed (Debian's postgresql-client provides it): {exc}")


@pytest.fixture
def plain_db():
    """A DuckDB database of one table, ``readings (id INTEGER, kw DOUBLE)``: (1, 7.5), (2, 11.0)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE readings (id INTEGER, kw DOUBLE)")
    con.execute("INSERT INTO readings VALUES (1, 7.5), (2, 11.0)")
    yield con
    con.close()
