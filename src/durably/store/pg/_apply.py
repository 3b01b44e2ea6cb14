"""Applying one journal record on PostgreSQL, outside the pipelined path: a start, an op, a
transaction step, a named write, or any record alone in its SAVEPOINT (a batch applied again
record by record after the server rejected one)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psycopg

from ... import _records as R
from ... import errors
from ...codec import encode_error
from . import _executors, _txstep
from ._errors import CONNECTION_ERRORS, RECORD_ERRORS, map_error
from ._errors import fatal as _fatal
from ._settings import _COMPLETE, _INSERT_STEP, _INSERT_WORKFLOW, WRITES

if TYPE_CHECKING:
    from ._store import PgStore


def apply_isolated(store: PgStore, conn: psycopg.Connection[Any], rec: Any) -> None:
    try:
        with conn.transaction():  # a SAVEPOINT inside the batch
            if rec.kind == R.STEP:
                conn.execute(_INSERT_STEP, (*rec.params, time.monotonic()))
            elif rec.kind == R.COMPLETE:
                conn.execute(_COMPLETE, rec.params)
            else:
                apply_one(store, conn, rec)
    except RECORD_ERRORS as exc:
        rec.result = None
        rec.error = map_error(exc, store.path)
    except CONNECTION_ERRORS:
        raise
    except Exception as exc:
        if isinstance(exc, errors.DurablyError) or isinstance(exc, psycopg.DatabaseError) and _fatal(exc):
            raise
        rec.result = None
        rec.error = errors.InternalError(f"durably could not write this record: {exc!r}")
        rec.error.__cause__ = exc


def apply_one(store: PgStore, conn: psycopg.Connection[Any], rec: Any) -> None:
    kind = rec.kind
    if kind == R.START:
        start(store, conn, rec)
    elif kind == R.TX:
        _txstep.run_step(store, conn, rec)
    elif kind == R.OP:
        op(store, conn, rec)
    elif kind == R.WRITE:
        name, params = rec.params
        rec.result = conn.execute(WRITES[name], params).rowcount
    elif kind == R.STEP:
        conn.execute(_INSERT_STEP, (*rec.params, time.monotonic()))
    elif kind == R.COMPLETE:
        conn.execute(_COMPLETE, rec.params)
    else:
        raise errors.InternalError(f"unknown journal record kind {kind!r}")


def start(store: PgStore, conn: psycopg.Connection[Any], rec: Any) -> None:
    workflow_id, name, inputs, parent_id, parent_step, *extra = rec.params
    deadline = extra[0] if extra else None
    trace = extra[1] if len(extra) > 1 else None
    owner = store.start_owner
    inserted = conn.execute(
        _INSERT_WORKFLOW,
        (workflow_id, name, inputs, parent_id, deadline, owner, None if owner is None else store.app_version, trace),
    ).rowcount
    if inserted and owner is None:
        _executors.notice(conn, "start", workflow_id)
    if not inserted:
        row = conn.execute(store.Q.name_status, (workflow_id,)).fetchone()
        rec.result = None if row is None else tuple(row)
    else:
        rec.result = None
    if parent_step is not None:
        wid, (pos, ident), step_name, output = parent_step
        conn.execute(_INSERT_STEP, (wid, pos, step_name, output, None, ident, None, None))


def op(store: PgStore, conn: psycopg.Connection[Any], rec: Any) -> None:
    workflow_id, row, name, op, args = rec.params
    try:
        with conn.transaction():
            error = None
            try:
                with conn.transaction():
                    output = _executors.OPS[op](store._ops_on(conn), *args)
            except errors.DurablyError as exc:  # a typed refusal: the step's outcome, its writes undone
                output, error = None, encode_error(exc)
                if workflow_id is None:
                    rec.error = exc
            if op in ("claim", "claim_queue") and error is None:
                store._own(output)
            if output is R.NOTHING:
                rec.result = R.NOTHING
            else:
                if workflow_id is not None:
                    pos, ident = row
                    conn.execute(_INSERT_STEP, (workflow_id, pos, name, output, error, ident, None, None))
                rec.result = (output, error)
    except RECORD_ERRORS as exc:
        rec.error = map_error(exc, store.path)
