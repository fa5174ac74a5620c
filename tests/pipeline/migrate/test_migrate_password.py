"""`pipeline migrate set-password`: the compose stack's migrate job sets RisingWave's root password from a
secret file. Against a real Postgres server (same ALTER USER, same wire): the password is set, quotes in it
are no injection, and no failure prints it."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from click.testing import CliRunner

from pipeline.cli.main import main

pytestmark = pytest.mark.postgres

PASSWORD = "it's-a-s3cret"  # a quote: composed as a literal, never spliced into the statement


@pytest.fixture
def role(pg_dsn):
    name = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {name}")


def stored_password(dsn: str, role: str) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()[0]


def test_set_password_sets_it_from_the_file_and_never_prints_it(pg_dsn, role, tmp_path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    result = CliRunner().invoke(
        main, ["migrate", "set-password", role, "--target", pg_dsn, "--password-file", str(secret)]
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output and f"password of {role} set" in result.output
    stored = stored_password(pg_dsn, role)
    assert stored is not None and PASSWORD not in stored  # hashed by the server
    again = CliRunner().invoke(
        main, ["migrate", "set-password", role, "--target", pg_dsn, "--password-file", str(secret)]
    )
    assert again.exit_code == 0, again.output  # every start of the stack runs it: idempotent


def test_set_password_failures_are_one_line_without_the_password(pg_dsn, tmp_path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    cases = [
        (["nobody_here", "--target", pg_dsn, "--password-file", str(secret)], "Error: "),
        (
            ["root", "--target", pg_dsn, "--password-file", str(tmp_path / "missing")],
            f"Error: --password-file: cannot read {tmp_path / 'missing'}",
        ),
        (
            ["root", "--target", str(tmp_path / "x.duckdb"), "--password-file", str(secret)],
            "Error: set-password needs a postgresql:// target",
        ),
    ]
    for args, start in cases:
        result = CliRunner().invoke(main, ["migrate", "set-password", *args])
        assert result.exit_code == 1, result.output
        assert result.output.startswith(start) and result.output.count("\n") == 1, result.output
        assert PASSWORD not in result.output
