"""The PostgreSQL store: the same contract as the SQLite one
(store/contract.py), for several machines on one database.

* :meth:`PgStore.open` creates or migrates durably's schema (its own
  PostgreSQL schema, default ``durably``) in one transaction under an
  advisory lock, and registers this executor.
* :meth:`PgStore.flush` writes one journal batch in one transaction on the
  writer connection (one commit, one WAL flush at the server's
  ``synchronous_commit``): runs of step rows in one multi-row ``INSERT``
  from arrays, runs of completions through one pipelined ``executemany``.
  PostgreSQL aborts a whole transaction on any error, so "fail the record,
  never the store" is: a record the server rejects rolls the batch back, and
  the batch is applied again with every record in its own SAVEPOINT, so
  only that record fails. Ops and transaction steps always run in a
  SAVEPOINT (a typed refusal undoes their writes).
* Fencing: every batch reads the takeovers count with a share row lock
  held to its commit (READ COMMITTED gives a locking read the latest
  committed row); every change of owner updates that row, and a batch with
  a claim locks it exclusive first. No claim commits between a batch's
  check and its commit, across hosts. A lone step row (a sequential
  workflow) is one guarded statement in its own implicit transaction: one
  round trip, like a raw single-row commit.
* Transaction steps run their SQL as a role without rights on durably's
  schema, and the writer's session is put back after each (``_sandbox``).
* The connection lost (a server restart, ``pg_terminate_backend``, the
  network), a transaction step's SQL running or not: the writer reconnects
  with backoff for up to ``reconnect`` seconds, asks the server whether the
  batch's transaction committed (the attempt's mark row; a lone step: its
  row) and either acknowledges it or applies it again (a transaction step
  runs again: its SQL was rolled back with the batch); nothing is
  acknowledged before its commit returned. Past ``reconnect`` the store
  fails with DatabaseUnavailableError.
* Reads go through a small pool of autocommit connections (committed data
  only); a read that loses its connection is tried again on another, for
  up to ``reconnect`` seconds.
* Wake-ups: one connection LISTENs on ``durably:{schema}``; the schema's
  triggers notify it at the commit of a notice or of a workflow's end.
  ``data_version`` moves when a notification arrived (``listen=False``:
  it moves at every poll, the measured polling fallback).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql
from psycopg_pool import ConnectionPool

from ... import _crash, errors
from ... import _records as R
from ...codec import encode_error
from .. import _ownership
from .._base import SqlStore
from .._executors import dead_here
from .._interrupts import why_interrupted
from .._ops import OWNER_CHANGING_OPS, READS
from .._queries import OWNER_CHANGING_WRITES as OWNER_CHANGING
from .._queries import POSTGRES
from ..contract import StoreContract
from . import _executors, _sandbox
from ._errors import CONNECTION_ERRORS, RECORD_ERRORS, TRANSIENT_ERRORS, map_error
from ._executors import PgDb
from ._schema import MIGRATIONS, NOW, SCHEMA_VERSION
from ._tx import PgTx

log = logging.getLogger("durably")

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
TX_LOSSES = 3  # a transaction step whose SQL lost the connection this many times in one batch fails
RECONNECT = 60.0  # seconds the writer keeps reconnecting before it fails
CONNECT_TIMEOUT = 10  # seconds a connection attempt may take (libpq's connect_timeout) unless the URL says
IDLE_IN_TX = 2.0  # seconds a writer may sit idle inside a batch's transaction (a transaction step: its budget more)
_BACKOFF_MAX = 2.0
# A step row's times come from one clock, the server's: ``recorded_at`` is
# clock_timestamp() at the insert, ``started_at`` that minus the time since
# the body started (the record's monotonic ``started`` and ``at``, the
# monotonic time the statement was bound; NULL stays NULL): a host whose
# clock is off never writes a step that ends before it starts.
_STARTED = f"{NOW} + (%s::float8 - %s::float8)"
_INSERT_STEP = POSTGRES.insert_step
_COMPLETE = POSTGRES.complete
_INSERT_WORKFLOW = POSTGRES.insert_workflow
WRITES = POSTGRES.writes
# The fence: the takeovers count, read with a row lock inside the batch's
# transaction. READ COMMITTED returns the latest committed version to a
# locking read, and the lock holds until this transaction ends: no change of
# owner (its trigger updates that row) commits between the check and the
# commit. Claims take it exclusive before touching any workflow row.
_FENCE = "SELECT value FROM engine_state WHERE key = 'takeovers' FOR SHARE"
_FENCE_EXCLUSIVE = "SELECT value FROM engine_state WHERE key = 'takeovers' FOR UPDATE"
_MARK = "INSERT INTO engine_state (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
_LONE_STEP = (
    "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at)"
    f" SELECT %s, %s, %s, %s, %s, %s, {_STARTED}"
    " WHERE (SELECT value FROM engine_state WHERE key = 'takeovers' FOR SHARE) = %s"
)


def is_url(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


_OURS = ("schema", "listen", "tx_role")


def _split_ours(url: str) -> tuple[str, dict[str, str]]:
    """Take durably's own query parameters out of the URL (the rest is
    libpq's): ``postgresql://host/db?schema=app1&listen=off&tx_role=app1_steps``."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL" (postgresql://[::1)
        raise errors.UsageError(f"not a valid PostgreSQL URL: {redact(url)!r} ({exc})") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _OURS}
    if not ours:
        return url, {}
    rest = urlencode([(k, v) for k, v in query if k not in _OURS])
    return urlunsplit(parts._replace(query=rest)), ours


