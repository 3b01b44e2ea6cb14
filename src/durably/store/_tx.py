"""The handle a transaction step receives: SQL inside the writer's batch."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import apsw

from .. import errors
from ._errors import FATAL_ERRORS, map_error
from ._schema import MIGRATIONS

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
    conn = apsw.Connection(":memory:")
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

    def __init__(self, conn: apsw.Connection, why: Any = None) -> None:
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
