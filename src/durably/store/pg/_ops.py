"""Toolkit operations and executor ops on PostgreSQL: the same names and
guarantees as store/_ops.py and store/_executors.py (each runs inside a
journal batch, in a SAVEPOINT of its own, and commits with the step row
that records its output).

PostgreSQL runs transactions concurrently (READ COMMITTED), where SQLite
serialises writers, so the ops that read before they write say what makes
them atomic across processes: a row lock (``FOR UPDATE``), a conditional
``UPDATE`` re-checked on the latest row version, or a transaction-level
advisory lock per queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ... import _records as R
from ... import errors
from .._executors import HOST, KEEP_NOTICES, queue_window
from ._schema import NOW

_KEEP_STOPPED = 86400.0


def _one(conn: Any, sql: str, params: Any = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else (row[0] if len(row) == 1 else row)


def _require_workflow(conn: Any, workflow_id: str) -> None:
    if _one(conn, "SELECT 1 FROM workflows WHERE workflow_id = %s", (workflow_id,)) is None:
        raise errors.WorkflowNotFoundError(f"no workflow with id {workflow_id!r}", workflow_id=workflow_id)


def notice(conn: Any, kind: str, workflow_id: str | None = None, detail: str | None = None) -> None:
    conn.execute("INSERT INTO notices (kind, workflow_id, detail) VALUES (%s, %s, %s)", (kind, workflow_id, detail))


def send(conn: Any, dest: str, topic: str | None, payload: Any, key: str | None = None) -> None:
    """As store/_ops.send. A key is claimed with ``ON CONFLICT DO NOTHING``:
    of two concurrent sends with one key, one inserts, the other waits for
    it and then finds it (and delivers nothing)."""
    if key is not None:
        _require_workflow(conn, dest)
        inserted = conn.execute(
            "INSERT INTO send_keys (key, dest) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, dest)
        ).rowcount
        if not inserted:
            seen = _one(conn, "SELECT dest FROM send_keys WHERE key = %s", (key,))
            if seen != dest:
                raise errors.UsageError(
                    f"idempotency key {key!r} was already used to send to workflow {seen!r}, not {dest!r}; "
                    "a key names one send: use a distinct key per destination"
                )
            return None
    else:
        _require_workflow(conn, dest)
    conn.execute("INSERT INTO messages (dest, topic, payload) VALUES (%s, %s, %s)", (dest, topic, payload))
    notice(conn, "msg", dest, topic)
    return None


def send_many(conn: Any, messages: list[tuple[str, str | None, Any]]) -> None:
    for dest in dict.fromkeys(m[0] for m in messages):
        _require_workflow(conn, dest)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO messages (dest, topic, payload) VALUES (%s, %s, %s)", messages)
        cur.executemany(
            "INSERT INTO notices (kind, workflow_id, detail) VALUES ('msg', %s, %s)",
            list(dict.fromkeys((m[0], m[1]) for m in messages)),
        )
    return None


def recv(conn: Any, workflow_id: str, topic: str | None, final: bool) -> Any:
    """The oldest message, consumed (its row locked: consumed once)."""
    row = _one(
        conn,
        "DELETE FROM messages WHERE id = (SELECT id FROM messages WHERE dest = %s"
        " AND topic IS NOT DISTINCT FROM %s ORDER BY id LIMIT 1 FOR UPDATE) RETURNING payload",
        (workflow_id, topic),
    )
    if row is None:
        return None if final else R.NOTHING
    return row


def set_event(conn: Any, workflow_id: str, key: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO events (workflow_id, key, value) VALUES (%s, %s, %s) ON CONFLICT (workflow_id, key)"
        f" DO UPDATE SET value = excluded.value, updated_at = {NOW}",
        (workflow_id, key, value),
    )
    notice(conn, "event", workflow_id, key)
    return None


def get_event(conn: Any, workflow_id: str, key: str, final: bool) -> Any:
    row = conn.execute("SELECT value FROM events WHERE workflow_id = %s AND key = %s", (workflow_id, key)).fetchone()
    if row is None:
        return None if final else R.NOTHING
    return row[0]


def get_all_events(conn: Any, workflow_id: str, pack: Callable[[list[tuple[str, Any]]], Any]) -> Any:
    return pack(all_events(conn, workflow_id))


def event(conn: Any, workflow_id: str, key: str) -> Any:
    return _one(conn, "SELECT value FROM events WHERE workflow_id = %s AND key = %s", (workflow_id, key))


def all_events(conn: Any, workflow_id: str) -> list[tuple[str, Any]]:
    return [
        tuple(r)
        for r in conn.execute(
            "SELECT key, value FROM events WHERE workflow_id = %s AND value IS NOT NULL ORDER BY key", (workflow_id,)
        ).fetchall()
    ]


def enqueue(
    conn: Any,
    workflow_id: str,
    name: str,
    inputs: Any,
    parent_id: str | None,
    deadline: float | None,
    queue: str,
    priority: int,
    not_before: float,
    dedup_key: str | None,
    encode_id: Callable[[str], Any],
) -> Any:
    """As store/_ops.enqueue; the queue's advisory lock orders two enqueues
    with one dedup key (the second finds the first)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('durably:queue:' || %s, 0))", (queue,))
    if dedup_key is not None:
        row = _one(
            conn,
            "SELECT workflow_id FROM queue_entries WHERE queue = %s AND dedup_key = %s AND done = 0",
            (queue, dedup_key),
        )
        if row is not None:
            return encode_id(row)
    inserted = conn.execute(
        "INSERT INTO workflows (workflow_id, name, status, inputs, parent_id, deadline)"
        " VALUES (%s, %s, 'PENDING', %s, %s, %s) ON CONFLICT (workflow_id) DO NOTHING",
        (workflow_id, name, inputs, parent_id, deadline),
    ).rowcount
    if not inserted:
        existing = _one(conn, "SELECT name FROM workflows WHERE workflow_id = %s", (workflow_id,))
        if existing != name:
            raise errors.WorkflowConflictError(
                f"workflow id {workflow_id!r} already belongs to workflow {existing!r}, not {name!r}",
                workflow_id=workflow_id,
                existing_name=existing,
                requested_name=name,
            )
        return encode_id(workflow_id)
    conn.execute(
        "INSERT INTO queue_entries (workflow_id, queue, priority, not_before, dedup_key) VALUES (%s, %s, %s, %s, %s)",
        (workflow_id, queue, priority, not_before, dedup_key),
    )
    notice(conn, "queue", workflow_id, queue)
    return encode_id(workflow_id)


