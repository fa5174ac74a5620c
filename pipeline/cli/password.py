"""``pipeline charger-password``: hash a charger's Basic-auth password for the site file."""

from __future__ import annotations

import sys

import click

from pipeline.cli.errors import one_line_errors

__all__ = ["charger_password"]


@click.command("charger-password")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input instead of a prompt")
@one_line_errors
def charger_password(password_stdin):
    """Hash a charger's Basic-auth password for ``password_hash`` in the site YAML (salted scrypt)."""
    from executor.ocpp.auth import hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        click.echo(hash_password(password))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
