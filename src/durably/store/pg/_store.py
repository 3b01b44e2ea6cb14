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

import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, LiteralString
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg_pool import ConnectionPool

from ... import _logs, errors
from ... import _records as R
from .. import _ownership
from .._base import SqlStore
from .._executors import dead_here
from .._ops import OWNER_CHANGING_OPS, READS
from .._queries import OWNER_CHANGING_WRITES as OWNER_CHANGING
from .._queries import POSTGRES, literal_sql
from .._transfer import Chunks, Run
from ..contract import StoreContract
from . import _apply, _connection, _executors, _listen, _notices, _pipeline, _sandbox, _schema, _transfer
from ._errors import CONNECTION_ERRORS, RECORD_ERRORS, TRANSIENT_ERRORS, map_error
from ._errors import fatal as _fatal
from ._executors import PgDb
from ._schema import NOW, SCHEMA_VERSION
from ._settings import (
    _BACKOFF_MAX,
    _FENCE,
    _FENCE_EXCLUSIVE,
    _LONE_STEP,
    _MARK,
    CONNECT_TIMEOUT,
    IDLE_IN_TX,
    RECONNECT,
    TX_LOSSES,
    is_url,
    options,
    redact,
)

log = _logs.get("durably.store")
__all__ = ["PgStore", "redact", "is_url", "RECONNECT", "CONNECT_TIMEOUT", "IDLE_IN_TX", "TX_LOSSES"]


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
        url, schema, listen, tx_role = options(url, synchronous, schema, listen, tx_role)
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
        # Notice ids missing between two reads (store/pg/_notices.py): id -> the xmax it waits for.
        self.notice_holes: dict[int, int] = {}
        self._write_lock = threading.Lock()
        self._tx_running: str | None = None  # the workflow whose transaction step runs now
        self._user_path = "public"
        self._user_schemas: list[str] = []  # the user's own schemas: a transaction step's search_path
        self._login = ""  # session_user: what a transaction step's session must still be afterwards
        self._role_ready = False  # the sandbox role was found usable (_sandbox.prepare)
        self._snapshot: LiteralString = ""  # _sandbox.snapshot_sql for durably's tables
        self._tx_lost: dict[int, int] = {}  # id(record) -> connections its SQL lost in this flush
        self._value_type: LiteralString = "text"
        # Each batch's transaction writes its attempt number in its mark row
        # (engine_state ``batch:<executor>``): after a lost connection, that
        # row tells whether the attempt committed (see _committed).
        self._mark = 0
        self._in_doubt: int | None = None
        self._lone: Any = None  # the lone step record in flight (its outcome may be unknown)

    # -- lifecycle ------------------------------------------------------------------------

    def open(self, codec: str | None = None) -> None:
        """Connect, create or migrate the schema (atomic, under an advisory
        lock), check the codec, register this executor, start listening."""
        self._writer = conn = _connection.connect(self)
        try:
            self._user_path, schemas, self._login = _connection.first(
                conn.execute("SELECT current_setting('search_path'), current_schemas(false), session_user")
            )
            self._user_schemas = [s for s in schemas if s != self.schema]
            _schema.migrate(self, conn, codec)
            oids = _connection.first(
                conn.execute(
                    "SELECT coalesce(array_agg(oid ORDER BY oid), '{}') FROM pg_class WHERE relnamespace ="
                    " %s::regnamespace AND relkind = 'r'",
                    (self.schema,),
                )
            )[0]
            self._snapshot = _sandbox.snapshot_sql(oids)
            _connection.configure(self, conn, writer=True)
            if self.registration is not None:
                with conn.transaction():
                    _executors.register(conn, *self.registration)
            _connection.open_pool(self)
            _listen.open_listener(self)
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
        _connection.connect(self).close()
        _connection.open_pool(self)
        version = _connection.schema_version_ro(self)
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
        self._limits_table = version >= 2  # (an older schema, read as it is)

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
                # (pyright keeps the check above; a reconnect in this loop may have reset the writer)
                if conn is None:  # pyright: ignore[reportUnnecessaryComparison]
                    raise errors.NotOpenError("the store is closed")
                self._in_doubt = self._lone = None  # what this attempt leaves in doubt
                try:
                    if self._as_lone_step(conn, batch, isolate):
                        return
                    self._write(conn, batch, isolate)
                    if lost_since is not None:
                        log.warning(
                            "durably: reconnected to %s after %.1f s",
                            self.path,
                            time.monotonic() - lost_since,
                            extra=_logs.fields("store.reconnected"),
                        )
                    return
                except CONNECTION_ERRORS as exc:
                    now = time.monotonic()
                    lost_since = lost_since if lost_since is not None else now
                    if self._settled_after_loss(exc, batch, lost_since):
                        return
                    _reset(batch)
                    continue
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
                    self._unexpected(conn, batch, exc, isolate)
                    isolate = True
                except BaseException:
                    self._abort(conn)
                    raise

    def _settled_after_loss(self, exc: BaseException, batch: Sequence[Any], lost_since: float) -> bool:
        """The connection went during an attempt: reconnect. True: the batch is settled (it landed, or
        the engine closed: NotOpenError for each record); False: write it again; raises: gave up."""
        mark, lone = self._in_doubt, self._lone  # as the failed attempt left them
        self._lone = None
        if self._reconnect(exc, lost_since):
            if mark is not None and self._committed(mark):
                return True  # the commit landed before the connection went: acknowledged as written
            return lone is not None and self._step_landed(lone)  # the lone step's statement committed
        if self._closing:
            err = errors.NotOpenError("the engine closed while the database was unreachable")
            for rec in batch:
                rec.result, rec.error = None, err
            return True
        raise self._batch_failed(exc) from exc

    def _unexpected(self, conn: psycopg.Connection[Any], batch: Sequence[Any], exc: Exception, isolate: bool) -> None:
        """An exception no record handler expected: a fatal one (or one met record by record) fails
        the store; otherwise the batch is written again, each record in its own SAVEPOINT."""
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
            extra=_logs.fields("store.record_failed"),
        )
        _reset(batch)

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
        log.warning(
            "durably: lost the connection to %s (%s); reconnecting",
            self.path,
            exc,
            extra=_logs.fields("store.connection_lost"),
        )
        while not self._closing:
            try:
                conn = _connection.connect(self)
                _connection.configure(self, conn, writer=True)
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
        conn = self._writer
        assert conn is not None  # asked while a batch is being written: the writer is open
        row = conn.execute(
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
        # In flight until its reply is read: a lost connection leaves it set,
        # for _settled_after_loss to look for its row (the statement may have
        # committed before the reply was lost).
        self._lone = rec
        try:
            cur = conn.execute(_LONE_STEP, (*rec.params, time.monotonic(), self._takeovers))
        except RECORD_ERRORS:
            self._lone = None
            return False
        self._lone = None
        return cur.rowcount == 1

    def _write(self, conn: psycopg.Connection[Any], batch: Sequence[Any], isolate: bool) -> None:
        if (
            not isolate
            and self._takeovers is not None
            and not self._recheck  # the general path fences them first
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
        (takeovers,) = _connection.first(first)
        batch = self._fence(conn, batch, takeovers)
        if isolate:
            for rec in batch:
                _apply.apply_isolated(self, conn, rec)
            _pipeline.finish(self, conn, batch, ())
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
                    _pipeline.finish(self, conn, batch, batch[i:j])
                    return
                _pipeline.write_run(self, conn, batch[i:j])
                i = j
            else:
                _apply.apply_one(self, conn, batch[i])
                i += 1
        _pipeline.finish(self, conn, batch, ())

    @staticmethod
    def _commit(conn: psycopg.Connection[Any]) -> None:
        conn.execute("COMMIT")

    def _write_plain(self, conn: psycopg.Connection[Any], batch: Sequence[Any]) -> bool:
        """The pipelined hot path (_pipeline.write_plain); False: the general path."""
        return _pipeline.write_plain(self, conn, batch)

    def _fence(self, conn: psycopg.Connection[Any], batch: Sequence[Any], takeovers: Any) -> Sequence[Any]:
        """Inside the batch's transaction, under the shared fence lock: if
        any workflow changed owner since the last look, find those this
        process lost; their records fail with FencedError, unwritten."""
        self._check_owners(takeovers, lambda wids: self._refresh_owned(conn, wids))
        return _ownership.drop_fenced(self, batch)

    def _refresh_owned(self, conn: psycopg.Connection[Any], wids: list[str]) -> None:
        if wids:
            rows = conn.execute(self.Q.owners, (wids,)).fetchall()
            _ownership.lose(self, _ownership.lost_among(self, rows))

    def _lost_to_a_race(self, batch: Sequence[Any]) -> None:
        _ownership.lost_to_a_race(self, batch, lambda err: isinstance(err.__cause__, psycopg.errors.UniqueViolation))

    # -- reading --------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Generator[psycopg.Connection[Any]]:
        pool = self._pool
        if pool is None:
            raise errors.NotOpenError("the store is closed")
        with pool.connection() as conn:
            yield conn

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """A read on committed data."""
        rows: list[tuple[Any, ...]] = self._reading(
            lambda conn: [tuple(r) for r in conn.execute(literal_sql(sql), params).fetchall()]
        )
        return rows

    # moving between backends (store/_transfer.py)
    def _export_snapshot(self) -> AbstractContextManager[Run]:
        return _transfer.pg_snapshot(self)

    def import_rows(self, chunks: Chunks) -> dict[str, int]:
        return _transfer.pg_import(self, chunks)

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

    def last_notice(self) -> int:
        """Where this open's notice reads start (and the ids in flight below it)."""
        return _notices.start(self)

    def notices_since(self, last: int) -> list[tuple[Any, ...]]:
        """Cross-process wake-ups after id ``last``, and those committed
        since below it (store/pg/_notices.py: ids follow inserts, not commits)."""
        return _notices.since(self, last)

    def data_version(self) -> int:
        """Moves when a notification arrived (LISTEN), or at every call
        without a listener (the polling fallback)."""
        return _listen.data_version(self)

    def wait_change(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a notification (the watcher's pause)."""
        _listen.wait_change(self, timeout)

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


class _BatchLost(Exception):
    """The batch's transaction cannot go on: apply it again."""


def _cancel_query(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.cancel_safe(timeout=2.0)
    except Exception:  # the statement ends by its time budget instead
        pass


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
