"""The handle a transaction step receives: SQL inside the writer's batch."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import apsw

from .. import errors
from ..codec import encode_error
from ._apsw import Connection
from ._errors import FATAL_ERRORS, RECORD_ERRORS, map_error
from ._interrupts import why_interrupted
from ._queries import SQLITE
from ._schema import MIGRATIONS
from .contract import Tx

if TYPE_CHECKING:
    from ._store import Store

# SQLite checks a transaction step's time budget every _PROGRESS_STEPS VM instructions.
_PROGRESS_STEPS = 10_000
_INSERT_STEP = SQLITE.insert_step


class BatchLost(Exception):
    """SQLite rolled the batch back under a record (an interrupted write):
    write it again (the record knows what to record instead)."""


# Statements a transaction step may not run: its SQL lives inside the
# writer's batch transaction, so ending or nesting transactions would commit
# or roll back other workflows' records.
_DENIED_ACTIONS = {
    apsw.SQLITE_TRANSACTION,
    apsw.SQLITE_SAVEPOINT,
    apsw.SQLITE_ATTACH,
    apsw.SQLITE_DETACH,
    apsw.SQLITE_PRAGMA,
}
_WRITES = {apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE}
# DDL whose second argument is the table it attaches to (an index, a trigger)
_ON_TABLE = {
    apsw.SQLITE_CREATE_INDEX,
    apsw.SQLITE_CREATE_TEMP_INDEX,
    apsw.SQLITE_CREATE_TRIGGER,
    apsw.SQLITE_CREATE_TEMP_TRIGGER,
    apsw.SQLITE_DROP_INDEX,
    apsw.SQLITE_DROP_TEMP_INDEX,
    apsw.SQLITE_DROP_TRIGGER,
    apsw.SQLITE_DROP_TEMP_TRIGGER,
}
# DDL whose first argument names the object created or dropped
_NAMING = {
    apsw.SQLITE_CREATE_TABLE,
    apsw.SQLITE_CREATE_TEMP_TABLE,
    apsw.SQLITE_CREATE_VIEW,
    apsw.SQLITE_CREATE_TEMP_VIEW,
    apsw.SQLITE_DROP_TABLE,
    apsw.SQLITE_DROP_TEMP_TABLE,
    apsw.SQLITE_DROP_VIEW,
    apsw.SQLITE_DROP_TEMP_VIEW,
    apsw.SQLITE_CREATE_VTABLE,
    apsw.SQLITE_DROP_VTABLE,
}


@functools.cache
def engine_objects() -> tuple[frozenset[str], frozenset[str]]:
    """(durably's tables, every durably object: tables, indexes, triggers),
    derived from the schema itself (the migrations run on an empty
    in-memory database), so a table added by a new migration is protected
    without anyone listing it here."""
    conn = Connection(":memory:")
    try:
        for script in MIGRATIONS:
            conn.execute(script)
        rows = list(conn.execute("SELECT type, lower(name) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"))
    finally:
        conn.close()
    tables = frozenset(name for kind, name in rows if kind == "table")
    return tables, frozenset(name for _kind, name in rows)


def authorizer(action: int, p1: str | None, p2: str | None, dbname: str | None, trigger: str | None) -> int:
    """What a transaction step's SQL may do: anything on its own tables;
    on durably's, read only. Denied: transaction control, PRAGMA, ATTACH;
    any write to a durably table; dropping or altering one of its tables,
    indexes or triggers; an index or a trigger (TEMP too) on its tables; a
    table, view or virtual table (TEMP too) named like one of its objects,
    which would shadow it for the engine's own SQL."""
    if action in _DENIED_ACTIONS:
        return apsw.SQLITE_DENY
    tables, objects = engine_objects()
    if action in _WRITES:
        return apsw.SQLITE_DENY if p1 is not None and p1.lower() in tables else apsw.SQLITE_OK
    if action in _ON_TABLE:
        hit = (p2 is not None and p2.lower() in tables) or (p1 is not None and p1.lower() in objects)
        return apsw.SQLITE_DENY if hit else apsw.SQLITE_OK
    if action in _NAMING:
        return apsw.SQLITE_DENY if p1 is not None and p1.lower() in objects else apsw.SQLITE_OK
    if action == apsw.SQLITE_ALTER_TABLE:  # (database, table)
        return apsw.SQLITE_DENY if p2 is not None and p2.lower() in tables else apsw.SQLITE_OK
    return apsw.SQLITE_OK


class SqliteTx:
    """SQL access for a ``@engine.transaction`` step.

    Runs on the journal's writer thread inside the batch transaction, in a
    SAVEPOINT of its own: the statements commit in the same fsync as the
    step's outcome record, or not at all. Transaction control statements,
    PRAGMAs and writes to durably's tables are refused.
    """

    __slots__ = ("_conn", "_open", "_fatal", "expired", "_why")

    def __init__(self, conn: Connection, why: Callable[[], errors.TransactionTimeoutError] | None = None) -> None:
        self._conn = conn
        self._open = True
        # Why SQLite interrupted the body's SQL (time budget, cancel, close):
        # a TransactionTimeoutError, recorded as the step's outcome even if
        # the body caught it. ``why()`` builds it once the handler fired.
        self.expired: errors.TransactionTimeoutError | None = None
        self._why = why
        # An environment error (I/O, corruption, full disk) seen by user SQL.
        # The store re-raises it after the step body even if the body caught
        # it: the whole batch must fail, not only this step.
        self._fatal: errors.DurablyError | None = None

    def execute(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Run one statement; return all its result rows."""
        rows: list[tuple[Any, ...]] = self._run(lambda: list(self._conn.execute(sql, params)))
        return rows

    def executemany(self, sql: str, seq: Iterable[Any]) -> None:
        """Run one statement for each parameter set in ``seq``."""
        self._run(lambda: list(self._conn.executemany(sql, seq)))

    def query_one(self, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        """First row of a query, or None."""
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    def _run(self, call: Any) -> Any:
        if not self._open:
            raise errors.UsageError("a Tx handle is only valid inside its transaction step")
        try:
            return call()
        except apsw.InterruptError as exc:
            self.expired = (
                self._why()
                if self._why is not None
                else errors.TransactionTimeoutError("the transaction step was interrupted")
            )
            raise self.expired from exc
        except apsw.AuthError as exc:
            raise errors.UsageError(
                "a transaction step may not run BEGIN/COMMIT/SAVEPOINT, PRAGMA or ATTACH, write, drop or "
                "alter durably's tables, indexes and triggers, put an index or a trigger on them, or create "
                f"an object named like one of them ({exc})"
            ) from exc
        except FATAL_ERRORS as exc:
            self._fatal = map_error(exc, "")
            raise self._fatal from exc
        except apsw.Error as exc:
            raise map_error(exc, "") from exc

    @property
    def changes(self) -> int:
        """Rows changed by the last statement."""
        return self._conn.changes()

    def _close(self) -> None:
        self._open = False


def run_step(store: Store, conn: Connection, rec: Any) -> None:
    """Run a transaction step's body in a SAVEPOINT of the batch, under the
    authorizer and its time budget, and record its outcome (a TX record)."""
    workflow_id, _, name, body = rec.params
    expired = store._expired_tx.pop(id(rec), None)
    if expired is not None:
        _settle_expired(conn, rec, expired)
        return
    budget = getattr(body, "timeout", None) or store.tx_budget
    deadline = time.monotonic() + budget

    why = why_interrupted(store, workflow_id, name, budget)

    conn.execute("SAVEPOINT tx")
    tx = SqliteTx(conn, why)
    output, error = _run_body(store, conn, rec, tx, deadline)
    if tx._fatal is not None:
        raise tx._fatal  # I/O, corruption, full disk: fatal for the batch
    if tx.expired is not None:
        output, error = _interrupted(store, conn, rec, tx.expired, output, error)
    _record(store, conn, rec, output, error)


def _settle_expired(conn: Connection, rec: Any, expired: BaseException) -> None:
    """An earlier attempt of this batch was interrupted inside a write,
    and SQLite rolled the whole batch back: the step's outcome is the
    timeout (nothing, if the engine is closing), its body is not run
    again."""
    workflow_id, (pos, ident), name, _ = rec.params
    if isinstance(expired, errors.NotOpenError):
        rec.error = expired
    else:
        conn.execute(_INSERT_STEP, (workflow_id, pos, name, None, encode_error(expired), ident, None, None))
        rec.result = (None, encode_error(expired))


def _run_body(store: Store, conn: Connection, rec: Any, tx: SqliteTx, deadline: float) -> tuple[Any, Any]:
    """Call the body with ``tx``, under the authorizer and a progress
    handler that interrupts it past ``deadline`` or when stopped; its
    (output, error), both None when ``rec.error`` was set instead."""
    workflow_id, body = rec.params[0], rec.params[3]
    conn.authorizer = authorizer
    stop_tx = store._stop_tx
    conn.setprogresshandler(
        lambda: time.monotonic() > deadline or store._stop_all_tx or workflow_id in stop_tx, _PROGRESS_STEPS
    )
    output = error = None
    try:
        output, error = body(tx)
    except errors.SerializationError as exc:
        rec.error = exc
    except BaseException as exc:
        if isinstance(exc, Exception):
            raise
        # KeyboardInterrupt / SystemExit from the body: its SQL is undone
        # and the signal is re-raised in the workflow's own thread (the
        # writer thread must not die of it).
        rec.error = exc
    finally:
        conn.setprogresshandler(None)
        conn.authorizer = None
        tx._close()
    return output, error


def _interrupted(
    store: Store, conn: Connection, rec: Any, expired: errors.TransactionTimeoutError, output: Any, error: Any
) -> tuple[Any, Any]:
    """The body was interrupted. By close(): no outcome, the step runs
    again at the next open (its SQL is undone); otherwise the timeout is
    its outcome. Returns the (output, error) to record."""
    name = rec.params[2]
    outcome: BaseException = (
        expired
        if not store._stop_all_tx
        else errors.NotOpenError(
            f"the engine closed while transaction step {name!r} ran; it runs again at the next open"
        )
    )
    if not conn.in_transaction:
        # SQLite rolls back the whole transaction when it interrupts a
        # write: the batch is gone. Write it again, with this step's
        # outcome decided (flush retries on _BatchLost).
        store._expired_tx[id(rec)] = outcome
        raise BatchLost()
    if isinstance(outcome, errors.NotOpenError):
        rec.error = outcome
        return output, error
    return None, encode_error(expired)


def _record(store: Store, conn: Connection, rec: Any, output: Any, error: Any) -> None:
    """Undo the body's SQL if it failed, then write the step's outcome
    row; a rejected row becomes the record's error."""
    workflow_id, (pos, ident), name, _ = rec.params
    if error is not None or rec.error is not None:
        conn.execute("ROLLBACK TO tx")
    try:
        if rec.error is None:
            conn.execute(_INSERT_STEP, (workflow_id, pos, name, output, error, ident, None, None))
            rec.result = (output, error)
    except RECORD_ERRORS as exc:
        conn.execute("ROLLBACK TO tx")
        rec.error = map_error(exc, store.path)
    conn.execute("RELEASE tx")


_is_tx: type[Tx] = SqliteTx  # the handle fulfils durably.Tx (checked by mypy --strict)
