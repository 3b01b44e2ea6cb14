"""Executor ops on PostgreSQL (leases, claims): the same names and
guarantees as store/_executors.py, run inside a journal batch in a SAVEPOINT
of their own. The toolkit ops are shared (store/_ops.py); :class:`PgDb` is
how they reach PostgreSQL.

PostgreSQL runs transactions concurrently (READ COMMITTED), where SQLite
serialises writers, so the ops that read before they write say what makes
them atomic across processes: a row lock (``FOR UPDATE``), a conditional
``UPDATE`` re-checked on the latest row version, or a transaction-level
advisory lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from .._executors import HOST, KEEP_NOTICES, queue_window
from .._ops import PG_OPS, TOOLKIT_OPS, on_conn
from .._queries import PG_EXEC as _Q
from .._queries import literal_sql
from ._schema import NOW

_KEEP_STOPPED = 86400.0


def _one(conn: Any, sql: str, params: Any = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else (row[0] if len(row) == 1 else row)


def notice(conn: Any, kind: str, workflow_id: str | None = None, detail: str | None = None) -> None:
    conn.execute(PG_OPS["notice"], (kind, workflow_id, detail))


class PgDb:
    """PostgreSQL's :class:`~durably.store._ops.OpDb` (one per writer connection)."""

    __slots__ = ("conn",)
    q = PG_OPS
    postgres = True

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def one(self, sql: str, params: Any) -> Any:
        return _one(self.conn, sql, params)

    def all(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(literal_sql(sql), params).fetchall()]

    def run(self, sql: str, params: Any) -> int:
        return self.conn.execute(literal_sql(sql), params).rowcount

    def many(self, sql: str, seq: Iterable[Any]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(literal_sql(sql), list(seq))

    def returned(self, sql: str, seq: Iterable[Any]) -> list[Any]:
        out: list[Any] = []
        with self.conn.cursor() as cur:
            cur.executemany(literal_sql(sql), list(seq), returning=True)
            while True:
                out += [row[0] for row in cur.fetchall()]
                if not cur.nextset():
                    return out


# -- executors (store/_executors.py has the model) ------------------------------------------


def register(conn: Any, executor_id: str, pid: int, started: str | None, version: str, lease: float) -> None:
    """As store/_executors.register: the lease on the server's clock."""
    conn.execute(
        _Q["register"],
        (executor_id, HOST, pid, started, version, lease),
    )
    conn.execute(_Q["drop_stopped"], (_KEEP_STOPPED,))
    conn.execute(_Q["drop_notices"], (KEEP_NOTICES,))
    # the batch marks of executors whose rows are gone (store/pg/_store.py, _committed)
    conn.execute(
        "DELETE FROM engine_state WHERE key LIKE 'batch:%%' AND substr(key, 7) NOT IN"
        " (SELECT executor_id FROM executors)"
    )
    return None


def prune(conn: Any, limit: int) -> tuple[int, int]:
    """As store/_executors.prune (the same rows may go). Rows another
    transaction holds are skipped (``SKIP LOCKED``): two executors pruning
    at once never wait for, or deadlock on, each other. The batch marks of
    the executors deleted go with them."""
    gone = [
        r[0]
        for r in conn.execute(
            f"DELETE FROM executors WHERE executor_id IN (SELECT executor_id FROM executors e"
            f" WHERE coalesce(stopped_at, lease_until) < {NOW} - %s AND NOT EXISTS (SELECT 1 FROM workflows w"
            " WHERE w.executor = e.executor_id AND w.status = 'PENDING') LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING executor_id",
            (_KEEP_STOPPED, limit),
        ).fetchall()
    ]
    if gone:
        conn.execute("DELETE FROM engine_state WHERE key = ANY(%s)", ([f"batch:{eid}" for eid in gone],))
    notices = conn.execute(
        "DELETE FROM notices WHERE id IN (SELECT id FROM notices ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
        f" AND created_at < {NOW} - %s",
        (limit, KEEP_NOTICES),
    ).rowcount
    return len(gone), notices


def heartbeat(conn: Any, executor_id: str, lease: float) -> Any:
    """The lease renewed on the server's clock (``clock_timestamp()``, the
    moment of the statement): the hosts' clocks play no part in leases."""
    return conn.execute(
        _Q["heartbeat"],
        (lease, executor_id),
    ).rowcount


def stop(conn: Any, executor_id: str) -> None:
    conn.execute(_Q["stop"], (executor_id,))
    if conn.execute(_Q["release_all"], (executor_id,)).rowcount:
        notice(conn, "start")
    return None


# As store/_executors._GONE: an expired lease is one past the server's clock
# at this statement, unless the claimer saw its owner renew lately (``live``).
_GONE = (
    "(executor IS NULL OR executor = ANY(%(dead)s)"
    " OR (NOT executor = ANY(%(live)s) AND NOT EXISTS (SELECT 1 FROM executors e"
    " WHERE e.executor_id = workflows.executor"
    f" AND e.stopped_at IS NULL AND e.lease_until >= {NOW})))"
)


def claimable_sql(only: bool) -> str:
    where = (
        f"status = 'PENDING' AND name = ANY(%(names)s) AND (app_version IS NULL OR app_version = %(version)s)"
        f" AND {_GONE} AND NOT EXISTS (SELECT 1 FROM queue_entries q WHERE q.workflow_id = workflows.workflow_id"
        " AND q.started_at IS NULL AND q.done = 0)"
    )
    if only:
        where += " AND workflow_id = ANY(%(only)s)"
    return f"SELECT workflow_id, executor, epoch FROM workflows WHERE {where} ORDER BY seq DESC LIMIT %(limit)s"


def claim_params(version: str, names: str, dead: str, live: str, limit: int, only: str | None) -> dict[str, Any]:
    return {
        "names": json.loads(names),
        "version": version,
        "dead": json.loads(dead),
        "live": json.loads(live),
        "limit": limit,
        "only": None if only is None else json.loads(only),
    }


def claim(
    conn: Any, me: str, version: str, names: str, dead: str, live: str, limit: int, only: str | None
) -> list[tuple[Any, ...]]:
    """As store/_executors.claim. Each row is taken by compare-and-set on
    its epoch: of two executors claiming one workflow, the second's UPDATE
    waits for the first's commit, then finds the epoch moved and takes
    nothing."""
    rows = conn.execute(
        claimable_sql(only is not None), claim_params(version, names, dead, live, limit, only)
    ).fetchall()
    return _take(conn, me, version, [(wid, before, epoch) for wid, before, epoch in rows])


def _take(conn: Any, me: str, version: str, rows: list[tuple[str, Any, Any]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []  # (the batch holds the takeovers row exclusive: OWNER_CHANGING_OPS)
    for wid, before, epoch in rows:
        taken_from_owner = before is not None and before != me
        row = conn.execute(
            "UPDATE workflows SET executor = %s, epoch = epoch + 1, app_version = coalesce(app_version, %s),"
            " recovery_attempts = recovery_attempts + %s WHERE workflow_id = %s AND status = 'PENDING'"
            " AND (%s::bigint IS NULL OR epoch = %s::bigint)"
            " RETURNING workflow_id, name, inputs, recovery_attempts, epoch",
            (me, version, 1 if taken_from_owner else 0, wid, epoch, epoch),
        ).fetchone()
        if row is not None:
            out.append((*row, before))
    return out


def claim_queue(
    conn: Any,
    me: str,
    version: str,
    queue: str,
    concurrency: int | None,
    rate: tuple[int, float] | None,
    now: float | None,
    batch: int,
) -> Any:
    """As store/_executors.claim_queue; the queue's advisory lock makes the
    count-then-start atomic across processes. ``now`` None: the server's
    clock, read once the lock is held (an enqueue holds it to its commit,
    so every entry this claim sees was created before that moment)."""
    lock = "SELECT pg_advisory_xact_lock(hashtextextended('durably:queue:' || %s, 0))"
    if now is None:
        at: float = _one(conn, f"SELECT ({NOW})::float8 FROM ({lock} OFFSET 0) AS locked", (queue,))
    else:
        at = now
        conn.execute(lock, (queue,))

    def start(free: int) -> list[tuple[Any, ...]]:
        ids = [
            r[0]
            for r in conn.execute(
                "UPDATE queue_entries SET started_at = %s WHERE seq IN (SELECT seq FROM queue_entries WHERE queue = %s"
                " AND started_at IS NULL AND done = 0 AND not_before <= %s ORDER BY priority, seq LIMIT %s)"
                " RETURNING workflow_id",
                (at, queue, at, free),
            )
        ]
        return _take(conn, me, version, [(wid, None, None) for wid in ids])

    claimed, wake = queue_window(
        concurrency,
        rate,
        at,
        batch,
        running=lambda: _one(conn, _Q["queue_running"], (queue,)),
        recent=lambda lo, hi: [r[0] for r in conn.execute(_Q["queue_recent"], (queue, lo, hi))],
        start=start,
        delayed=lambda: _one(conn, _Q["queue_delayed"], (queue, at)),
    )
    return claimed, wake, at


def _no_vacuum(db: Any, pages: int) -> int:
    return 0


OPS: dict[str, Callable[..., Any]] = {
    **TOOLKIT_OPS,
    "register_executor": on_conn(register),
    "heartbeat": on_conn(heartbeat),
    "prune": on_conn(prune),
    "stop_executor": on_conn(stop),
    "claim": on_conn(claim),
    "claim_queue": on_conn(claim_queue),
    # PostgreSQL's autovacuum makes freed space reusable; durably never runs VACUUM FULL
    "vacuum": _no_vacuum,
}