def fork(
    conn: Any, source: str, new_id: str, start_step: int, executor: str | None, encode_id: Callable[[str], Any]
) -> Any:
    row = _one(conn, "SELECT name, inputs FROM workflows WHERE workflow_id = %s", (source,))
    if row is None:
        raise errors.WorkflowNotFoundError(f"no workflow with id {source!r}", workflow_id=source)
    inserted = conn.execute(
        "INSERT INTO workflows (workflow_id, name, status, inputs, executor) VALUES (%s, %s, 'PENDING', %s, %s)"
        " ON CONFLICT (workflow_id) DO NOTHING",
        (new_id, row[0], row[1], executor),
    ).rowcount
    if not inserted:
        raise errors.WorkflowConflictError(
            f"workflow id {new_id!r} already exists", workflow_id=new_id, existing_name=None, requested_name=row[0]
        )
    conn.execute(
        "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at, recorded_at)"
        " SELECT %s, position, name, output, error, ident, started_at, recorded_at FROM steps"
        " WHERE workflow_id = %s ORDER BY position LIMIT %s",
        (new_id, source, start_step),
    )
    return encode_id(new_id)


# -- executors (store/_executors.py has the model) ------------------------------------------


def register(conn: Any, executor_id: str, pid: int, started: str | None, version: str, lease: float) -> None:
    """As store/_executors.register: the lease on the server's clock."""
    conn.execute(
        "INSERT INTO executors (executor_id, host, pid, pid_started, app_version, lease_until)"
        f" VALUES (%s, %s, %s, %s, %s, {NOW} + %s)",
        (executor_id, HOST, pid, started, version, lease),
    )
    conn.execute(f"DELETE FROM executors WHERE stopped_at IS NOT NULL AND stopped_at < {NOW} - %s", (_KEEP_STOPPED,))
    conn.execute(f"DELETE FROM notices WHERE created_at < {NOW} - %s", (KEEP_NOTICES,))
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
        f"UPDATE executors SET lease_until = {NOW} + %s WHERE executor_id = %s AND stopped_at IS NULL",
        (lease, executor_id),
    ).rowcount


def stop(conn: Any, executor_id: str) -> None:
    conn.execute(f"UPDATE executors SET stopped_at = {NOW}, lease_until = 0 WHERE executor_id = %s", (executor_id,))
    if conn.execute(
        "UPDATE workflows SET executor = NULL WHERE status = 'PENDING' AND executor = %s", (executor_id,)
    ).rowcount:
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
    out = []  # (the batch holds the takeovers row exclusive: OWNER_CHANGING_OPS)
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
        now = _one(conn, f"SELECT ({NOW})::float8 FROM ({lock} OFFSET 0) AS locked", (queue,))
    else:
        conn.execute(lock, (queue,))

    def start(free: int) -> list[tuple[Any, ...]]:
        ids = [
            r[0]
            for r in conn.execute(
                "UPDATE queue_entries SET started_at = %s WHERE seq IN (SELECT seq FROM queue_entries WHERE queue = %s"
                " AND started_at IS NULL AND done = 0 AND not_before <= %s ORDER BY priority, seq LIMIT %s)"
                " RETURNING workflow_id",
                (now, queue, now, free),
            )
        ]
        return _take(conn, me, version, [(wid, None, None) for wid in ids])

    claimed, wake = queue_window(
        concurrency,
        rate,
        now,
        batch,
        running=lambda: _one(
            conn,
            "SELECT count(*) FROM queue_entries WHERE queue = %s AND started_at IS NOT NULL AND done = 0",
            (queue,),
        ),
        recent=lambda lo, hi: [
            r[0]
            for r in conn.execute(
                "SELECT started_at FROM queue_entries WHERE queue = %s AND started_at IS NOT NULL"
                " AND started_at > %s AND started_at <= %s ORDER BY started_at",
                (queue, lo, hi),
            )
        ],
        start=start,
        delayed=lambda: _one(
            conn,
            "SELECT min(not_before) FROM queue_entries WHERE queue = %s AND started_at IS NULL"
            " AND done = 0 AND not_before > %s",
            (queue, now),
        ),
    )
    return claimed, wake, now


OPS: dict[str, Callable[..., Any]] = {
    "fork": fork,
    "send": send,
    "send_many": send_many,
    "recv": recv,
    "set_event": set_event,
    "get_event": get_event,
    "get_all_events": get_all_events,
    "enqueue": enqueue,
    "register_executor": register,
    "heartbeat": heartbeat,
    "prune": prune,
    "stop_executor": stop,
    "claim": claim,
    "claim_queue": claim_queue,
}

READS: dict[str, Callable[..., Any]] = {
    "event": event,
    "all_events": all_events,
}

# Ops that change a workflow's owner: their batch locks the takeovers row
# exclusive from its start (store/pg/_store.py).
OWNER_CHANGING_OPS = frozenset({"claim", "claim_queue", "stop_executor"})
