"""A real Postgres-wire server for the migrator's psycopg tests, and Debian's ``psql`` client for the
Postgres-wire port's tests (:func:`find_psql`, installed the same way when missing).

The server is found or made in this order:

1. ``PIPELINE_TEST_POSTGRES_DSN`` if set: a server someone else runs (each test gets its own database).
2. Debian's PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``, or ``PG_BINDIR``): a throwaway
   cluster is ``initdb``-ed into a temporary directory and started on a free loopback port, with fsync
   off, until the session ends. ``initdb`` refuses to run as root, so as root the cluster runs as the
   ``postgres`` user (``runuser``), which the Debian package creates.
3. When the binaries are missing and we are root, ``apt-get install postgresql`` first (Debian's package,
   the machine's ordinary package client); CI machines start fresh, so this is how CI gets them.

Errors are :class:`ServerUnavailable` with the reason (and the server log's tail) so the fixture can fail
the run with it in CI, or skip with it elsewhere.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SERVER_OPTIONS = "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class ServerUnavailable(RuntimeError):
    """No Postgres server could be found, installed or started; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, newest version first."""
    candidates = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.append(str(Path(pg_ctl).resolve().parent))
    for candidate in candidates:
        path = Path(candidate)
        if all((path / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return path
    return None


def install(package: str = "postgresql") -> None:
    """``apt-get install PACKAGE`` (root only). Raises :class:`ServerUnavailable` with the output's tail."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ServerUnavailable(f"{package} is missing and apt-get cannot install it here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerUnavailable(f"{' '.join(cmd)}: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ServerUnavailable(f"{' '.join(cmd)} exited {done.returncode}: {' | '.join(tail)}")


def find_psql() -> str:
    """The path of ``psql``: on ``PATH``, else in Debian's ``/usr/lib/postgresql/<version>/bin``, else
    after ``apt-get install postgresql-client`` (root only; how CI gets it). Raises
    :class:`ServerUnavailable` with the reason when there is none."""

    def found() -> str | None:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"), reverse=True)
        return shutil.which("psql") or (bindirs[0] if bindirs else None)

    path = found()
    if path is None:
        install("postgresql-client")
        path = found()
        if path is None:
            raise ServerUnavailable("apt-get installed postgresql-client but no psql was found")
    return path


@dataclass
class PostgresServer:
    """A running server: ``dsn`` points at its ``postgres`` database; ``close`` stops it (if ours)."""

    dsn: str
    description: str
    bindir: Path | None = None
    workdir: Path | None = None
    run_as: str | None = None

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *args] if self.run_as else list(args)

    def close(self) -> None:
        if self.workdir is None or self.bindir is None:
            return
        subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.workdir / "data"), "-m", "immediate", "-w", "stop"),
            capture_output=True,
            cwd=self.workdir,
            timeout=60,
        )
        shutil.rmtree(self.workdir, ignore_errors=True)


def start() -> PostgresServer:
    """Find, install or start a server (see the module docstring). Raises :class:`ServerUnavailable`."""
    external = os.environ.get("PIPELINE_TEST_POSTGRES_DSN")
    if external:
        return PostgresServer(external, "external server from PIPELINE_TEST_POSTGRES_DSN")
    bindir = find_bindir()
    if bindir is None:
        install()
        bindir = find_bindir()
        if bindir is None:
            raise ServerUnavailable("apt-get installed postgresql but no initdb/pg_ctl/postgres were found")
    run_as = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable("running as root, and there is no 'postgres' user to run initdb as") from None
        run_as = "postgres"
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))  # under /tmp: reachable by the postgres user
    if run_as:
        os.chown(workdir, user.pw_uid, user.pw_gid)
    server = PostgresServer("", "", bindir, workdir, run_as)
    data, log = workdir / "data", workdir / "server.log"

    def run(*args: str) -> None:
        done = subprocess.run(server._cmd(*args), capture_output=True, text=True, cwd=workdir, timeout=120)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            if log.exists():
                tail += log.read_text(errors="replace").strip().splitlines()[-3:]
            server.close()
            raise ServerUnavailable(f"{Path(args[0]).name} exited {done.returncode}: {' | '.join(tail)}")

    run(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    )
    port = free_port()
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(log),
        "-w",
        "-t",
        "60",
        "-o",
        f"-p {port} -k {workdir} {SERVER_OPTIONS}",
        "start",
    )
    server.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    server.description = f"PostgreSQL from {bindir} on 127.0.0.1:{port} ({workdir})"
    return server
