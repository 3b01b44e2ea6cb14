"""Toolkit operations: SQL run on the writer inside a journal batch.

Each op runs in its own SAVEPOINT and returns the step output to record
(already encoded), ``NOTHING`` to record nothing, or raises a DurablyError
that becomes the step's recorded error. Because the op and the step row
commit in one transaction, a message is consumed exactly once, an event is
published exactly once, a batch of messages is delivered all or none, a
keyed client send is delivered once, and a queue entry is created exactly
once, whatever crashes around them.

``READS`` are plain reads of committed data, run by ``Store.read`` on the
read connection (client calls outside a workflow; nothing is recorded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apsw

from .. import _records as R
from .. import errors
from . import _executors
from ._executors import notice


def _require_workflow(conn: apsw.Connection, workflow_id: str) -> None:
    if conn.execute("SELECT 1 FROM workflows WHERE workflow_id = ?", (workflow_id,)).get is None:
        raise errors.WorkflowNotFoundError(f"no workflow with id {workflow_id!r}", workflow_id=workflow_id)


def send(conn: apsw.Connection, dest: str, topic: str | None, payload: Any, key: str | None = None) -> None:
    """Deliver one message. With an idempotency ``key`` (client sends only),
    the key and the message commit together: a key already recorded for
    ``dest`` makes this a no-op; one recorded for another destination is a
    UsageError (and nothing is delivered)."""
    if key is not None:
        seen = conn.execute("SELECT dest FROM send_keys WHERE key = ?", (key,)).get
        if seen is not None:
            if seen != dest:
                raise errors.UsageError(
                    f"idempotency key {key!r} was already used to send to workflow {seen!r}, not {dest!r}; "
                    "a key names one send: use a distinct key per destination"
                )
            return None  # delivered before: a retry delivers nothing new
        _require_workflow(conn, dest)
        conn.execute("INSERT INTO send_keys (key, dest) VALUES (?, ?)", (key, dest))
    else:
        _require_workflow(conn, dest)
    conn.execute("INSERT INTO messages (dest, topic, payload) VALUES (?, ?, ?)", (dest, topic, payload))
    notice(conn, "msg", dest, topic)
    return None


def send_many(conn: apsw.Connection, messages: list[tuple[str, str | None, Any]]) -> None:
    """Deliver ``messages`` ((dest, topic, payload), in order) all or none:
    an unknown destination raises before anything is inserted (and the op's
    SAVEPOINT undoes everything on any error)."""
    for dest in dict.fromkeys(m[0] for m in messages):
        _require_workflow(conn, dest)
    conn.executemany("INSERT INTO messages (dest, topic, payload) VALUES (?, ?, ?)", messages)
    conn.executemany(
        "INSERT INTO notices (kind, workflow_id, detail) VALUES ('msg', ?, ?)",
        dict.fromkeys((m[0], m[1]) for m in messages),
    )
    return None


def recv(conn: apsw.Connection, workflow_id: str, topic: str | None, final: bool) -> Any:
    """The oldest message for (workflow, topic), consumed; when there is none,
    NOTHING (keep waiting) or, once the timeout passed (``final``), None."""
    row = conn.execute(
        "SELECT id, payload FROM messages WHERE dest = ? AND topic IS ? ORDER BY id LIMIT 1",
        (workflow_id, topic),
    ).get
    if row is None:
        return None if final else R.NOTHING
    conn.execute("DELETE FROM messages WHERE id = ?", (row[0],))
    return row[1]


def set_event(conn: apsw.Connection, workflow_id: str, key: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO events (workflow_id, key, value) VALUES (?, ?, ?) ON CONFLICT (workflow_id, key)"
        " DO UPDATE SET value = excluded.value, updated_at = unixepoch('subsec')",
        (workflow_id, key, value),
    )
    notice(conn, "event", workflow_id, key)
    return None


def get_event(conn: apsw.Connection, workflow_id: str, key: str, final: bool) -> Any:
    row = conn.execute("SELECT value FROM events WHERE workflow_id = ? AND key = ?", (workflow_id, key)).get
    if row is None:
        return None if final else R.NOTHING
    return row


def get_all_events(conn: apsw.Connection, workflow_id: str, pack: Callable[[list[tuple[str, Any]]], Any]) -> Any:
    """Every event of ``workflow_id`` (latest values), packed into one stored
    value by ``pack`` (the codec's): recorded as the step's output."""
    return pack(all_events(conn, workflow_id))


# -- reads: run by Store.read on committed data (the read connection) ---------------


def event(conn: apsw.Connection, workflow_id: str, key: str) -> Any:
    """The stored value of one event, or None (no such event, or no such workflow yet)."""
    return conn.execute("SELECT value FROM events WHERE workflow_id = ? AND key = ?", (workflow_id, key)).get


def all_events(conn: apsw.Connection, workflow_id: str) -> list[tuple[str, Any]]:
    """(key, stored value) of every event of ``workflow_id``, by key."""
    return conn.execute(
        "SELECT key, value FROM events WHERE workflow_id = ? AND value IS NOT NULL ORDER BY key", (workflow_id,)
    ).fetchall()


def enqueue(
    conn: apsw.Connection,
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
    """Create the workflow and its queue entry, or return the workflow that
    already holds the id (or the same live dedup key)."""
    if dedup_key is not None:
        row = conn.execute(
            "SELECT workflow_id FROM queue_entries WHERE queue = ? AND dedup_key = ? AND done = 0",
            (queue, dedup_key),
        ).get
        if row is not None:
            return encode_id(row)
    existing = conn.execute("SELECT name FROM workflows WHERE workflow_id = ?", (workflow_id,)).get
    if existing is not None:
        if existing != name:
            raise errors.WorkflowConflictError(
                f"workflow id {workflow_id!r} already belongs to workflow {existing!r}, not {name!r}",
                workflow_id=workflow_id,
                existing_name=existing,
                requested_name=name,
            )
        return encode_id(workflow_id)
    conn.execute(
        "INSERT INTO workflows (workflow_id, name, status, inputs, parent_id, deadline)"
        " VALUES (?, ?, 'PENDING', ?, ?, ?)",
        (workflow_id, name, inputs, parent_id, deadline),
    )
    conn.execute(
        "INSERT INTO queue_entries (workflow_id, queue, priority, not_before, dedup_key) VALUES (?, ?, ?, ?, ?)",
        (workflow_id, queue, priority, not_before, dedup_key),
    )
    notice(conn, "queue", workflow_id, queue)
    return encode_id(workflow_id)


def fork(
    conn: apsw.Connection,
    source: str,
    new_id: str,
    start_step: int,
    executor: str | None,
    encode_id: Callable[[str], Any],
) -> Any:
    """A new PENDING workflow running ``source``'s function on its inputs,
    with the first ``start_step`` recorded steps of ``source`` (in recorded
    order) copied: they replay, the rest runs again. ``source`` is untouched."""
    row = conn.execute("SELECT name, inputs FROM workflows WHERE workflow_id = ?", (source,)).get
    if row is None:
        raise errors.WorkflowNotFoundError(f"no workflow with id {source!r}", workflow_id=source)
    if conn.execute("SELECT 1 FROM workflows WHERE workflow_id = ?", (new_id,)).get is not None:
        raise errors.WorkflowConflictError(
            f"workflow id {new_id!r} already exists", workflow_id=new_id, existing_name=None, requested_name=row[0]
        )
    conn.execute(
        "INSERT INTO workflows (workflow_id, name, status, inputs, executor) VALUES (?, ?, 'PENDING', ?, ?)",
        (new_id, row[0], row[1], executor),
    )
    conn.execute(
        "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at, recorded_at)"
        " SELECT ?, position, name, output, error, ident, started_at, recorded_at FROM steps"
        " WHERE workflow_id = ? ORDER BY position LIMIT ?",
        (new_id, source, start_step),
    )
    return encode_id(new_id)


OPS: dict[str, Callable[..., Any]] = {
    "fork": fork,
    "send": send,
    "send_many": send_many,
    "recv": recv,
    "set_event": set_event,
    "get_event": get_event,
    "get_all_events": get_all_events,
    "enqueue": enqueue,
    "register_executor": _executors.register,
    "heartbeat": _executors.heartbeat,
    "prune": _executors.prune,
    "stop_executor": _executors.stop,
    "claim": _executors.claim,
    "claim_queue": _executors.claim_queue,
}

READS: dict[str, Callable[..., Any]] = {
    "event": event,
    "all_events": all_events,
}
