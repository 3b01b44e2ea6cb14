"""The pipelined hot path of a PostgreSQL batch: runs of step rows in one multi-row INSERT from
arrays, runs of completions in one pipelined executemany, top-level starts in one INSERT."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg

from ... import _crash
from ... import _records as R
from ._schema import NOW
from ._settings import _COMPLETE, _INSERT_STEP, _MARK

if TYPE_CHECKING:
    from ._store import PgStore


def write_plain(store: PgStore, conn: psycopg.Connection[Any], batch: Sequence[Any]) -> bool:
    """A batch of step rows, starts and completions (the hot path) in ONE
    round trip: BEGIN, the fence (``fence()`` aborts the transaction if
    any workflow changed owner since this writer last looked), the
    attempt's mark, one statement per run of records, and the COMMIT,
    sent as one query string (values bound client-side by psycopg).
    False (rolled back, nothing written): the count moved, or a run this
    path cannot write in one statement; the general path takes it."""
    parts: list[LiteralString] = ["BEGIN", "SELECT fence(%s)", _MARK]
    store._mark += 1
    params: list[Any] = [store._takeovers, store._mark_key(), store._mark]
    starts: list[Sequence[Any]] = []
    i, n = 0, len(batch)
    while i < n:
        kind = batch[i].kind
        j = i
        while j < n and batch[j].kind == kind:
            j += 1
        run = batch[i:j]
        if kind == R.STEP:
            parts.append(steps_sql(store))
            params.append(time.monotonic())
            params += [list(c) for c in zip(*(rec.params for rec in run), strict=False)]
        elif kind == R.COMPLETE:
            if len({rec.params[3] for rec in run}) < len(run):
                return False  # two ends of one workflow: only the first applies (executemany does that)
            parts.append(completes_sql(store))
            params += [list(c) for c in zip(*(rec.params for rec in run), strict=False)]
        else:
            sql, values = starts_sql(store, run)
            parts.append(sql)
            params += values
            starts.append(run)
        i = j
    armed = _crash.ARMED
    if not armed:
        parts.append("COMMIT")
    cur = psycopg.ClientCursor(conn)
    store._in_doubt = store._mark
    try:
        cur.execute("; ".join(parts), params)
    except psycopg.Error as exc:
        if getattr(exc, "sqlstate", None) != "DRB01":
            raise
        store._abort(conn)
        return False
    rows: list[set[Any]] = []  # the row results, in order: fence(), then each start run's created ids
    while True:
        if cur.description is not None:
            rows.append({r[0] for r in cur.fetchall()})
        if not cur.nextset():
            break
    for run, ids in zip(starts, rows[1:], strict=False):
        started(store, conn, run, ids)
    if armed:
        if store.owned:
            store._lost_to_a_race(batch)
        _crash.hit("store.before_commit")
        store._commit(conn)
    return True


def steps_sql(store: PgStore) -> LiteralString:
    """A run of step rows from arrays; its first parameter is ``at`` (see _STARTED)."""
    return (
        "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at)"
        f" SELECT w, p, n, o, e, i, {NOW} + (s - %s::float8) FROM unnest(%s::text[], %s::int[], %s::text[],"
        f" %s::{store._value_type}[], %s::text[], %s::text[], %s::float8[]) AS u(w, p, n, o, e, i, s)"
    )


def completes_sql(store: PgStore) -> LiteralString:
    return (
        f"UPDATE workflows w SET status = u.s, output = u.o, error = u.e, parked = NULL, updated_at = {NOW}"
        f" FROM unnest(%s::text[], %s::{store._value_type}[], %s::text[], %s::text[]) AS u(s, o, e, id)"
        " WHERE w.workflow_id = u.id AND w.status = 'PENDING'"
    )


def starts_sql(store: PgStore, run: Sequence[Any]) -> tuple[LiteralString, list[Any]]:
    """A run of top-level starts as one INSERT returning the ids it
    created (a client's starts leave their notices too)."""
    owner = store.start_owner
    cols: list[list[Any]] = [[], [], [], [], [], []]
    for rec in run:
        wid, name, inputs, parent_id, _parent_step, *extra = rec.params
        deadline, trace = (extra + [None, None])[:2]
        for col, value in zip(cols, (wid, name, inputs, parent_id, deadline, trace), strict=False):
            col.append(value)
    v = store._value_type
    sql = (
        "INSERT INTO workflows (workflow_id, name, status, inputs, parent_id, deadline, executor, app_version, trace)"
        f" SELECT w, n, 'PENDING', i, p, d, %s, %s, t FROM unnest(%s::text[], %s::text[], %s::{v}[],"
        " %s::text[], %s::float8[], %s::text[]) AS u(w, n, i, p, d, t) ON CONFLICT (workflow_id) DO NOTHING"
        " RETURNING workflow_id"
    )
    if owner is None:
        sql = (
            f"WITH ins AS ({sql}), noted AS (INSERT INTO notices (kind, workflow_id)"
            " SELECT 'start', workflow_id FROM ins) SELECT workflow_id FROM ins"
        )
    return sql, [owner, None if owner is None else store.app_version, *cols]


def started(store: PgStore, conn: psycopg.Connection[Any], run: Sequence[Any], created: set[str]) -> None:
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


def write_run(store: PgStore, conn: psycopg.Connection[Any], run: Sequence[Any]) -> None:
    if run[0].kind == R.STEP:
        insert_steps(store, conn, run)
    else:
        with conn.cursor() as cur:
            cur.executemany(_COMPLETE, [rec.params for rec in run])


def finish(store: PgStore, conn: psycopg.Connection[Any], batch: Sequence[Any], last_run: Sequence[Any]) -> None:
    """The last run of plain records and the COMMIT, in one round trip."""
    if store.owned:
        store._lost_to_a_race(batch)
    if _crash.ARMED:
        if last_run:
            write_run(store, conn, last_run)
            last_run = ()
        _crash.hit("store.before_commit")
    if last_run:
        with conn.pipeline():
            write_run(store, conn, last_run)
            store._commit(conn)
    else:
        store._commit(conn)


def insert_steps(store: PgStore, conn: psycopg.Connection[Any], recs: Sequence[Any]) -> None:
    if len(recs) == 1:
        conn.execute(_INSERT_STEP, (*recs[0].params, time.monotonic()))
        return
    conn.execute(
        steps_sql(store),
        [time.monotonic(), *(list(c) for c in zip(*(rec.params for rec in recs), strict=False))],
    )
