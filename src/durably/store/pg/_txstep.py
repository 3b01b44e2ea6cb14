"""A transaction step on PostgreSQL: its SQL runs in a SAVEPOINT of the journal batch, as the
sandbox role (``_sandbox``), within its time budget; the writer's session is put back after it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql as pgsql

from ... import errors
from ...codec import encode_error
from .._interrupts import why_interrupted
from . import _connection, _sandbox
from ._errors import CONNECTION_ERRORS
from ._settings import (
    _INSERT_STEP,
    IDLE_IN_TX,
    TX_LOSSES,
)
from ._tx import PgTx

if TYPE_CHECKING:
    from ._store import PgStore


def run_step(store: PgStore, conn: psycopg.Connection[Any], rec: Any) -> None:
    """A transaction step: its SQL in a savepoint, as the sandbox role
    (``_sandbox``), then the session put back and its outcome row written."""
    workflow_id, (pos, ident), name, body = rec.params
    budget = getattr(body, "timeout", None) or store.tx_budget
    deadline = time.monotonic() + budget

    why = why_interrupted(store, workflow_id, name, budget)

    if store._stop_all_tx or workflow_id in store._stop_tx:
        rec.error = errors.NotOpenError(f"transaction step {name!r} not run: its workflow is stopping")
        return
    if not store._role_ready:
        refused = prepare_role(store)
        if refused is not None:
            rec.error = refused  # never run unsandboxed; nothing recorded
            return
        store._role_ready = True
    losses = store._tx_lost.get(id(rec), 0)
    if losses >= TX_LOSSES:
        # (a DBA killing it each time, or SQL that ends its own backend): not run again
        gone = errors.DatabaseUnavailableError(
            f"transaction step {name!r} lost its connection to {store.path} {losses} times while it ran; "
            "it was not run again",
            path=store.path,
        )
        rec.result = (None, encode_error(gone))
        conn.execute(_INSERT_STEP, (workflow_id, pos, name, None, rec.result[1], ident, None, None))
        return
    try:
        sandboxed(
            store,
            conn,
            rec,
            budget,
            PgTx(conn, store.schema, deadline, why, path=store.path, role=store.tx_role, login=store._login),
        )
    except psycopg.Error as exc:
        if not isinstance(exc, CONNECTION_ERRORS) and not conn.closed and not conn.broken:
            raise
        # The connection went while the step ran (a DBA's pg_terminate_backend, a restart, an
        # idle timeout its SQL set): the batch, the step's SQL with it, was rolled back; flush
        # reconnects and applies it again.
        store._tx_lost[id(rec)] = losses + 1
        if isinstance(exc, CONNECTION_ERRORS):
            raise
        raise psycopg.OperationalError(f"the connection was lost during transaction step {name!r}: {exc}") from exc


def sandboxed(store: PgStore, conn: psycopg.Connection[Any], rec: Any, budget: float, tx: PgTx) -> None:
    """The step's body in its savepoint as the sandbox role, the checks
    after it, the session put back, its outcome row (``_sandbox``)."""
    workflow_id, (pos, ident), name, _ = rec.params
    # nothing prepared inside the step: the session's prepared statements are compared around it
    threshold, conn.prepare_threshold = conn.prepare_threshold, None
    try:
        cur = psycopg.ClientCursor(conn)
        if not _enter(store, cur, rec, budget):
            return
        before = _sandbox.rows(cur)[1]
        output, error = _call_body(store, rec, tx)
        output, error = _outcome(store, rec, tx, output, error)
        if error is None and rec.error is None:  # its SQL went well: is its session still the sandbox's?
            breach = _session_breach(store, cur, before)
            if breach is not None:
                output, error = None, breach
        after = _restore(store, cur, error is not None or rec.error is not None)
    finally:
        conn.prepare_threshold = threshold
    if set(after[0]) != set(before[0]):
        # The step prepared or dropped prepared statements (not transactional): drop them all;
        # psycopg, seeing DEALLOCATE ALL, forgets the ones it prepared.
        conn.execute("DEALLOCATE ALL")
    if rec.error is None:
        conn.execute(_INSERT_STEP, (workflow_id, pos, name, output, error, ident, None, None))
        rec.result = (output, error)


def _enter(store: PgStore, cur: psycopg.ClientCursor[Any], rec: Any, budget: float) -> bool:
    """Open the step's savepoint and switch to the sandbox role. False
    (``rec.error`` set, the savepoint gone) when the role is refused."""
    try:
        cur.execute(
            pgsql.SQL(_sandbox.ENTER).format(snapshot=pgsql.SQL(store._snapshot), role=pgsql.Identifier(store.tx_role)),
            (_connection.step_path(store), f"{int((budget + IDLE_IN_TX) * 1000)}ms"),
        )
    except CONNECTION_ERRORS:
        raise
    except psycopg.Error as exc:  # the role went (dropped, membership revoked) since it was checked
        cur.execute("ROLLBACK TO SAVEPOINT durably_tx; RELEASE SAVEPOINT durably_tx")
        store._role_ready = False
        rec.error = errors.TxRoleError(
            f"transaction step {rec.params[2]!r} not run: cannot switch to role {store.tx_role!r} on "
            f"{store.path}: {exc}",
            path=store.path,
            role=store.tx_role,
        )
        return False
    return True


def _call_body(store: PgStore, rec: Any, tx: PgTx) -> tuple[Any, Any]:
    """Call the body with ``tx``; its (output, error), both None when it
    raised (``rec.error`` set, or ``tx`` saw why)."""
    output = error = None
    store._tx_running = rec.params[0]
    try:
        output, error = rec.params[3](tx)
    except errors.SerializationError as exc:
        rec.error = exc
    except Exception:
        if tx.lost is None and tx.expired is None and tx.breach is None:
            raise  # not the step's SQL: the batch finds the culprit record by record
    except BaseException as exc:
        rec.error = exc  # KeyboardInterrupt/SystemExit: SQL undone, re-raised in the workflow's thread
    finally:
        store._tx_running = None
        tx._close()
    return output, error


def _outcome(store: PgStore, rec: Any, tx: PgTx, output: Any, error: Any) -> tuple[Any, Any]:
    """The step's (output, error) after what ``tx`` saw: a lost
    connection (raised), the time budget, a breach, an SQL error the body
    caught; ``rec.error`` set when the engine closed meanwhile."""
    if tx.lost is not None:
        raise tx.lost  # (see _transaction)
    if tx.expired is not None:
        if store._stop_all_tx:
            rec.error = errors.NotOpenError(
                f"the engine closed while transaction step {rec.params[2]!r} ran; it runs again at the next open"
            )
        else:
            output, error = None, encode_error(tx.expired)
    elif tx.breach is not None:
        output, error = None, encode_error(tx.breach)
    elif tx.failed is not None and error is None and rec.error is None:
        # The body caught an SQL error and went on: PostgreSQL aborted
        # the step's SQL at that error, so that error is its outcome.
        output, error = None, encode_error(tx.failed)
    return output, error


def _session_breach(store: PgStore, cur: psycopg.ClientCursor[Any], before: tuple[Any, ...]) -> str | None:
    """The encoded breach when the step's session is no longer the
    sandbox's (role, session, read-only, prepared statements); None when it is."""
    cur.execute(pgsql.SQL(_sandbox.CHECK).format(snapshot=pgsql.SQL(store._snapshot)))
    _timeout, (current, session, read_only), now = _sandbox.rows(cur)
    breach = _sandbox.breach(store.tx_role, store._login, current, session, read_only, before, now)
    return None if breach is None else encode_error(breach)


