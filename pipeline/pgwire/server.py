"""Postgres wire on the embedded engine, read-only, so analysts use psql and drivers as on RisingWave.

In production the views run on RisingWave and analysts connect with ``psql -h HOST -p 4566 -d dev -U
root``. With the embedded engine (``pipeline run``, ``pipeline replay``) this module serves the same
tables and views on the same kind of port. The wire protocol is buenavista's (PyPI ``buenavista``: its
``BuenaVistaServer`` socket server and its Postgres message handling); this module plugs in a backend
(buenavista's ``Connection``/``Session``/``QueryResult`` interfaces) over the engine's DuckDB and
fills four small gaps of buenavista 0.5 (see :class:`_Handler`).

Read-only by construction (:mod:`pipeline.pgwire.session`, the backend): DuckDB's own parser classifies
every statement and only queries run, each inside a DuckDB read-only transaction, so reads see one
committed state of the views (the engine refreshes them in one transaction) and a write is refused with
SQLSTATE ``25006`` while the connection stays up; files, secrets and the engine's internal views are out
of reach. ``COPY (query) TO STDOUT`` exports a query's rows (:mod:`pipeline.pgwire.copyout`); psql's
``\\d`` commands read a catalog that lists the views as RisingWave does (:mod:`pipeline.pgwire.catalog`).

Threads: buenavista serves each client on its own thread. Every session gets its own DuckDB cursor (a
separate connection to the same database, DuckDB's rule for using it from several threads), derived
from one cursor taken from ``engine.con`` on the caller's thread at start; the engine's own connection
is never touched from a server thread.

Types: DuckDB values go out in Postgres text format; ``TIMESTAMP WITH TIME ZONE`` columns arrive as
``timestamp`` in UTC (buenavista has no ``timestamptz``), ``HUGEINT`` as ``numeric``, lists and structs
as ``json``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import struct
import threading
from collections.abc import Callable, Mapping

import duckdb
from buenavista.postgres import NULL_BYTE, BuenaVistaHandler, BuenaVistaServer, BVBuffer, ServerResponse
from psycopg.adapt import Transformer
from psycopg.pq import Format

from pipeline.pgwire.copyout import copy_lines
from pipeline.pgwire.session import CopyResult, EngineConnection, PgError, sqlstate

__all__ = ["PgError", "PgWireServer", "start_pgwire"]

log = logging.getLogger(__name__)

_TRANSFORMER = Transformer()  # psycopg's loaders: Postgres wire values (text or binary, by type OID) to Python


# -- the wire: buenavista's handler and server, with three fixes -----------------------------------------


class _Handler(BuenaVistaHandler):
    """buenavista's Postgres message handling, with what 0.5 lacks for psycopg 3 and psql:

    * ``COPY ... TO STDOUT`` (psql's ``\\copy``, psycopg's ``cursor.copy``): the rows go out as
      CopyOutResponse, one CopyData per line and CopyDone (PostgreSQL's protocol, "COPY Operations"),
      then ``COPY n``, in the simple and the extended protocol;
    * Bind parameters of any type, text or binary, and NULL: buenavista decodes a few binary numbers
      only, feeds untyped text (psycopg's ``str``) to a date parser and ends the connection on anything
      else. The message is split with buenavista's reader; each value is decoded by psycopg's own loaders;
    * after an error, Describe is skipped until Sync as Execute already is (Postgres discards the rest
      of a failed extended-protocol batch);
    * errors carry severity and SQLSTATE (psycopg's ``e.sqlstate``, psql's ``ERROR:`` line), and a refused
      query is logged at INFO, not as a server error.
    """

    def handle_bind(self, ctx, payload: bytes) -> None:
        try:
            data = bytes(payload)
            portal_end = data.index(NULL_BYTE)
            stmt_end = data.index(NULL_BYTE, portal_end + 1)
            portal, stmt = data[:portal_end].decode(), data[portal_end + 1 : stmt_end].decode()
            buf = BVBuffer(io.BytesIO(data[stmt_end + 1 :]))
            formats = [buf.read_int16() for _ in range(buf.read_int16())]
            count = buf.read_int16()
            formats = formats * count if len(formats) == 1 else (formats or [0] * count)
            oids = ctx.stmts[stmt][1]
            params = []
            for i in range(count):
                size = buf.read_int32()
                raw = None if size < 0 else buf.read_bytes(size)
                oid = oids[i] if i < len(oids) else 0
                params.append(None if raw is None else _TRANSFORMER.get_loader(oid, Format(formats[i])).load(raw))
            result_formats = [buf.read_int16() for _ in range(buf.read_int16())]
        except Exception as exc:
            self.send_error(PgError("08P01", f"cannot bind parameters: {exc}"), ctx)
            return
        ctx.add_portal(portal, stmt, params, result_formats)
        self.send_bind_complete()

    def handle_query(self, ctx, payload: bytes) -> None:
        try:
            result = ctx.execute_sql(bytes(payload).decode("utf-8").rstrip("\x00"))
        except Exception as exc:
            self.send_error(exc)
            self.send_ready_for_query(ctx)
            return
        if isinstance(result, CopyResult):
            self._send_copy(result)
        elif result.has_results():
            self.send_row_description(result)
            self.send_command_complete(f"SELECT {self.send_data_rows(result)}\x00")
        else:
            self.send_command_complete(f"{result.status()}\x00")
        self.send_ready_for_query(ctx)

    def handle_execute(self, ctx, payload: bytes) -> None:
        if ctx.has_error:
            return
        data = bytes(payload)
        portal = data[: data.index(NULL_BYTE)].decode()
        cached = ctx.result_cache.get(portal)
        if isinstance(cached, CopyResult):
            del ctx.result_cache[portal]
            self._send_copy(cached)
            return
        if cached is None and portal in ctx.portals:
            try:
                result = ctx.execute_portal(portal)
            except Exception as exc:
                self.send_error(exc, ctx)
                return
            if isinstance(result, CopyResult):
                self._send_copy(result)
                return
            ctx.result_cache[portal] = result  # buenavista's execute sends it from the cache
        super().handle_execute(ctx, payload)

    def _send_copy(self, result: CopyResult) -> None:
        """CopyOutResponse (text, one text column per result column), a CopyData per line, CopyDone,
        CommandComplete ``COPY n``."""
        columns = len(result.columns)
        head = struct.pack("!bh", 0, columns) + struct.pack(f"!{columns}h", *([0] * columns))
        self.wfile.write(b"H" + struct.pack("!i", len(head) + 4) + head)
        for line in copy_lines(result.copy, result.columns, result.rows()):
            self.wfile.write(b"d" + struct.pack("!i", len(line) + 4) + line)
        self.wfile.write(b"c" + struct.pack("!i", 4))
        self.send_command_complete(f"{result.status()}\x00")

    def handle_describe(self, ctx, payload: bytes) -> None:
        if not ctx.has_error:
            super().handle_describe(ctx, payload)

    def send_error(self, exception, ctx=None) -> None:
        message = str(exception).strip() or type(exception).__name__
        if isinstance(exception, str):  # buenavista passes a string for a failed password
            code = "28P01" if "password" in message.lower() else "08P01"
            log.warning("pgwire: %s from %s", message, self.client_address[0])
        else:
            code = sqlstate(exception)
            log.log(
                logging.INFO if isinstance(exception, (PgError, duckdb.Error)) else logging.WARNING,
                "pgwire: %s %s",
                code,
                message.splitlines()[0],
            )
        buf = BVBuffer()
        for field, value in (("S", "ERROR"), ("V", "ERROR"), ("C", code), ("M", message)):
            buf.write_byte(field.encode())
            buf.write_string(value)
        buf.write_byte(NULL_BYTE)
        out = buf.get_value()
        self.wfile.write(ServerResponse.ERROR_RESPONSE + (len(out) + 4).to_bytes(4, "big") + out)
        if ctx is not None:
            ctx.mark_error()


class _AnyUser(Mapping):
    """buenavista's ``{user: password}`` for one password whatever the user name (``-U root`` or not)."""

    def __init__(self, password: str) -> None:
        self._password = password

    def __getitem__(self, user: str) -> str:
        return self._password

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


class _Server(BuenaVistaServer):
    """buenavista's threaded socket server: any client the bind address lets in (buenavista itself
    admits 127.0.0.1 only), connections tracked so :meth:`close_connections` can end them."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, *args, **kwargs) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        self.RequestHandlerClass = _Handler  # buenavista's __init__ names its own handler

    def verify_request(self, request, client_address) -> bool:
        return True

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        log.debug("pgwire: connection from %s ended with an error", client_address, exc_info=True)


class PgWireServer:
    """A read-only Postgres-wire server over a DuckDB database, on its own threads.

    ``con`` is the engine's connection (``EmbeddedEngine.con``); one cursor is taken from it here, on the
    caller's thread, and every client session derives its own from that. ``port=0`` picks a free port
    (read :attr:`port`). ``password``: clients must give it (MD5 auth, any user name); ``None`` asks none.
    Any database and user name are accepted (``-d dev -U root`` as on RisingWave). ``relations`` maps each
    public relation's name to its kind as ``sql/`` declares it (``table``, ``source``,
    ``materialized_view``, ``view``, ``sink``): psql's ``\\d`` and ``SHOW`` list those as RisingWave does
    (:mod:`pipeline.pgwire.catalog`); without it the kinds are read from the database. ``before_query`` is
    called (on the client's thread) before each statement outside a client transaction: the engine's
    ``sync_readers``, which brings ``con`` up to its last evaluation when the engine evaluates elsewhere.

    Raises ``OSError`` if the address cannot be bound.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        host: str = "127.0.0.1",
        port: int = 4566,
        *,
        password: str | None = None,
        relations: Mapping[str, str] | None = None,
        before_query: Callable[[], None] | None = None,
    ) -> None:
        if logging.getLogger("buenavista").level == logging.NOTSET:
            logging.getLogger("buenavista").setLevel(logging.CRITICAL)  # it logs every query at INFO
        self._root = con.cursor()
        try:
            self._server = _Server(
                (host, port),
                EngineConnection(self._root, relations, before_query),
                auth=None if password is None else _AnyUser(password),
            )
        except OSError as exc:
            self._root.close()
            raise OSError(
                exc.errno,
                f"Postgres wire: cannot listen on {host}:{port}: "
                f"{exc.strerror or exc} (--pg-port 0 picks a free port, --no-pg turns it off)",
            ) from None
        except BaseException:
            self._root.close()
            raise
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def dsn(self) -> str:
        """``postgresql://root@host:port/dev``, what ``pipeline status --dsn`` and psycopg take."""
        return f"postgresql://root@{self.host}:{self.port}/dev"

    def start(self) -> None:
        """Accept clients on a background thread (returns at once)."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"pgwire-{self.port}", daemon=True
        )
        self._thread.start()
        log.info(
            "Postgres wire (read-only) on %s:%d: psql -h %s -p %d -d dev -U root",
            self.host,
            self.port,
            self.host,
            self.port,
        )

    def close(self) -> None:
        """Stop accepting, end every client connection, wait for their threads; idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.close_connections()
        self._server.server_close()  # joins the client threads (block_on_close)
        try:
            self._root.close()
        except duckdb.Error:
            pass

    async def stop(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)


def start_pgwire(
    con: duckdb.DuckDBPyConnection,
    host: str = "127.0.0.1",
    port: int = 4566,
    password: str | None = None,
    relations: Mapping[str, str] | None = None,
    before_query: Callable[[], None] | None = None,
) -> PgWireServer:
    """Start a :class:`PgWireServer` on ``con`` and return it (``stop()`` or ``close()`` ends it).

    Raises ``OSError`` when ``host:port`` cannot be bound (in use, or not an address of this machine).
    """
    server = PgWireServer(con, host, port, password=password, relations=relations, before_query=before_query)
    server.start()
    return server