def redact(url: str) -> str:
    """The URL without its password (it appears in error messages)."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _key(what: str) -> int:
    """A stable signed 64-bit advisory lock key."""
    return int.from_bytes(hashlib.blake2b(what.encode(), digest_size=8).digest(), "big", signed=True)


class PgStore(SqlStore):
    """durably's tables in one PostgreSQL schema."""

    Q = POSTGRES

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        synchronous: str = "full",
        *,
        schema: str | None = None,
        reconnect: float = RECONNECT,
        listen: bool = True,
        tx_role: str | None = None,
    ) -> None:
        super().__init__()
        url, ours = _split_ours(url)
        in_url = ours.get("schema")
        if "listen" in ours:  # off: the polling fallback (README, "PostgreSQL")
            if ours["listen"] not in ("on", "off"):
                raise errors.UsageError(f"listen= must be 'on' or 'off', not {ours['listen']!r}")
            listen = ours["listen"] == "on"
        if schema is not None and in_url is not None and schema != in_url:
            raise errors.UsageError(f"two schemas given: {in_url!r} in the URL and schema={schema!r}")
        schema = schema if schema is not None else in_url if in_url is not None else "durably"
        if synchronous not in ("full", "normal"):
            raise errors.UsageError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
            raise errors.UsageError(f"schema must be a lower-case SQL identifier (letters, digits, _), not {schema!r}")
        tx_role = ours.get("tx_role", tx_role) or _sandbox.default_role(schema)
        if not _ROLE_NAME.match(tx_role):
            raise errors.UsageError(
                f"tx_role must be a lower-case SQL identifier (letters, digits, _), not {tx_role!r}"
            )
        self.tx_role = tx_role
        self._url = url
        self.path = redact(url)
        # libpq's connect_timeout, when the URL (or PGCONNECT_TIMEOUT) sets
        # none: a connection attempt never hangs for ever.
        given = "connect_timeout" in dict(parse_qsl(urlsplit(url).query)) or "PGCONNECT_TIMEOUT" in os.environ
        self._timeout: dict[str, Any] = {} if given else {"connect_timeout": CONNECT_TIMEOUT}
        self.schema = schema
        self.synchronous = synchronous
        self.reconnect = reconnect
        self.listen = listen
        self.channel = f"durably:{schema}"
        self._writer: psycopg.Connection[Any] | None = None
        self._pool: ConnectionPool | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()
        self._notified = 0
        self._polls = 0
        self._write_lock = threading.Lock()
        self._tx_running: str | None = None  # the workflow whose transaction step runs now
        self._user_path = "public"
        self._user_schemas: list[str] = []  # the user's own schemas: a transaction step's search_path
        self._login = ""  # session_user: what a transaction step's session must still be afterwards
        self._role_ready = False  # the sandbox role was found usable (_sandbox.prepare)
        self._snapshot = ""  # _sandbox.snapshot_sql for durably's tables
        self._tx_lost: dict[int, int] = {}  # id(record) -> connections its SQL lost in this flush
        self._value_type = "text"
        # Each batch's transaction writes its attempt number in its mark row
        # (engine_state ``batch:<executor>``): after a lost connection, that
        # row tells whether the attempt committed (see _committed).
        self._mark = 0
        self._in_doubt: int | None = None
        self._lone: Any = None  # the lone step record in flight (its outcome may be unknown)

    # -- lifecycle ------------------------------------------------------------------------

    def _connect(self, autocommit: bool = True) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=autocommit,
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                **self._timeout,
                application_name=f"durably:{self.schema}",
            )
        except psycopg.Error as exc:
            raise errors.DatabaseUnavailableError(f"cannot connect to {self.path}: {exc}", path=self.path) from exc
        return conn

    def _configure(self, conn: psycopg.Connection[Any], writer: bool = False) -> None:
        """Our SQL is unqualified: durably's schema first on the path. A
        writer left idle inside its transaction (its process SIGSTOPped or
        frozen mid-batch) is cut off by the server after IDLE_IN_TX seconds,
        so the row lock of its fence check does not block takeovers for
        longer: resumed, it reconnects, finds that batch rolled back and
        writes it again, fenced. The writer's path has none of the user's
        schemas (nothing a transaction step creates can shadow what its SQL
        names); the readers' also has the user's (reads of the user's
        tables, as a transaction step sees them)."""
        conn.execute(self._settings_sql(), self._settings(writer))

    def _settings(self, writer: bool) -> tuple[str, ...]:
        path = f'"{self.schema}", pg_catalog, pg_temp' if writer else f'"{self.schema}", {self._user_path}'
        # Engine(synchronous="normal"): commits return before their WAL is
        # flushed (the last ones may be lost if the *server* crashes);
        # "full" keeps the server's own setting (README, "PostgreSQL").
        commit = "off" if self.synchronous == "normal" else None
        return (path, f"{int(IDLE_IN_TX * 1000)}ms") + ((commit,) if commit else ())

    def _settings_sql(self) -> str:
        return (
            "SELECT pg_catalog.set_config('search_path', %s, false), pg_catalog.set_config("
            "'idle_in_transaction_session_timeout', %s, false)"
            + (", pg_catalog.set_config('synchronous_commit', %s, false)" if self.synchronous == "normal" else "")
        )

    def _step_path(self) -> str:
        return ", ".join('"' + s.replace('"', '""') + '"' for s in self._user_schemas)

    def open(self, codec: str | None = None) -> None:
        """Connect, create or migrate the schema (atomic, under an advisory
        lock), check the codec, register this executor, start listening."""
        self._writer = conn = self._connect()
        try:
            self._user_path, schemas, self._login = conn.execute(  # type: ignore[misc]
                "SELECT current_setting('search_path'), current_schemas(false), session_user"
            ).fetchone()
            self._user_schemas = [s for s in schemas if s != self.schema]
            self._migrate(conn, codec)
            oids = conn.execute(
                "SELECT coalesce(array_agg(oid ORDER BY oid), '{}') FROM pg_class WHERE relnamespace ="
                " %s::regnamespace AND relkind = 'r'",
                (self.schema,),
            ).fetchone()[0]  # type: ignore[index]
            self._snapshot = _sandbox.snapshot_sql(oids)
            self._configure(conn, writer=True)
            if self.registration is not None:
                with conn.transaction():
                    _executors.register(conn, *self.registration)
            self._open_pool()
            self._open_listener()
        except CONNECTION_ERRORS as exc:  # lost while opening (a restart, a terminated backend)
            self.close(clean=False)
            raise map_error(exc, self.path) from exc  # DatabaseUnavailableError, never a raw psycopg error
        except BaseException:
            self.close(clean=False)
            raise

    def open_readonly(self) -> None:
        """Inspection only (the CLI): nothing created or written. One
        connection first, so a wrong host, port, database or password is
        told at once, with the server's reason (the pool would retry it
        until its own timeout)."""
        self._connect().close()
        self._open_pool()
        version = self._schema_version_ro()
        if version is None:
            self.close(clean=False)
            raise errors.CantOpenError(f"no durably schema {self.schema!r} in {self.path}", path=self.path)
        if version > SCHEMA_VERSION:
            self.close(clean=False)
            raise errors.SchemaVersionError(
                f"schema {self.schema!r} in {self.path} has version {version}, newer than this durably supports",
                path=self.path,
                found=version,
                supported=SCHEMA_VERSION,
            )

    def _schema_version_ro(self) -> int | None:
        rows = self.query("SELECT to_regclass(%s) IS NOT NULL", (f"{self.schema}.meta",))
        if not rows[0][0]:
            return None
        return int(self.query("SELECT value FROM meta WHERE key = 'version'")[0][0])

    def _open_pool(self) -> None:
        self._pool = ConnectionPool(
            self._url,
            min_size=1,
            max_size=4,
            open=False,
            name=f"durably-{self.schema}",
            kwargs={"autocommit": True, "application_name": f"durably-read:{self.schema}", **self._timeout},
            configure=self._configure,
            timeout=30.0,
        )
        try:
            self._pool.open(wait=True, timeout=15.0)
        except Exception as exc:
            raise errors.DatabaseUnavailableError(f"cannot connect to {self.path}: {exc}", path=self.path) from exc

    def _open_listener(self) -> None:
        if not self.listen:
            return
        conn = self._connect(autocommit=True)
        conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self.channel)))
        self._listener = conn

    def _migrate(self, conn: psycopg.Connection[Any], codec: str | None) -> None:
        s = self.schema
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key(f"durably:migrate:{s}"),))
                exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{s}.meta",)).fetchone()[0]  # type: ignore[index]
                if not exists:
                    tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (s,)).fetchone()[0]  # type: ignore[index]
                    if tables:
                        raise errors.SchemaVersionError(
                            f"schema {s!r} in {self.path} already holds tables that are not durably's; "
                            "choose another schema (Engine(..., schema=...))",
                            path=self.path,
                            found=0,
                            supported=SCHEMA_VERSION,
                        )
                    conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(s)))
                    conn.execute(
                        pgsql.SQL("CREATE TABLE {}.meta (key text PRIMARY KEY, value text NOT NULL)").format(
                            pgsql.Identifier(s)
                        )
                    )
                    value_type = "bytea" if codec == "pickle" else "text"
                    conn.execute(
                        pgsql.SQL(
                            "INSERT INTO {}.meta (key, value) VALUES ('version', '0'), ('value_type', %s)"
                        ).format(pgsql.Identifier(s)),
                        (value_type,),
                    )
                meta = dict(
                    conn.execute(pgsql.SQL("SELECT key, value FROM {}.meta").format(pgsql.Identifier(s))).fetchall()
                )
                version = int(meta["version"])
                if version > SCHEMA_VERSION:
                    raise errors.SchemaVersionError(
                        f"schema {s!r} in {self.path} has version {version}, newer than this durably supports "
                        f"({SCHEMA_VERSION}); upgrade durably",
                        path=self.path,
                        found=version,
                        supported=SCHEMA_VERSION,
                    )
                self._value_type = meta["value_type"]
                for script in MIGRATIONS[version:]:
                    conn.execute(self._ddl(script))
                if version < SCHEMA_VERSION:
                    conn.execute(
                        pgsql.SQL("UPDATE {}.meta SET value = %s WHERE key = 'version'").format(pgsql.Identifier(s)),
                        (str(SCHEMA_VERSION),),
                    )
                if codec is not None:
                    stored = meta.get("codec")
                    if stored is None:
                        conn.execute(
                            pgsql.SQL("INSERT INTO {}.meta (key, value) VALUES ('codec', %s)").format(
                                pgsql.Identifier(s)
                            ),
                            (codec,),
                        )
                    elif stored != codec:
                        raise errors.CodecMismatchError(
                            f"schema {s!r} in {self.path} holds values written with codec={stored!r}; open it with "
                            f"durably.Engine(..., codec={stored!r}), not {codec!r}",
                            path=self.path,
                            stored=stored,
                            requested=codec,
                        )
        except psycopg.Error as exc:
            raise map_error(exc, self.path) from exc

    def _ddl(self, script: str) -> str:
        return (
            script.replace("{s}", self.schema)
            .replace("{V}", self._value_type)
            .replace("{now}", NOW)
            .replace("{channel}", "'" + self.channel + "'")
        )

    def _interrupt_running(self, which: Callable[[str], bool]) -> None:
        running, conn = self._tx_running, self._writer
        if running is not None and conn is not None and which(running):
            # A cancel request is a round trip on a connection of its own:
            # sent from a thread, so the caller's cancel record is queued
            # for the writer before the interrupted step's outcome returns.
            threading.Thread(target=_cancel_query, args=(conn,), name="durably-pg-cancel", daemon=True).start()

    def close(self, clean: bool = True) -> None:
        self._closing = True
        for conn in (self._listener, self._writer):
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass
        if self._pool is not None:
            try:
                self._pool.close(timeout=5.0)
            except Exception:
                pass
        self._listener = self._writer = None
        self._pool = None

    # -- writing ----------------------------------------------------------------------------

    def flush(self, batch: Sequence[Any]) -> None:
        """Write one journal batch in one transaction (module docstring)."""
        if self._failed is not None:
            raise self._failed
        if self._writer is None:
            raise errors.NotOpenError("the store is closed")
        with self._write_lock:
            self._tx_lost.clear()  # per flush: the lost connections of its transaction steps
            isolate = False
            lost_since: float | None = None
            delay = 0.05
            while True:
                conn = self._writer
                if conn is None:
                    raise errors.NotOpenError("the store is closed")
                self._in_doubt = None
                try:
                    if (
                        not isolate
                        and len(batch) == 1
                        and batch[0].kind == R.STEP
                        and not _crash.ARMED
                        and self._lone_step(conn, batch[0])
                    ):
                        return
                    self._write(conn, batch, isolate)
                    if lost_since is not None:
                        log.warning("durably: reconnected to %s after %.1f s", self.path, time.monotonic() - lost_since)
                    return
                except CONNECTION_ERRORS as exc:
                    now = time.monotonic()
                    lost_since = lost_since if lost_since is not None else now
                    # (the attempt set them: not the None the loop started from)
                    mark, lone = cast("int | None", self._in_doubt), self._lone
                    self._lone = None
                    if self._reconnect(exc, lost_since):
                        if mark is not None and self._committed(mark):
                            return  # the commit landed before the connection went: acknowledged as written
                        if lone is not None and self._step_landed(lone):
                            return  # the lone step's statement committed before the connection went
                        _reset(batch)
                        continue
                    if self._closing:
                        err = errors.NotOpenError("the engine closed while the database was unreachable")
                        for rec in batch:
                            rec.result, rec.error = None, err
                        return
                    raise self._batch_failed(exc) from exc
                except TRANSIENT_ERRORS:
                    self._abort(conn)
                    _reset(batch)
                    time.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_MAX)
                except _BatchLost:
                    self._abort(conn)
                    _reset(batch)
                except RECORD_ERRORS as exc:
                    self._abort(conn)
                    if isolate:
                        raise self._batch_failed(exc) from exc
                    _reset(batch)
                    isolate = True  # find the culprit: every record in its own SAVEPOINT
                except Exception as exc:
                    if (
                        isolate
                        or isinstance(exc, errors.DurablyError)
                        or not isinstance(exc, psycopg.Error)
                        or isinstance(exc, psycopg.DatabaseError)
                        and _fatal(exc)
                    ):
                        raise self._batch_failed(exc) from exc
                    self._abort(conn)
                    log.error(
                        "durably: a record failed unexpectedly (%r); the batch is written again record by "
                        "record so that only that record fails",
                        exc,
                    )
                    _reset(batch)
                    isolate = True
                except BaseException:
                    self._abort(conn)
                    raise

    def _reconnect(self, exc: BaseException, since: float) -> bool:
        """The writer lost its connection: connect again (with backoff, up
        to ``reconnect`` seconds since it was lost). False: gave up."""
        old = self._writer
        if old is not None:
            try:
                old.close()
            except Exception:
                pass
        delay = 0.05
        log.warning("durably: lost the connection to %s (%s); reconnecting", self.path, exc)
        while not self._closing:
            try:
                conn = self._connect()
                self._configure(conn, writer=True)
                self._writer = conn
                self._takeovers = None  # re-check ownership at the next batch
                return True
            except errors.DatabaseUnavailableError:
                if time.monotonic() - since > self.reconnect:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
        return False

    def _mark_key(self) -> str:
        return f"batch:{self.executor or f'anonymous:{os.getpid()}:{id(self)}'}"

    def _committed(self, mark: int) -> bool:
        """Whether the batch attempt that wrote ``mark`` committed (asked
        after reconnecting). Its mark row decides, read with a share lock: if
        that transaction is still ending on the server (its backend has not
        noticed the lost connection yet), the read waits for it, then sees
        what it left. A transaction id cannot decide: after a server crash an
        id that never reached the WAL is unknown, or given to another
        transaction."""
        conn = self._writer
        assert conn is not None
        row = conn.execute("SELECT value FROM engine_state WHERE key = %s FOR SHARE", (self._mark_key(),)).fetchone()
        return row is not None and row[0] == mark

    def _step_landed(self, rec: Any) -> bool:
        """Whether a step row written by a lone-step statement whose reply
        was lost is there (only this executor writes its workflows' rows)."""
        wid, pos, name, output, error, ident, _started = rec.params
        row = self._writer.execute(  # type: ignore[union-attr]
            "SELECT name, output, error, ident FROM steps WHERE workflow_id = %s AND position = %s", (wid, pos)
        ).fetchone()
        return row is not None and tuple(row) == (name, output, error, ident)

    def _batch_failed(self, exc: BaseException) -> BaseException:
        if self._writer is not None:
            self._abort(self._writer)
        err = exc if isinstance(exc, errors.DurablyError) else map_error(exc, self.path)
        if isinstance(err, errors.StorageError):
            self._failed = err
        return err

    @staticmethod
    def _abort(conn: psycopg.Connection[Any]) -> None:
        """Roll back whatever transaction the writer has open (its
        transactions are explicit: the connection is in autocommit mode)."""
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        except Exception:
            pass  # a broken connection: reconnecting replaces it

    def _lone_step(self, conn: psycopg.Connection[Any], rec: Any) -> bool:
        """A batch of one step row: ONE statement, committed on its own (one
        round trip, as the raw single-row commit), guarded by the takeovers
        count read with a share lock (the latest committed value, and no
        change of owner can commit before this insert does). False when
        nothing was written: the general path then fences and writes."""
        if self._takeovers is None or (self.fenced and rec.params[0] in self.fenced):
            return False
        self._lone = rec
        try:
            cur = conn.execute(_LONE_STEP, (*rec.params, time.monotonic(), self._takeovers))
        except RECORD_ERRORS:
            return False
        finally:
            self._lone = None
        return cur.rowcount == 1

    def _write(self, conn: psycopg.Connection[Any], batch: Sequence[Any], isolate: bool) -> None:
        if (
            not isolate
            and self._takeovers is not None
            and all(_plain(rec) for rec in batch)
            and not (self.fenced and any(_workflow_of(rec) in self.fenced for rec in batch))
            and self._write_plain(conn, batch)
        ):
            return
        # A claim (or any change of owner) takes the takeovers row exclusive
        # from the start; other batches share it (see _FENCE).
        exclusive = any(_changes_owner(rec) for rec in batch)
        self._mark += 1
        with conn.pipeline():  # BEGIN, the fence check and this attempt's mark: one round trip
            conn.execute("BEGIN")
            first = conn.execute(_FENCE_EXCLUSIVE if exclusive else _FENCE)
            conn.execute(_MARK, (self._mark_key(), self._mark))
            self._in_doubt = self._mark
        (takeovers,) = first.fetchone()  # type: ignore[misc]
        batch = self._fence(conn, batch, takeovers)
        if isolate:
            for rec in batch:
                self._apply_isolated(conn, rec)
            self._finish(conn, batch, ())
            return
        # Runs of step rows (one multi-row INSERT) and of completions (one
        # pipelined executemany); the last run goes out with the COMMIT.
        i, n = 0, len(batch)
        while i < n:
            kind = batch[i].kind
            if kind in (R.STEP, R.COMPLETE):
                j = i
                while j < n and batch[j].kind == kind:
                    j += 1
                if j == n:
                    self._finish(conn, batch, batch[i:j])
                    return
                self._write_run(conn, batch[i:j])
                i = j
            else:
                self._apply_one(conn, batch[i])
                i += 1
        self._finish(conn, batch, ())

    def _write_plain(self, conn: psycopg.Connection[Any], batch: Sequence[Any]) -> bool:
        """A batch of step rows, starts and completions (the hot path) in ONE
        round trip: BEGIN, the fence (``fence()`` aborts the transaction if
        any workflow changed owner since this writer last looked), the
        attempt's mark, one statement per run of records, and the COMMIT,
        sent as one query string (values bound client-side by psycopg).
        False (rolled back, nothing written): the count moved, or a run this
        path cannot write in one statement; the general path takes it."""
        parts = ["BEGIN", "SELECT fence(%s)", _MARK]
        self._mark += 1
        params: list[Any] = [self._takeovers, self._mark_key(), self._mark]
        starts = []
        i, n = 0, len(batch)
        while i < n:
            kind = batch[i].kind
            j = i
            while j < n and batch[j].kind == kind:
                j += 1
            run = batch[i:j]
            if kind == R.STEP:
                parts.append(self._steps_sql())
                params.append(time.monotonic())
                params += [list(c) for c in zip(*(rec.params for rec in run), strict=False)]
            elif kind == R.COMPLETE:
                if len({rec.params[3] for rec in run}) < len(run):
                    return False  # two ends of one workflow: only the first applies (executemany does that)
                parts.append(self._completes_sql())
                params += [list(c) for c in zip(*(rec.params for rec in run), strict=False)]
            else:
                sql, values = self._starts_sql(run)
                parts.append(sql)
                params += values
                starts.append(run)
            i = j
        armed = _crash.ARMED
        if not armed:
            parts.append("COMMIT")
        cur = psycopg.ClientCursor(conn)
        self._in_doubt = self._mark
        try:
            cur.execute("; ".join(parts), params)
        except psycopg.Error as exc:
            if getattr(exc, "sqlstate", None) != "DRB01":
                raise
            self._abort(conn)
            return False
        rows = []  # the row results, in order: fence(), then each start run's created ids
        while True:
            if cur.description is not None:
                rows.append({r[0] for r in cur.fetchall()})
            if not cur.nextset():
                break
        for run, ids in zip(starts, rows[1:], strict=False):
            self._started(conn, run, ids)
        if armed:
            if self.owned:
                self._lost_to_a_race(batch)
            _crash.hit("store.before_commit")
            self._commit(conn)
        return True

    def _steps_sql(self) -> str:
        """A run of step rows from arrays; its first parameter is ``at`` (see _STARTED)."""
        return (
            "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at)"
            f" SELECT w, p, n, o, e, i, {NOW} + (s - %s::float8) FROM unnest(%s::text[], %s::int[], %s::text[],"
            f" %s::{self._value_type}[], %s::text[], %s::text[], %s::float8[]) AS u(w, p, n, o, e, i, s)"
        )

    def _completes_sql(self) -> str:
        return (
            f"UPDATE workflows w SET status = u.s, output = u.o, error = u.e, parked = NULL, updated_at = {NOW}"
            f" FROM unnest(%s::text[], %s::{self._value_type}[], %s::text[], %s::text[]) AS u(s, o, e, id)"
            " WHERE w.workflow_id = u.id AND w.status = 'PENDING'"
        )

    def _starts_sql(self, run: Sequence[Any]) -> tuple[str, list[Any]]:
        """A run of top-level starts as one INSERT returning the ids it
        created (a client's starts leave their notices too)."""
        owner = self.start_owner
        cols: list[list[Any]] = [[], [], [], [], []]
        for rec in run:
            wid, name, inputs, parent_id, _parent_step, *extra = rec.params
            for col, value in zip(cols, (wid, name, inputs, parent_id, extra[0] if extra else None), strict=False):
                col.append(value)
        v = self._value_type
        sql = (
            "INSERT INTO workflows (workflow_id, name, status, inputs, parent_id, deadline, executor, app_version)"
            f" SELECT w, n, 'PENDING', i, p, d, %s, %s FROM unnest(%s::text[], %s::text[], %s::{v}[],"
            " %s::text[], %s::float8[]) AS u(w, n, i, p, d) ON CONFLICT (workflow_id) DO NOTHING"
            " RETURNING workflow_id"
        )
        if owner is None:
            sql = (
                f"WITH ins AS ({sql}), noted AS (INSERT INTO notices (kind, workflow_id)"
                " SELECT 'start', workflow_id FROM ins) SELECT workflow_id FROM ins"
            )
        return sql, [owner, None if owner is None else self.app_version, *cols]

    def _started(self, conn: psycopg.Connection[Any], run: Sequence[Any], created: set[str]) -> None:
        """Each start's result: None if it created its workflow, else the
        existing (name, status) (a second start of one id in a run: the
        first created it)."""
        existing = [rec.params[0] for rec in run if rec.params[0] not in created]
        rows = {}
        if existing:
            rows = {
                r[0]: (r[1], r[2])
                for r in conn.execute(
                    "SELECT workflow_id, name, status FROM workflows WHERE workflow_id = ANY(%s)", (existing,)
                )
            }
        for rec in run:
            wid = rec.params[0]
            if wid in created:
                rec.result = None
                created.discard(wid)
            else:
                rec.result = rows.get(wid)

    def _write_run(self, conn: psycopg.Connection[Any], run: Sequence[Any]) -> None:
        if run[0].kind == R.STEP:
            self._insert_steps(conn, run)
        else:
            with conn.cursor() as cur:
                cur.executemany(_COMPLETE, [rec.params for rec in run])

    def _finish(self, conn: psycopg.Connection[Any], batch: Sequence[Any], last_run: Sequence[Any]) -> None:
        """The last run of plain records and the COMMIT, in one round trip."""
        if self.owned:
            self._lost_to_a_race(batch)
        if _crash.ARMED:
            if last_run:
                self._write_run(conn, last_run)
                last_run = ()
            _crash.hit("store.before_commit")
        if last_run:
            with conn.pipeline():
                self._write_run(conn, last_run)
                self._commit(conn)
        else:
            self._commit(conn)

    @staticmethod
    def _commit(conn: psycopg.Connection[Any]) -> None:
        conn.execute("COMMIT")

    def _insert_steps(self, conn: psycopg.Connection[Any], recs: Sequence[Any]) -> None:
        if len(recs) == 1:
            conn.execute(_INSERT_STEP, (*recs[0].params, time.monotonic()))
            return
        conn.execute(
            self._steps_sql(), [time.monotonic(), *(list(c) for c in zip(*(rec.params for rec in recs), strict=False))]
        )

    def _fence(self, conn: psycopg.Connection[Any], batch: Sequence[Any], takeovers: Any) -> Sequence[Any]:
        """Inside the batch's transaction, under the shared fence lock: if
        any workflow changed owner since the last look, find those this
        process lost; their records fail with FencedError, unwritten."""
        if takeovers != self._takeovers:
            self._takeovers = takeovers
            self._refresh_owned(conn)
        return _ownership.drop_fenced(self, batch)

    def _refresh_owned(self, conn: psycopg.Connection[Any]) -> None:
        if self.owned:
            rows = conn.execute(self.Q.owners, (list(self.owned),)).fetchall()
            _ownership.lose(self, _ownership.lost_among(self, rows))

    def _lost_to_a_race(self, batch: Sequence[Any]) -> None:
        _ownership.lost_to_a_race(self, batch, lambda err: isinstance(err.__cause__, psycopg.errors.UniqueViolation))

    def _apply_isolated(self, conn: psycopg.Connection[Any], rec: Any) -> None:
        try:
            with conn.transaction():  # a SAVEPOINT inside the batch
                if rec.kind == R.STEP:
                    conn.execute(_INSERT_STEP, (*rec.params, time.monotonic()))
                elif rec.kind == R.COMPLETE:
                    conn.execute(_COMPLETE, rec.params)
                else:
                    self._apply_one(conn, rec)
        except RECORD_ERRORS as exc:
            rec.result = None
            rec.error = map_error(exc, self.path)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:
            if isinstance(exc, errors.DurablyError) or isinstance(exc, psycopg.DatabaseError) and _fatal(exc):
                raise
            rec.result = None
            rec.error = errors.InternalError(f"durably could not write this record: {exc!r}")
            rec.error.__cause__ = exc

    def _apply_one(self, conn: psycopg.Connection[Any], rec: Any) -> None:
        kind = rec.kind
        if kind == R.START:
            self._start(conn, rec)
        elif kind == R.TX:
            self._transaction(conn, rec)
        elif kind == R.OP:
            self._op(conn, rec)
        elif kind == R.WRITE:
            name, params = rec.params
            rec.result = conn.execute(WRITES[name], params).rowcount
        elif kind == R.STEP:
            conn.execute(_INSERT_STEP, (*rec.params, time.monotonic()))
        elif kind == R.COMPLETE:
            conn.execute(_COMPLETE, rec.params)
        else:
            raise errors.InternalError(f"unknown journal record kind {kind!r}")

    def _start(self, conn: psycopg.Connection[Any], rec: Any) -> None:
        workflow_id, name, inputs, parent_id, parent_step, *extra = rec.params
        deadline = extra[0] if extra else None
        owner = self.start_owner
        inserted = conn.execute(
            _INSERT_WORKFLOW,
            (workflow_id, name, inputs, parent_id, deadline, owner, None if owner is None else self.app_version),
        ).rowcount
        if inserted and owner is None:
            _executors.notice(conn, "start", workflow_id)
        if not inserted:
            row = conn.execute(self.Q.name_status, (workflow_id,)).fetchone()
            rec.result = None if row is None else tuple(row)
        else:
            rec.result = None
        if parent_step is not None:
            wid, (pos, ident), step_name, output = parent_step
            conn.execute(_INSERT_STEP, (wid, pos, step_name, output, None, ident, None, None))

    def _op(self, conn: psycopg.Connection[Any], rec: Any) -> None:
        workflow_id, row, name, op, args = rec.params
        try:
            with conn.transaction():
                error = None
                try:
                    with conn.transaction():
                        output = _executors.OPS[op](self._ops_on(conn), *args)
                except errors.DurablyError as exc:  # a typed refusal: the step's outcome, its writes undone
                    output, error = None, encode_error(exc)
                    if workflow_id is None:
                        rec.error = exc
                if op in ("claim", "claim_queue") and error is None:
                    self._own(output)
                if output is R.NOTHING:
                    rec.result = R.NOTHING
                else:
                    if workflow_id is not None:
                        pos, ident = row
                        conn.execute(_INSERT_STEP, (workflow_id, pos, name, output, error, ident, None, None))
                    rec.result = (output, error)
        except RECORD_ERRORS as exc:
            rec.error = map_error(exc, self.path)

    def _transaction(self, conn: psycopg.Connection[Any], rec: Any) -> None:
        """A transaction step: its SQL in a savepoint, as the sandbox role
        (``_sandbox``), then the session put back and its outcome row written."""
        workflow_id, (pos, ident), name, body = rec.params
        budget = getattr(body, "timeout", None) or self.tx_budget
        deadline = time.monotonic() + budget

        why = why_interrupted(self, workflow_id, name, budget)

        if self._stop_all_tx or workflow_id in self._stop_tx:
            rec.error = errors.NotOpenError(f"transaction step {name!r} not run: its workflow is stopping")
            return
        if not self._role_ready:
            refused = self._prepare_role()
            if refused is not None:
                rec.error = refused  # never run unsandboxed; nothing recorded
                return
            self._role_ready = True
        losses = self._tx_lost.get(id(rec), 0)
        if losses >= TX_LOSSES:
            # (a DBA killing it each time, or SQL that ends its own backend): not run again
            gone = errors.DatabaseUnavailableError(
                f"transaction step {name!r} lost its connection to {self.path} {losses} times while it ran; "
                "it was not run again",
                path=self.path,
            )
            rec.result = (None, encode_error(gone))
            conn.execute(_INSERT_STEP, (workflow_id, pos, name, None, rec.result[1], ident, None, None))
            return
        try:
            self._sandboxed(
                conn,
                rec,
                budget,
                PgTx(conn, self.schema, deadline, why, path=self.path, role=self.tx_role, login=self._login),
            )
        except psycopg.Error as exc:
            if not isinstance(exc, CONNECTION_ERRORS) and not conn.closed and not conn.broken:
                raise
            # The connection went while the step ran (a DBA's pg_terminate_backend, a restart, an
            # idle timeout its SQL set): the batch, the step's SQL with it, was rolled back; flush
            # reconnects and applies it again.
            self._tx_lost[id(rec)] = losses + 1
            if isinstance(exc, CONNECTION_ERRORS):
                raise
            raise psycopg.OperationalError(f"the connection was lost during transaction step {name!r}: {exc}") from exc

    def _sandboxed(self, conn: psycopg.Connection[Any], rec: Any, budget: float, tx: PgTx) -> None:
        """The step's body in its savepoint as the sandbox role, the checks
        after it, the session put back, its outcome row (``_sandbox``)."""
        workflow_id, (pos, ident), name, body = rec.params
        output = error = None
        # nothing prepared inside the step: the session's prepared statements are compared around it
        threshold, conn.prepare_threshold = conn.prepare_threshold, None
        try:
            cur = psycopg.ClientCursor(conn)
            try:
                cur.execute(
                    pgsql.SQL(_sandbox.ENTER).format(
                        snapshot=pgsql.SQL(self._snapshot), role=pgsql.Identifier(self.tx_role)
                    ),
                    (self._step_path(), f"{int((budget + IDLE_IN_TX) * 1000)}ms"),
                )
            except CONNECTION_ERRORS:
                raise
            except psycopg.Error as exc:  # the role went (dropped, membership revoked) since it was checked
                cur.execute("ROLLBACK TO SAVEPOINT durably_tx; RELEASE SAVEPOINT durably_tx")
                self._role_ready = False
                rec.error = errors.TxRoleError(
                    f"transaction step {name!r} not run: cannot switch to role {self.tx_role!r} on {self.path}: {exc}",
                    path=self.path,
                    role=self.tx_role,
                )
                return
            before = _sandbox.rows(cur)[1]
            self._tx_running = workflow_id
            try:
                output, error = body(tx)
            except errors.SerializationError as exc:
                rec.error = exc
            except Exception:
                if tx.lost is None and tx.expired is None and tx.breach is None:
                    raise  # not the step's SQL: the batch finds the culprit record by record
            except BaseException as exc:
                rec.error = exc  # KeyboardInterrupt/SystemExit: SQL undone, re-raised in the workflow's thread
            finally:
                self._tx_running = None
                tx._close()
            if tx.lost is not None:
                raise tx.lost  # (see _transaction)
            if tx.expired is not None:
                if self._stop_all_tx:
                    rec.error = errors.NotOpenError(
                        f"the engine closed while transaction step {name!r} ran; it runs again at the next open"
                    )
                else:
                    output, error = None, encode_error(tx.expired)
            elif tx.breach is not None:
                output, error = None, encode_error(tx.breach)
            elif tx.failed is not None and error is None and rec.error is None:
                # The body caught an SQL error and went on: PostgreSQL aborted
                # the step's SQL at that error, so that error is its outcome.
                output, error = None, encode_error(tx.failed)
            if error is None and rec.error is None:  # its SQL went well: is its session still the sandbox's?
                cur.execute(pgsql.SQL(_sandbox.CHECK).format(snapshot=pgsql.SQL(self._snapshot)))
                _timeout, (current, session, read_only), now = _sandbox.rows(cur)
                breach = _sandbox.breach(self.tx_role, self._login, current, session, read_only, before, now)
                if breach is not None:
                    output, error = None, encode_error(breach)
            restore = pgsql.SQL(_sandbox.RESTORE).format(
                settings=pgsql.SQL(self._settings_sql()), snapshot=pgsql.SQL(self._snapshot)
            )
            if error is not None or rec.error is not None:
                restore = pgsql.SQL("ROLLBACK TO SAVEPOINT durably_tx; ") + restore
            cur.execute(restore, self._settings(True))
            after = _sandbox.rows(cur)[-1]
        finally:
            conn.prepare_threshold = threshold
        if set(after[0]) != set(before[0]):
            # The step prepared or dropped prepared statements (not transactional): drop them all;
            # psycopg, seeing DEALLOCATE ALL, forgets the ones it prepared.
            conn.execute("DEALLOCATE ALL")
        if rec.error is None:
            conn.execute(_INSERT_STEP, (workflow_id, pos, name, output, error, ident, None, None))
            rec.result = (output, error)

    def _prepare_role(self) -> errors.DurablyError | None:
        """Set up the sandbox role (``_sandbox.prepare``) on a pooled
        connection, in a transaction of its own; None when it is usable. A
        concurrent GRANT elsewhere may fail it once: tried again."""
        refused: errors.DurablyError | None = None
        for attempt in range(3):
            try:
                ready: errors.DurablyError | None = self._reading(
                    lambda c: _sandbox.prepare(c, self.tx_role, self.schema, self._user_schemas, self.path)
                )
                return ready
            except errors.DurablyError as exc:
                refused = exc
                time.sleep(0.05 * (attempt + 1))
        return refused

    # -- reading --------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        pool = self._pool
        if pool is None:
            raise errors.NotOpenError("the store is closed")
        with pool.connection() as conn:
            yield conn

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """A read on committed data."""
        rows: list[tuple[Any, ...]] = self._reading(
            lambda conn: [tuple(r) for r in conn.execute(sql, params).fetchall()]
        )
        return rows

    def _reading(self, read: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """Run ``read`` on a pooled connection. A lost connection (the pool
        may hold several, all cut by a restart) is tried again on another,
        with backoff, for up to ``reconnect`` seconds."""
        since = time.monotonic()
        delay = 0.02
        while True:
            try:
                with self._read() as conn:
                    return read(conn)
            except CONNECTION_ERRORS as exc:
                if self._closing or time.monotonic() - since > self.reconnect:
                    raise map_error(exc, self.path) from exc
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
            except psycopg.Error as exc:
                raise map_error(exc, self.path) from exc

    def read(self, name: str, *args: Any) -> Any:
        return self._reading(lambda conn: READS[name](PgDb(conn), *args))

    def _new_ops_db(self, conn: psycopg.Connection[Any]) -> PgDb:
        return PgDb(conn)

    def _id_prefix(self, prefix: str) -> tuple[str, list[Any]]:
        # LIKE with the pattern's own characters escaped: a range of the
        # collation's order would not be a prefix under every collation.
        return "workflow_id LIKE ?", [prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"]

    def others_live(self, executor_id: str | None) -> bool:
        """Whether another executor is live (a live lease on the server's
        clock; on this host a live process)."""
        rows = self.query(
            "SELECT executor_id, host, pid, pid_started FROM executors WHERE executor_id"
            f" IS DISTINCT FROM %s AND stopped_at IS NULL AND lease_until >= {NOW}",
            (executor_id,),
        )
        dead = set(dead_here(rows, executor_id or ""))
        return any(row[0] not in dead for row in rows)

    def claimable(self, version: str, names: str, dead: str, live: str) -> bool:
        return bool(
            self.query(_executors.claimable_sql(False), _executors.claim_params(version, names, dead, live, 1, None))
        )

    # -- cross-process wake-ups -------------------------------------------------------------

    def data_version(self) -> int:
        """Moves when a notification arrived (LISTEN), or at every call
        without a listener (the polling fallback)."""
        listener = self._listener
        if listener is None:
            self._polls += 1
            return self._polls
        with self._listen_lock:
            try:
                for _ in listener.notifies(timeout=0.0, stop_after=1000):
                    self._notified += 1
            except CONNECTION_ERRORS:
                self._relisten()
        return self._notified

    def wait_change(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a notification (the watcher's
        pause: a wake-up from another process is seen when it arrives, not
        at the next poll). Without a listener: a plain sleep."""
        listener = self._listener
        if listener is None or self._closing:
            time.sleep(timeout)
            return
        with self._listen_lock:
            try:
                for _ in listener.notifies(timeout=timeout, stop_after=1):
                    self._notified += 1
            except CONNECTION_ERRORS:
                self._relisten()

    def _relisten(self) -> None:
        """The listener lost its connection: listen again, and count it as a
        change (what was notified meanwhile is read from the notices)."""
        try:
            if self._listener is not None:
                self._listener.close()
        except Exception:
            pass
        self._listener = None
        self._notified += 1
        if self._closing:
            return
        try:
            self._open_listener()
        except errors.DurablyError:
            self._listener = None
            self._polls = self._notified  # fall back to polling until it comes back
            self._notified += 1


class _BatchLost(Exception):
    """The batch's transaction cannot go on: apply it again."""


def _cancel_query(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.cancel_safe(timeout=2.0)
    except Exception:  # the statement ends by its time budget instead
        pass


def _fatal(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (
            psycopg.errors.DiskFull,
            psycopg.errors.IoError,
            psycopg.errors.DataCorrupted,
            psycopg.errors.IndexCorrupted,
            psycopg.errors.InternalError_,
        ),
    )


def _plain(rec: Any) -> bool:
    """A record the pipelined hot path writes: a step row, a completion, a
    top-level start (a child's start, with its parent's step row, and ops,
    transaction steps and named writes go the general way)."""
    kind = rec.kind
    return kind == R.STEP or kind == R.COMPLETE or (kind == R.START and rec.params[4] is None)


def _changes_owner(rec: Any) -> bool:
    if rec.kind == R.OP:
        return rec.params[3] in OWNER_CHANGING_OPS
    if rec.kind == R.WRITE:
        return rec.params[0] in OWNER_CHANGING
    return False


_workflow_of = _ownership.workflow_of
_reset = _ownership.reset

# Both stores fulfil the contract (checked by mypy --strict).
_: type[StoreContract] = PgStore