def _restore(store: PgStore, cur: psycopg.ClientCursor[Any], undo: bool) -> tuple[Any, ...]:
    """Put the writer's session back (undoing the step's SQL first when
    ``undo``); the last row ``_sandbox.rows`` reads after it."""
    restore = pgsql.SQL(_sandbox.RESTORE).format(
        settings=pgsql.SQL(_connection.settings_sql(store)), snapshot=pgsql.SQL(store._snapshot)
    )
    if undo:
        restore = pgsql.SQL("ROLLBACK TO SAVEPOINT durably_tx; ") + restore
    cur.execute(restore, _connection.settings(store, True))
    return _sandbox.rows(cur)[-1]


def prepare_role(store: PgStore) -> errors.DurablyError | None:
    """Set up the sandbox role (``_sandbox.prepare``) on a pooled
    connection, in a transaction of its own; None when it is usable. A
    concurrent GRANT elsewhere may fail it once: tried again."""
    refused: errors.DurablyError | None = None
    for attempt in range(3):
        try:
            ready: errors.DurablyError | None = store._reading(
                lambda c: _sandbox.prepare(c, store.tx_role, store.schema, store._user_schemas, store.path)
            )
            return ready
        except errors.DurablyError as exc:
            refused = exc
            time.sleep(0.05 * (attempt + 1))
    return refused
