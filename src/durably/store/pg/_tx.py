"""The handle a transaction step receives on PostgreSQL: the user's SQL runs
on the writer connection, inside the journal batch's transaction, in a
SAVEPOINT of its own, so it commits with the step's outcome or not at all
(DBOS's model). Parameters use psycopg's placeholders (``%s``, ``%(name)s``)
or SQLite's ``?`` (:func:`portable`).

The wall around durably's own tables is a role (``_sandbox``): the step's
SQL runs as a role with no rights on durably's schema, and the writer's
session is put back after the step. The statement check here comes first
and is only a friendly error for the obvious mistakes: a statement that
names durably's schema, controls the transaction (BEGIN, COMMIT, ROLLBACK,
SAVEPOINT, PREPARE TRANSACTION), changes session state (SET, RESET, LISTEN,
PREPARE, DEALLOCATE, ...), or runs procedural code (DO, CALL) is refused
with a UsageError before it reaches the server. Before each statement the
handle checks that the session still runs as that role. The time budget is
``statement_timeout``, set before each statement to what is left of it; a
cancel or close interrupts the running statement (``cancel_safe``). A lost
connection is kept (``lost``) for the writer, which reconnects and runs the
batch again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any, LiteralString

import psycopg
from psycopg import errors as pge

from ... import errors
from .._queries import literal_sql
from ..contract import Tx
from ._connection import first
from ._errors import CONNECTION_ERRORS, map_error
from ._sandbox import STATEMENT

_DENIED = re.compile(
    r"^\s*(begin|start\s+transaction|commit|end|rollback|abort|savepoint|release|prepare|deallocate|"
    r"set|reset|listen|unlisten|notify|discard|do|call|copy|vacuum|lock|load)\b",
    re.IGNORECASE,
)


_QUOTED_OR_MARK = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


def portable(sql: str, params: Any) -> LiteralString:
    """SQLite-style ``?`` placeholders, so one transaction step runs on both
    backends: with positional parameters and no ``%s`` in it, each ``?``
    outside quotes becomes ``%s`` (and a literal ``%`` is escaped). SQL
    written for psycopg (``%s``, ``%(name)s``) is left as it is. The user's
    SQL, their values passed as parameters (``literal_sql``)."""
    if not params or isinstance(params, dict) or "%s" in sql or "%(" in sql:
        return literal_sql(sql)
    return literal_sql(_QUOTED_OR_MARK.sub(lambda m: {"?": "%s", "%": "%%"}.get(m.group(0), m.group(0)), sql))


class PgTx:
    """SQL access for a ``@engine.transaction`` step on PostgreSQL (see the
    module docstring); the same methods as the SQLite ``Tx``."""

    __slots__ = (
        "_conn",
        "_open",
        "lost",
        "breach",
        "expired",
        "_why",
        "_deadline",
        "_schema_ref",
        "_rowcount",
        "failed",
        "_path",
        "_role",
        "_login",
    )

    def __init__(
        self,
        conn: psycopg.Connection,
        schema: str,
        deadline: float,
        why: Callable[[], errors.TransactionTimeoutError],
        *,
        path: str,
        role: str,
        login: str,
    ) -> None:
        self._conn = conn
        self._open = True
        self._path = path
        self._role = role
        self._login = login
        # The connection went (the writer reconnects and runs the batch again)
        self.lost: BaseException | None = None
        # The session stopped running as the step's role (the step fails, rolled back)
        self.breach: errors.UsageError | None = None
        self.expired: errors.TransactionTimeoutError | None = None
        self._why = why
        self._deadline = deadline
        self._schema_ref = re.compile(rf'(^|[^\w$"])"?{re.escape(schema)}"?\s*\.', re.IGNORECASE)
        self._rowcount = -1
        # The first SQL error of the step (PostgreSQL aborts the step's SQL
        # there: if the body catches it and returns, it is still the outcome).
        self.failed: errors.DurablyError | None = None

    def _check(self, sql: str) -> None:
        if not self._open:
            raise errors.UsageError("a Tx handle is only valid inside its transaction step")
        if not isinstance(sql, str):
            raise errors.UsageError(f"SQL must be a str, not {type(sql).__name__}")
        if self.breach is not None:
            raise self.breach
        if _DENIED.match(sql) or ";" in sql.strip().rstrip(";") or self._schema_ref.search(sql):
            raise errors.UsageError(
                "a transaction step may run one statement at a time, and no transaction control, SET/RESET, "
                "PREPARE/DEALLOCATE, DO/CALL/COPY/LOCK/LISTEN, or any statement naming durably's schema "
                f"(refused: {sql[:80]!r})"
            )

    def _run(self, sql: str, call: Callable[[psycopg.Cursor[Any]], Any]) -> Any:
        self._check(sql)
        left = self._deadline - time.monotonic()
        if left <= 0:
            self.expired = self._why()
            raise self.expired
        try:
            with self._conn.cursor() as cur:
                _timeout, current, session = first(cur.execute(STATEMENT, (f"{max(1, int(left * 1000))}ms",)))
                if (current, session) != (self._role, self._login):
                    # an earlier statement switched role (set_config('role', ...)): not one more statement
                    self.breach = errors.UsageError(
                        f"a transaction step runs as role {self._role!r} and may not change it (now {current!r}, "
                        f"session {session!r}): its SQL was rolled back"
                    )
                    raise self.breach
                out = call(cur)
                self._rowcount = cur.rowcount
                return out
        except pge.QueryCanceled as exc:
            self.expired = self._why()
            raise self.expired from exc
        except CONNECTION_ERRORS as exc:
            if self.lost is None:
                self.lost = exc
            raise map_error(exc, self._path) from exc
        except pge.InsufficientPrivilege as exc:
            err: errors.DurablyError = errors.UsageError(
                f"a transaction step's SQL runs as role {self._role!r}, which has no rights on durably's schema and "
                f"only those granted to it elsewhere: {exc} (database {self._path!r})"
            )
            err.__cause__ = exc
            if self.failed is None:
                self.failed = err
            raise err from exc
        except psycopg.Error as exc:
            err = map_error(exc, self._path)
            if self.failed is None:
                self.failed = err
            raise err from exc

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement; return all its result rows."""

        def run(cur: psycopg.Cursor[Any]) -> list[tuple[Any, ...]]:
            cur.execute(portable(sql, params), params)
            return [tuple(r) for r in cur.fetchall()] if cur.description is not None else []

        rows: list[tuple[Any, ...]] = self._run(sql, run)
        return rows

    def executemany(self, sql: str, seq: Iterable[Any]) -> None:
        """Run one statement for each parameter set in ``seq``."""
        rows = list(seq)
        self._run(sql, lambda cur: cur.executemany(portable(sql, rows[0] if rows else None), rows))

    def query_one(self, sql: str, params: Any = None) -> tuple[Any, ...] | None:
        """First row of a query, or None."""
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    @property
    def changes(self) -> int:
        """Rows changed by the last statement."""
        return max(self._rowcount, 0)

    def _close(self) -> None:
        self._open = False


_is_tx: type[Tx] = PgTx  # the handle fulfils durably.Tx (checked by mypy --strict)
