"""Setting a database user's password on a Postgres-wire target (RisingWave), for deployments.

RisingWave creates its superusers (``root``, ``postgres``, ``rwadmin``) without a password. The compose
stack reaches RisingWave's root over the container's loopback only (a ``trust`` line in its host-based
authentication) and every other connection must give a password, so the migrate job sets root's password
from a secret file on every start (which also rotates it). RisingWave stores it MD5-hashed with the user
name, as Postgres does; ``ALTER USER ... WITH PASSWORD`` is the statement on both (RisingWave's
``ALTER USER`` reference, docs.risingwave.com/sql/commands/sql-alter-user).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from pipeline.migrate.model import MigrateError
from pipeline.migrate.targets.risingwave import redact_dsn

__all__ = ["set_password"]


def set_password(dsn: str, user: str, password: str, *, connect_timeout_s: int = 10) -> None:
    """Run ``ALTER USER <user> WITH PASSWORD <password>`` on the server at ``dsn``.

    The password is composed as a literal by psycopg (no quoting of ours) and never appears in an error.
    Raises :class:`MigrateError` with one line if the server cannot be reached or refuses (no such user,
    no privilege).
    """
    if not password:
        raise MigrateError("the password is empty")
    statement = sql.SQL("ALTER USER {} WITH PASSWORD {}").format(sql.Identifier(user), sql.Literal(password))
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout_s) as conn:
            conn.execute(statement)
    except psycopg.Error as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(password, "***")
        raise MigrateError(f"cannot set the password of {user} on {redact_dsn(dsn)}: {text}") from None
