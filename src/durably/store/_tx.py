"""The handle a transaction step receives: SQL inside the writer's batch."""

from __future__ import annotations

from typing import Any, Iterable

import apsw

from .. import errors
from ._errors import FATAL_ERRORS, map_error

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
_ENGINE_TABLES = {"workflows", "steps"}
_DDL_ON_ENGINE = {apsw.SQLITE_DROP_TABLE, apsw.SQLITE_ALTER_TABLE, apsw.SQLITE_DROP_INDEX}


def authorizer(action: int, p1: str | None, p2: str | None, dbname: str | None, trigger: str | None) -> int:
    """Deny transaction control and writes to durably's own tables."""
    if action in _DENIED_ACTIONS:
        return apsw.SQLITE_DENY
    if (action in _WRITES or action in _DDL_ON_ENGINE) and p1 in _ENGINE_TABLES:
        return apsw.SQLITE_DENY
    return apsw.SQLITE_OK


class Tx:
    """SQL access for a ``@engine.transaction`` step.

    Runs on the journal's writer thread inside the batch transaction, in a
    SAVEPOINT of its own: the statements commit in the same fsync as the
    step's outcome record, or not at all. Transaction control statements,
    PRAGMAs and writes to durably's tables are refused.
    """

    __slots__ = ("_conn", "_open", "_fatal")

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn
        self._open = True
        # An environment error (I/O, corruption, full disk) seen by user SQL.
        # The store re-raises it after the step body even if the body caught
        # it: the whole batch must fail, not only this step.
        self._fatal: errors.DurablyError | None = None

    def execute(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Run one statement; return all its result rows."""
        return self._run(lambda: list(self._conn.execute(sql, params)))

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
        except apsw.AuthError as exc:
            raise errors.UsageError(
                "a transaction step may not run BEGIN/COMMIT/SAVEPOINT, PRAGMA, ATTACH, "
                f"or write durably's own tables ({exc})"
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
