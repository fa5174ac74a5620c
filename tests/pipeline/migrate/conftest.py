"""Fixtures for the migrator's tests: small ``sql/`` dirs of their own, and a real Postgres server.

The Postgres server comes from :mod:`tests.kits.postgres` (``PIPELINE_TEST_POSTGRES_DSN``, else Debian's
binaries, installed with apt-get when missing and we are root). In CI (``CI=true``) a server that cannot
be had fails the run with the reason; elsewhere the Postgres tests are skipped with it. Each test gets a
fresh database on the session's server.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.kits.migrate import PLAIN, SMALL, write_sql
from tests.kits.postgres import PostgresServer, ServerUnavailable, start


@pytest.fixture
def small_sql(tmp_path: Path) -> Path:
    return write_sql(tmp_path / "sql", SMALL)


@pytest.fixture
def plain_sql(tmp_path: Path) -> Path:
    return write_sql(tmp_path / "sql", PLAIN)


@pytest.fixture
def duck(tmp_path: Path) -> str:
    """The path of a (not yet existing) embedded target."""
    return str(tmp_path / "target.duckdb")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    try:
        server = start()
    except ServerUnavailable as exc:
        if _in_ci():
            pytest.fail(f"no Postgres server for the migrator's psycopg tests: {exc}", pytrace=False)
        pytest.skip(f"no Postgres server (set PIPELINE_TEST_POSTGRES_DSN, or install Debian's postgresql): {exc}")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\npostgres: {server.description}")
    yield server
    server.close()


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    """A DSN to a fresh, empty database on the session's server (dropped afterwards)."""
    name = f"migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, _ = postgres_server.dsn.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
