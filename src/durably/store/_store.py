"""The SQLite store: the only code in durably that talks to apsw.

Contract (each method says what is atomic):

* :meth:`Store.open` creates or migrates the schema in one transaction.
* :meth:`Store.flush` writes one journal batch in one ``BEGIN IMMEDIATE`` ...
  ``COMMIT`` (one fsync at ``synchronous=full``). Fail the record, never the
  store: a record SQLite or the binding rejects (constraint, too large, a
  value that cannot be bound) fails alone with ``record.error`` set and the
  rest of the batch commits; any other unexpected error in one record's
  application rolls the batch back and applies it again with every record
  in its own SAVEPOINT, so only the culprit fails. Busy (another connection
  holds the lock) is waited out: the batch is rolled back and retried with
  backoff, acknowledging nothing meanwhile. KeyboardInterrupt/SystemExit
  (Ctrl-C in a leader's thread) roll back cleanly and propagate, the store
  stays usable. Only storage that can no longer be trusted (I/O error,
  failed fsync, full disk, corruption) fails the store for good: a failed
  fsync is never retried on the same connection.
* Read methods see committed data only and never block the writer for long.

One writer connection, used only by the journal's writer thread; reads use
another (WAL lets them run beside the writer), except in memory, where they
go through the writer between batches. Backups: store/_backup.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from itertools import groupby
from operator import attrgetter
from typing import Any

import apsw

from .. import _crash, _logs, errors
from .. import _records as R
from ..codec import encode_error
from . import _apsw, _executors, _lifecycle, _ownership, _transfer, _tx
from ._backup import backup_file
from ._base import SqlStore
from ._checkpoint import Checkpointer
from ._connection import BUSY_TIMEOUT_MS, close_clean, connect, is_memory
from ._errors import BUSY_ERRORS, RECORD_ERRORS, map_error
from ._ops import OPS, READS, SqliteDb
from ._queries import INFO_COLUMNS, NO_MORE_COLUMNS, SQLITE, VIEW_COLUMNS, WORKFLOW_COLUMNS
from ._schema import SCHEMA_VERSION
from ._tx import BatchLost as _BatchLost
from ._versions import DataVersion
from ._writes import CHUNK_MAX, LONE_STEP, MULTI_STEP, TAKEOVERS, WRITES
from .contract import StoreContract

_INSERT_STEP = SQLITE.insert_step
_INSERT_WORKFLOW = SQLITE.insert_workflow
_COMPLETE = SQLITE.complete
# Record kinds written with one statement each, batched through executemany.
_MANY = {R.STEP: _INSERT_STEP, R.COMPLETE: _COMPLETE}
_KIND = attrgetter("kind")
_CLAIMS = ("claim", "claim_queue")  # ops whose rows are workflows this process now owns
log = _logs.get("durably.store")
# Busy retries: SQLite itself waits up to busy_timeout (5 s) per attempt;
# between attempts the writer sleeps this long, doubling up to the cap.
BUSY_BACKOFF = 0.05
BUSY_BACKOFF_MAX = 1.0


class Store(SqlStore):
    """One durably database file (or ``:memory:``)."""

    Q = SQLITE
    _NO_LIMIT = -1
    _export_snapshot = _transfer.sqlite_snapshot  # pyright: ignore[reportAssignmentType]  # moving between backends: _transfer's functions, bound as methods
    import_rows = _transfer.sqlite_import  # pyright: ignore[reportAssignmentType]

    def __init__(
        self,
        path: str,
        synchronous: str = "full",
        vfs: str | None = None,
        check: str = "auto",
        checkpoints: str = "engine",
    ) -> None:
        if synchronous not in ("full", "normal"):
            raise errors.UsageError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        if check not in _lifecycle.CHECKS:
            raise errors.UsageError(f"check must be one of {_lifecycle.CHECKS}, not {check!r}")
        super().__init__()
        self.check = check
        self.path = path
        self.synchronous = synchronous
        self.vfs = vfs
        self._writer: _apsw.Connection | None = None
        self._reader: _apsw.Connection | None = None
        self._write_lock = threading.Lock()  # held for a whole batch
        self._versions = DataVersion()  # data_version() while the writer is busy
        self._read_lock = threading.Lock()
        self._checkpointer = Checkpointer(checkpoints)  # SQLite's automatic checkpoint is off
        self._expired_tx: dict[int, BaseException] = {}
        self._version = SCHEMA_VERSION  # lower only for an older file opened read-only

    # -- lifecycle -------------------------------------------------------------

    def open(self, codec: str | None = None) -> None:
        """Open the connections and create or migrate the schema (atomic).

        Refuses damaged files with a typed error before anything is written:
        an empty file, a crashed database whose -wal is gone, one failing
        ``quick_check`` (after a crash, or always with ``check="always"``).
        ``codec``: the values codec the engine uses; the first open records
        it, a later open with another one is refused (CodecMismatchError)
        before anything is read or written.
        """
        memory = is_memory(self.path)
        if memory:
            self._writer = connect(self.path, self.synchronous, vfs=self.vfs)
            _lifecycle.migrate(self, self._writer)
            if codec is not None:
                _lifecycle.check_codec(self._writer, self.path, codec)
            return
        if os.path.isdir(self.path):
            raise errors.CantOpenError(f"database path {self.path!r} is a directory", path=self.path)
        if os.path.islink(self.path) and not os.path.exists(self.path):
            # Creating the file would replace the link (a new database is renamed into place): refuse.
            raise errors.CantOpenError(
                f"database path {self.path!r} is a symbolic link to {os.readlink(self.path)!r}, which does not "
                "exist; create the target's directory or point the link at a database (durably follows a "
                "link to an existing file)",
                path=self.path,
            )
        if not os.path.exists(self.path):
            try:
                _lifecycle.create(self.path, self.synchronous, self.vfs, lambda conn: _lifecycle.migrate(self, conn))
            except apsw.Error as exc:
                raise map_error(exc, self.path) from exc
        wal_size = _lifecycle.preflight(self.path, self.vfs)
        self._writer = connect(self.path, self.synchronous, vfs=self.vfs)
        try:
            _lifecycle.vet(self._writer, self.path, wal_size, self.check, self.vfs)
            _lifecycle.migrate(self, self._writer)
            if codec is not None:
                _lifecycle.check_codec(self._writer, self.path, codec)
            self._reader = connect(self.path, self.synchronous, vfs=self.vfs)
            _lifecycle.mark_open(self._writer, self.registration, self._checkpointer.open_mark)
            self._checkpoint(self._writer)  # the mark reaches the main file
            if self._failed is not None:
                raise self._failed
        except apsw.Error as exc:
            self._refuse()
            raise map_error(exc, self.path) from exc
        except BaseException:
            self._refuse()
            raise

    def open_readonly(self) -> None:
        """Open for inspection only (the CLI): see _lifecycle.open_readonly."""
        _lifecycle.open_readonly(self)

    def _refuse(self) -> None:
        """Close after refusing a file, leaving it as found (no checkpoint into a damaged main file)."""
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        self.close(clean=False)

    def close(self, clean: bool = True) -> None:
        """Close both connections, marking the file cleanly closed unless the
        writer failed. Safe to call twice."""
        self._closing = True
        marked_closed = False
        if clean and self._failed is None and self._writer is not None and not is_memory(self.path):
            try:
                with self._write_lock:
                    # The last executor out clears the mark; while another
                    # process has the file open it stays set (theirs).
                    if not _executors.others_live(self._writer, self.executor):
                        _lifecycle.mark_closed(self._writer, self._checkpointer.external)
                        marked_closed = True
            except apsw.Error:
                pass  # stays marked open: the next open treats it as a crash
        for conn in (self._reader, self._writer):
            if conn is not None:
                try:
                    if conn is self._writer and marked_closed:
                        close_clean(conn)  # last: SQLite may now remove the empty -wal
                    else:
                        conn.close()  # the -wal stays, as the crash mark expects
                except apsw.Error:
                    pass
        self._reader = self._writer = None

    def backup(self, dest: str) -> tuple[int, int]:
        """An online copy at the new file ``dest`` (store/_backup.py): (pages, page size)."""
        return backup_file(self.path, dest, vfs=self.vfs, live=self._writer is not None)

    def connections(self) -> list[_apsw.Connection]:
        """The open engine connections (for tests that assert PRAGMAs)."""
        return [c for c in (self._writer, self._reader) if c is not None]

    # -- writing ---------------------------------------------------------------

    def flush(self, batch: Sequence[Any]) -> None:
        """Write one journal batch in one transaction (see the module docstring)."""
        if self._failed is not None:
            raise self._failed
        conn = self._writer
        if conn is None:
            raise errors.NotOpenError("the store is closed")
        with self._write_lock:
            isolate = False  # every record in its own SAVEPOINT (after a surprise)
            busy_since = None
            delay = BUSY_BACKOFF
            while True:
                try:
                    if self._as_lone_step(conn, batch, isolate):
                        break
                    self._write(conn, batch, isolate)
                    if busy_since is not None:
                        log.warning(
                            "durably: the database lock was released after %.1f s; writing again",
                            time.monotonic() - busy_since,
                            extra=_logs.fields("store.lock_released"),
                        )
                    break
                except _BatchLost:
                    self._abort(conn)
                    _reset(batch)
                    continue
                except BUSY_ERRORS as exc:
                    self._abort(conn)
                    busy_since = self._still_locked(exc, batch, busy_since)
                    if busy_since is None:
                        return  # closing: the batch gave up, the store did not fail
                    time.sleep(delay)
                    delay = min(delay * 2, BUSY_BACKOFF_MAX)
                except Exception as exc:
                    self._unexpected(conn, batch, exc, isolate)
                    isolate = True
                except BaseException:
                    # KeyboardInterrupt / SystemExit in a leader's thread: roll
                    # back what is open (a finished COMMIT stays committed) and
                    # let it propagate; the store stays usable.
                    self._abort(conn)
                    raise
            if self._reader is not None:
                self._checkpoint(conn, only_if_due=True)
            self._versions.after_batch(conn)  # the keeper found the writer busy: read it here

    def _still_locked(self, exc: BaseException, batch: Sequence[Any], busy_since: float | None) -> float | None:
        """Another connection holds the lock: warn, reset the batch; since when the writer waits. None
        when closing: the batch (nothing in it acknowledged) fails with ``exc``, the store does not."""
        now = time.monotonic()
        if busy_since is None:
            busy_since = now - BUSY_TIMEOUT_MS / 1000  # SQLite waited that long already
        if self._closing:
            err = map_error(exc, self.path)
            for rec in batch:
                rec.result, rec.error = None, err
            return None
        log.warning(
            "durably: %r is locked by another connection (a second process, a sqlite3 "
            "shell, a long transaction); the writer has waited %.1f s and keeps waiting; "
            "nothing is acknowledged meanwhile",
            self.path,
            now - busy_since,
            extra=_logs.fields("store.locked"),
        )
        _reset(batch)
        return busy_since

    def _unexpected(self, conn: _apsw.Connection, batch: Sequence[Any], exc: Exception, isolate: bool) -> None:
        """An exception no record handler expected: storage's (or one met record by record) fails the
        store; otherwise the batch is written again, each record in its own SAVEPOINT."""
        if isolate or isinstance(exc, errors.DurablyError) or self._fatal(exc):
            raise self._batch_failed(conn, exc) from exc
        self._abort(conn)
        log.error(
            "durably: a record failed unexpectedly (%r); the batch is written again "
            "record by record so that only that record fails",
            exc,
            extra=_logs.fields("store.record_failed"),
        )
        _reset(batch)

    def _checkpoint(self, conn: _apsw.Connection, only_if_due: bool = False) -> None:
        """Copy the WAL into the main file (store/_checkpoint.py), between
        batches. Busy (another process holds the lock): later. A storage
        error fails the store for good, as a failed commit does; the batch
        just written stays acknowledged (it committed before)."""
        try:
            if only_if_due and not self._checkpointer.due(conn):
                return
            assert self._reader is not None
            self._checkpointer.run(conn, self._reader, self._read_lock)
        except BUSY_ERRORS:
            self._checkpointer.pending = True
        except apsw.Error as exc:
            err = map_error(exc, self.path)
            self._failed = (
                err if isinstance(err, errors.StorageError) else errors.StorageError(str(err), path=self.path)
            )
            log.error(
                "durably: checkpointing %r failed (%r); the journal stops",
                self.path,
                exc,
                extra=_logs.fields("store.checkpoint_failed"),
            )

    @staticmethod
    def _fatal(exc: BaseException) -> bool:
        """An error that means the connection or the file can't be trusted."""
        return isinstance(exc, apsw.Error) and not isinstance(exc, RECORD_ERRORS)

    def _write(self, conn: _apsw.Connection, batch: Sequence[Any], isolate: bool) -> None:
        conn.execute("BEGIN IMMEDIATE")
        batch = self._fence(conn, batch)
        if isolate:
            for rec in batch:
                self._apply_isolated(conn, rec)
        else:
            # Records apply in submission order, so the outcome never depends
            # on how records were split into batches; consecutive records of
            # one kind go through a single executemany. (groupby splits the
            # batch in C: the writer holds the GIL for this loop.)
            for kind, run in groupby(batch, _KIND):
                sql = _MANY.get(kind)
                if sql is None:
                    for rec in run:
                        self._apply_one(conn, rec)
                else:
                    self._apply_many(conn, sql, list(run))
        if self.owned:
            self._lost_to_a_race(batch)
        if _crash.ARMED:
            _crash.hit("store.before_commit")
        conn.execute("COMMIT")

    def _fence(self, conn: _apsw.Connection, batch: Sequence[Any]) -> Sequence[Any]:
        """Inside the batch's write transaction: if any workflow changed owner
        since the last look, find those this process lost; their records
        fail with FencedError, unwritten. The rest of the batch goes on."""
        self._check_owners(conn.execute(TAKEOVERS).get, lambda wids: self._refresh_owned(conn, wids))
        return _ownership.drop_fenced(self, batch)

    def _lost_to_a_race(self, batch: Sequence[Any]) -> None:
        _ownership.lost_to_a_race(self, batch, lambda err: "UNIQUE" in str(err))

    def _refresh_owned(self, conn: _apsw.Connection, wids: list[str]) -> None:
        rows = self._by_ids(self.Q.owners, wids, lambda sql, ids: conn.execute(sql, ids).fetchall())
        _ownership.lose(self, _ownership.lost_among(self, rows))

    def _apply_isolated(self, conn: _apsw.Connection, rec: Any) -> None:
        conn.execute("SAVEPOINT record")
        try:
            sql = _MANY.get(rec.kind)
            if sql is None:
                self._apply_one(conn, rec)
            else:
                self._apply_rows(conn, sql, [rec])
        except Exception as exc:
            if isinstance(exc, errors.DurablyError) or self._fatal(exc):
                raise
            conn.execute("ROLLBACK TO record")
            rec.result = None
            rec.error = errors.InternalError(f"durably could not write this record: {exc!r}")
            rec.error.__cause__ = exc
        conn.execute("RELEASE record")

    def _lone_step(self, conn: _apsw.Connection, rec: Any) -> bool:
        """Commit a batch of one step record in one call. False (after a
        rollback) when the record was rejected: the general path then applies
        it again and records the rejection, with the same outcome."""
        if self.fenced and rec.params[0] in self.fenced:
            return False
        try:
            conn.execute(LONE_STEP, (*rec.params, time.monotonic(), self._takeovers))
            return conn.changes() == 1
        except RECORD_ERRORS:
            self._abort(conn)
            return False

    def _batch_failed(self, conn: _apsw.Connection, exc: BaseException) -> BaseException:
        """Roll the batch back and remember why: the store refuses every later
        flush (the journal stops; a failed fsync is never retried)."""
        self._abort(conn)
        err = exc if isinstance(exc, errors.DurablyError) else map_error(exc, self.path)
        self._failed = err
        return err

    def _abort(self, conn: _apsw.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except apsw.Error:
            pass  # the connection is abandoned anyway

    def _apply_many(self, conn: _apsw.Connection, sql: str, recs: list[Any]) -> None:
        if sql is _INSERT_STEP and len(recs) > 1:
            self._insert_steps(conn, recs)
            return
        self._apply_rows(conn, sql, recs)

    def _insert_steps(self, conn: _apsw.Connection, recs: list[Any]) -> None:
        at, n = 0, len(recs)
        while n - at > 1:
            size = min(CHUNK_MAX, 1 << ((n - at).bit_length() - 1))
            chunk = recs[at : at + size]
            try:
                values = [time.monotonic()]
                for rec in chunk:
                    values += rec.params
                conn.execute(MULTI_STEP[size], values)
            except RECORD_ERRORS:
                # SQLite undid the whole statement: apply the chunk row by row
                # so that only the rejected record fails.
                self._apply_rows(conn, _INSERT_STEP, chunk)
            at += size
        if at < n:
            self._apply_rows(conn, _INSERT_STEP, recs[at:])

    def _apply_rows(self, conn: _apsw.Connection, sql: str, recs: list[Any]) -> None:
        # executemany is the fast path; a rejected row fails only its record and
        # the statement resumes after it (SQLite rolled back just that row).
        start, n = 0, len(recs)
        bound = time.monotonic() if sql is _INSERT_STEP else None  # a step row's ``at``
        while start < n:
            at = [start]

            def rows(first: int = start, at: list[int] = at) -> Iterator[Any]:
                for i in range(first, n):
                    at[0] = i
                    yield recs[i].params if bound is None else (*recs[i].params, bound)

            try:
                conn.executemany(sql, rows())
                return
            except RECORD_ERRORS as exc:
                recs[at[0]].error = map_error(exc, self.path)
                start = at[0] + 1

    def _apply_one(self, conn: _apsw.Connection, rec: Any) -> None:
        kind = rec.kind
        if kind == R.START:
            self._start(conn, rec)
        elif kind == R.TX:
            _tx.run_step(self, conn, rec)
        elif kind == R.OP:
            self._op(conn, rec)
        elif kind == R.WRITE:
            name, params = rec.params
            try:
                conn.execute(WRITES[name], params)
                rec.result = conn.changes()
            except RECORD_ERRORS as exc:
                rec.error = map_error(exc, self.path)
        else:
            raise errors.InternalError(f"unknown journal record kind {kind!r}")

    def _start(self, conn: _apsw.Connection, rec: Any) -> None:
        workflow_id, name, inputs, parent_id, parent_step, *extra = rec.params
        deadline, trace = (*extra, None, None)[:2]  # (older records carry neither)
        # A child's start and its parent's step row are two statements that
        # must land together: a SAVEPOINT makes them one unit.
        nested = parent_step is not None
        if nested:
            conn.execute("SAVEPOINT start")
        try:
            owner = self.start_owner
            version = None if owner is None else self.app_version
            conn.execute(_INSERT_WORKFLOW, (workflow_id, name, inputs, parent_id, deadline, owner, version, trace))
            inserted = conn.changes()
            if inserted and owner is None:
                _executors.notice(conn, "start", workflow_id)  # a client's: some executor claims it
            rec.result = None if inserted else conn.execute(self.Q.name_status, (workflow_id,)).get
            if nested:
                wid, (pos, ident), step_name, output = parent_step
                conn.execute(_INSERT_STEP, (wid, pos, step_name, output, None, ident, None, None))
                conn.execute("RELEASE start")
        except RECORD_ERRORS as exc:
            if nested:
                conn.execute("ROLLBACK TO start")
                conn.execute("RELEASE start")
            rec.error = map_error(exc, self.path)

    def _op(self, conn: _apsw.Connection, rec: Any) -> None:
        workflow_id, row, name, op, args = rec.params
        conn.execute("SAVEPOINT op")
        try:
            error = None
            try:
                output = OPS[op](self._ops_on(conn), *args)
                if op in _CLAIMS:
                    self._own(output)
            except errors.DurablyError as exc:  # a typed refusal: the step's outcome
                conn.execute("ROLLBACK TO op")
                output, error = None, encode_error(exc)
                if workflow_id is None:
                    rec.error = exc
            if output is R.NOTHING:
                rec.result = R.NOTHING
            else:
                if workflow_id is not None:
                    pos, ident = row
                    conn.execute(_INSERT_STEP, (workflow_id, pos, name, output, error, ident, None, None))
                rec.result = (output, error)
            conn.execute("RELEASE op")
        except RECORD_ERRORS as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            rec.error = map_error(exc, self.path)

    # -- reading ---------------------------------------------------------------

    @contextmanager
    def _read(self) -> Generator[_apsw.Connection]:
        if self._reader is not None:
            with self._read_lock:
                yield self._reader
        else:
            conn = self._writer
            if conn is None:
                raise errors.NotOpenError("the store is closed")
            with self._write_lock:  # between batches: committed data only
                yield conn

    def read(self, name: str, *args: Any) -> Any:
        """Run the read ``name`` of ``store/_ops.py`` (``READS``) on committed data."""
        try:
            with self._read() as conn:
                return READS[name](SqliteDb(conn), *args)
        except apsw.Error as exc:
            raise map_error(exc, self.path) from exc

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on committed data."""
        try:
            with self._read() as conn:
                return list(conn.execute(sql, params))
        except apsw.Error as exc:
            raise map_error(exc, self.path) from exc

    def _new_ops_db(self, conn: _apsw.Connection) -> SqliteDb:
        return SqliteDb(conn)

    def _view_columns(self) -> str:
        if self._full_view:
            return VIEW_COLUMNS
        return f"{INFO_COLUMNS if self._queues_table else WORKFLOW_COLUMNS}, {NO_MORE_COLUMNS}"

    def others_live(self, executor_id: str) -> bool:
        """Whether an executor other than ``executor_id`` has the file open
        (a live lease; on this host, a live process). A read."""
        try:
            with self._read() as conn:
                return _executors.others_live(conn, executor_id)
        except apsw.Error as exc:
            raise map_error(exc, self.path) from exc

    def claimable(self, version: str, names: str, dead: str, live: str) -> bool:
        """Whether a claim would take anything (a read: no write transaction
        when there is nothing to take; see store/_executors.claim)."""
        return _executors.any_claimable(self, version, names, dead, live)

    def data_version(self) -> int:
        """Changes whenever another connection committed (the watcher's
        poll); never for this store's own commits, and never waits for the
        writer (store/_versions.py)."""
        conn = self._writer
        if conn is None:
            raise errors.NotOpenError("the store is closed")
        return self._versions.poll(conn, self._write_lock)


_workflow_of = _ownership.workflow_of
_reset = _ownership.reset

# Both stores fulfil the contract (checked by mypy --strict).
_: type[StoreContract] = Store
__all__ = ["Store"]
