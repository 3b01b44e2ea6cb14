"""Toolkit operations, written once for both backends: SQL run on the
writer inside a journal batch.

Each op runs in its own SAVEPOINT and returns the step output to record
(already encoded), ``NOTHING`` to record nothing, or raises a DurablyError
that becomes the step's recorded error. Because the op and the step row
commit in one transaction, a message is consumed exactly once, an event is
published exactly once, a batch of messages is delivered all or none, a
keyed client send is delivered once, and a queue entry is created exactly
once, whatever crashes around them.

The ops are written for the backend that runs writers concurrently
(PostgreSQL, READ COMMITTED), and are as right where writers are
serialised (SQLite): what reads before it writes is made atomic by a
conditional write re-checked on the latest row (``ON CONFLICT DO
NOTHING`` and its row count), a row lock (``{for_update}``: nothing on
SQLite) or a transaction-level lock per queue (``queue_lock``: none on
SQLite). An op reaches its database through an :class:`OpDb` (SQLite's in
``_connection.py``, PostgreSQL's in ``pg/_executors.py``), one per writer
connection. The executor ops (leases, claims) stay per backend
(``_executors.py``, ``pg/_executors.py``): their SQL differs too much.

``READS`` are plain reads of committed data, run by ``read`` on a read
connection (client calls outside a workflow; nothing is recorded).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .. import _records as R
from .. import errors
from . import _executors
from ._queries import GC_TABLES, PG_GC, SQLITE_GC, render

if TYPE_CHECKING:
    from ._apsw import Connection


class OpDb(Protocol):
    """What an op needs of a connection."""

    conn: Any  # the backend's connection (the executor ops take it)
    q: dict[str, str]  # OP_STATEMENTS in the backend's spelling
    postgres: bool

    def one(self, sql: str, params: Any) -> Any:
        """The first row (a lone column: its value), or None."""

    def all(self, sql: str, params: Any) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Any) -> int:
        """Run a change; the number of rows it changed."""
        ...

    def many(self, sql: str, seq: Iterable[Any]) -> None: ...

    def returned(self, sql: str, seq: Iterable[Any]) -> list[Any]:
        """Run ``sql`` (with a one-column RETURNING) once per parameter row;
        every value it returned, in order."""
        ...


OP_STATEMENTS: dict[str, str] = {
    "exists": "SELECT 1 FROM workflows WHERE workflow_id = ?",
    "key_dest": "SELECT dest FROM send_keys WHERE key = ?",
    "take_key": "INSERT INTO send_keys (key, dest) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
    "message": "INSERT INTO messages (dest, topic, payload) VALUES (?, ?, ?)",
    "notice": "INSERT INTO notices (kind, workflow_id, detail) VALUES (?, ?, ?)",
    "msg_notice": "INSERT INTO notices (kind, workflow_id, detail) VALUES ('msg', ?, ?)",
    # the oldest message for (workflow, topic), consumed (its row locked: consumed once)
    "recv": "DELETE FROM messages WHERE id = (SELECT id FROM messages WHERE dest = ?"
    " AND topic IS NOT DISTINCT FROM ? ORDER BY id LIMIT 1{for_update}) RETURNING payload",
    "set_event": "INSERT INTO events (workflow_id, key, value) VALUES (?, ?, ?) ON CONFLICT (workflow_id, key)"
    " DO UPDATE SET value = excluded.value, updated_at = {now}",
    "event": "SELECT value FROM events WHERE workflow_id = ? AND key = ?",
    "all_events": "SELECT key, value FROM events WHERE workflow_id = ? AND value IS NOT NULL ORDER BY key",
    "dedup": "SELECT workflow_id FROM queue_entries WHERE queue = ? AND dedup_key = ? AND done = 0",
    "enqueue": "INSERT INTO workflows (workflow_id, name, status, inputs, parent_id, deadline)"
    " VALUES (?, ?, 'PENDING', ?, ?, ?) ON CONFLICT (workflow_id) DO NOTHING",
    "name": "SELECT name FROM workflows WHERE workflow_id = ?",
    "queue_entry": "INSERT INTO queue_entries (workflow_id, queue, priority, not_before, dedup_key)"
    " VALUES (?, ?, ?, ?, ?)",
    "fork_source": "SELECT name, inputs FROM workflows WHERE workflow_id = ?",
    "fork": "INSERT INTO workflows (workflow_id, name, status, inputs, executor) VALUES (?, ?, 'PENDING', ?, ?)"
    " ON CONFLICT (workflow_id) DO NOTHING",
    # a client's resume: run it again from its journal, owned by no one (the
    # first live executor that registered its function claims it, whatever its version)
    "resume_unowned": "UPDATE workflows SET status = 'PENDING', parked = NULL, output = NULL, error = NULL,"
    " recovery_attempts = 0, executor = NULL, epoch = epoch + 1, app_version = NULL,"
    " updated_at = {now} WHERE workflow_id = ? AND status <> 'SUCCESS'",
    # bulk starts (start_many): the new ones, then what the others are
    "start": "INSERT INTO workflows (workflow_id, name, status, inputs, deadline, executor, app_version, trace)"
    " VALUES (?, ?, 'PENDING', ?, ?, ?, ?, ?) ON CONFLICT (workflow_id) DO NOTHING",
    "names_of": "SELECT workflow_id, name, status FROM workflows WHERE workflow_id {in_list}",
    "fork_steps": "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at, recorded_at)"
    " SELECT ?, position, name, output, error, ident, started_at, recorded_at FROM steps"
    " WHERE workflow_id = ? ORDER BY position LIMIT ?",
}
# PostgreSQL orders two enqueues with one dedup key by the queue's lock (the
# second finds the first); SQLite's writers are serialised already.
_PG_QUEUE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('durably:queue:' || ?, 0))"


def _render_ops(postgres: bool) -> dict[str, str]:
    out = {
        name: render(
            sql.replace("{for_update}", " FOR UPDATE" if postgres else "").replace(
                "{in_list}", "= ANY(?)" if postgres else "IN (SELECT value FROM json_each(?))"
            ),
            postgres,
        )
        for name, sql in OP_STATEMENTS.items()
    }
    out["queue_lock"] = render(_PG_QUEUE_LOCK, True) if postgres else ""
    return out


SQLITE_OPS = _render_ops(False)
PG_OPS = _render_ops(True)


def _require_workflow(db: OpDb, workflow_id: str) -> None:
    if db.one(db.q["exists"], (workflow_id,)) is None:
        raise errors.WorkflowNotFoundError(f"no workflow with id {workflow_id!r}", workflow_id=workflow_id)


def notice(db: OpDb, kind: str, workflow_id: str | None = None, detail: str | None = None) -> None:
    db.run(db.q["notice"], (kind, workflow_id, detail))


def send(db: OpDb, dest: str, topic: str | None, payload: Any, key: str | None = None) -> None:
    """Deliver one message. With an idempotency ``key`` (client sends only),
    the key and the message commit together: a key already recorded for
    ``dest`` makes this a no-op; one recorded for another destination is a
    UsageError (and nothing is delivered). Of two concurrent sends with one
    key, one takes it, the other waits for it and then finds it."""
    if key is not None:
        seen = db.one(db.q["key_dest"], (key,))
        if seen is None:
            _require_workflow(db, dest)
            if not db.run(db.q["take_key"], (key, dest)):  # taken meanwhile
                seen = db.one(db.q["key_dest"], (key,))
        if seen is not None:
            if seen != dest:
                raise errors.UsageError(
                    f"idempotency key {key!r} was already used to send to workflow {seen!r}, not {dest!r}; "
                    "a key names one send: use a distinct key per destination"
                )
            return None  # delivered before: a retry delivers nothing new
    else:
        _require_workflow(db, dest)
    db.run(db.q["message"], (dest, topic, payload))
    notice(db, "msg", dest, topic)
    return None


def send_many(db: OpDb, messages: list[tuple[str, str | None, Any]]) -> None:
    """Deliver ``messages`` ((dest, topic, payload), in order) all or none:
    an unknown destination raises before anything is inserted (and the op's
    SAVEPOINT undoes everything on any error)."""
    for dest in dict.fromkeys(m[0] for m in messages):
        _require_workflow(db, dest)
    db.many(db.q["message"], messages)
    db.many(db.q["msg_notice"], list(dict.fromkeys((m[0], m[1]) for m in messages)))
    return None


def recv(db: OpDb, workflow_id: str, topic: str | None, final: bool) -> Any:
    """The oldest message for (workflow, topic), consumed; when there is none,
    NOTHING (keep waiting) or, once the timeout passed (``final``), None."""
    row = db.all(db.q["recv"], (workflow_id, topic))
    if not row:
        return None if final else R.NOTHING
    return row[0][0]


def set_event(db: OpDb, workflow_id: str, key: str, value: Any) -> None:
    db.run(db.q["set_event"], (workflow_id, key, value))
    notice(db, "event", workflow_id, key)
    return None


def get_event(db: OpDb, workflow_id: str, key: str, final: bool) -> Any:
    rows = db.all(db.q["event"], (workflow_id, key))
    # (SQLite's store has always taken a NULL value for "not set yet";
    # PostgreSQL's returns it: kept as they were.)
    if not rows or (rows[0][0] is None and not db.postgres):
        return None if final else R.NOTHING
    return rows[0][0]


def get_all_events(db: OpDb, workflow_id: str, pack: Callable[[list[tuple[str, Any]]], Any]) -> Any:
    """Every event of ``workflow_id`` (latest values), packed into one stored
    value by ``pack`` (the codec's): recorded as the step's output."""
    return pack(all_events(db, workflow_id))


def enqueue(
    db: OpDb,
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
    if db.q["queue_lock"]:
        db.all(db.q["queue_lock"], (queue,))
    if dedup_key is not None:
        row = db.one(db.q["dedup"], (queue, dedup_key))
        if row is not None:
            return encode_id(row)
    if not db.run(db.q["enqueue"], (workflow_id, name, inputs, parent_id, deadline)):
        existing = db.one(db.q["name"], (workflow_id,))
        if existing != name:
            raise errors.WorkflowConflictError(
                f"workflow id {workflow_id!r} already belongs to workflow {existing!r}, not {name!r}",
                workflow_id=workflow_id,
                existing_name=existing,
                requested_name=name,
            )
        return encode_id(workflow_id)
    db.run(db.q["queue_entry"], (workflow_id, queue, priority, not_before, dedup_key))
    notice(db, "queue", workflow_id, queue)
    return encode_id(workflow_id)


def fork(
    db: OpDb, source: str, new_id: str, start_step: int, executor: str | None, encode_id: Callable[[str], Any]
) -> Any:
    """A new PENDING workflow running ``source``'s function on its inputs,
    with the first ``start_step`` recorded steps of ``source`` (in recorded
    order) copied: they replay, the rest runs again. ``source`` is untouched."""
    row = db.one(db.q["fork_source"], (source,))
    if row is None:
        raise errors.WorkflowNotFoundError(f"no workflow with id {source!r}", workflow_id=source)
    if not db.run(db.q["fork"], (new_id, row[0], row[1], executor)):
        raise errors.WorkflowConflictError(
            f"workflow id {new_id!r} already exists", workflow_id=new_id, existing_name=None, requested_name=row[0]
        )
    db.run(db.q["fork_steps"], (new_id, source, start_step))
    if executor is None:
        notice(db, "start", new_id)  # a client's fork: some executor claims it
    return encode_id(new_id)


def start_many(
    db: OpDb, rows: list[tuple[Any, ...]], owner: str | None, version: str | None
) -> list[tuple[str, str] | None]:
    """Create the workflows of ``rows`` (workflow_id, name, inputs,
    deadline, trace) PENDING, owned by ``owner``, in this one batch: for
    each row, None if this created it, else the (name, status) of the
    workflow that had its id (an id twice in ``rows``: the first creates
    it, the second finds it). A client's starts (``owner`` None) leave a
    notice for the executors to claim them."""
    ids = [r[0] for r in rows]
    params = [(w, n, i, d, owner, version, t) for w, n, i, d, t in rows]
    if db.postgres:
        # Concurrent writers: what this insert created is what it returns.
        made = set(db.returned(db.q["start"] + " RETURNING workflow_id", params))
    else:
        # Writers are serialised: the ids found now are those the insert
        # skips (a plain executemany; RETURNING costs SQLite twice as much).
        made = set(ids) - {w for w, _n, _s in db.all(db.q["names_of"], (json.dumps(ids),))}
        db.many(db.q["start"], [p for p in params if p[0] in made])
    if owner is None:
        db.many(db.q["notice"], [("start", w, None) for w in made])
    others = [w for w in ids if w not in made]
    found: dict[str, tuple[str, str]] = {}
    if others:
        found = {w: (n, s) for w, n, s in db.all(db.q["names_of"], (others if db.postgres else json.dumps(others),))}
    seen: set[str] = set()
    out: list[tuple[str, str] | None] = []
    for wid, name, *_ in rows:
        if wid in made and wid not in seen:
            seen.add(wid)
            out.append(None)
        else:
            out.append(found.get(wid, (name, "PENDING")))
    return out


def resume_unowned(db: OpDb, workflow_id: str) -> int:
    """A client's resume: the workflow (not SUCCESS) is PENDING again, owned
    by no one, with its epoch raised (an instance still running it
    anywhere is fenced); a ``start`` notice has a live executor that
    registered its function claim it and run it from its journal. Returns
    the rows changed (0: no such workflow, or it succeeded)."""
    changed = db.run(db.q["resume_unowned"], (workflow_id,))
    if changed:
        notice(db, "start", workflow_id)
    return changed


# -- retention -------------------------------------------------------------------------------


def gc(
    db: OpDb, cutoff: float, statuses: list[str], after: tuple[float, int], limit: int
) -> tuple[dict[str, int], tuple[float, int] | None, float]:
    """One batch of retention: up to ``limit`` workflows whose status is one
    of ``statuses`` and that ended before ``cutoff`` (the store's unix
    time), taken in creation order after the cursor ``after`` (created_at,
    seq), deleted with their steps, messages waiting for them, events,
    queue entry (and its dedup key), send keys and notices, all in this
    op's SAVEPOINT: a workflow goes whole or not at all.

    A child goes with its parent, never before it: a candidate whose parent
    still exists is kept unless that parent is deleted in this very batch
    (a parent is created, so listed, before its children); a parent that
    is gone no longer holds anything back. So a PENDING workflow's
    children, which its replay needs, stay.

    Returns (rows deleted per table of ``GC_TABLES``, the cursor after the
    last candidate or None when there were none, seconds this op took)."""
    began = time.perf_counter()
    q = PG_GC if db.postgres else SQLITE_GC
    pack: Callable[[Iterable[str]], Any] = list if db.postgres else (lambda xs: json.dumps(list(xs)))
    rows = db.all(q["candidates"], (after[0], cutoff, after[0], after[1], pack(statuses), cutoff, limit))
    if not rows:
        return {}, None, time.perf_counter() - began
    ids = _deletable(db, q["existing"], pack, rows)
    counts: dict[str, int] = dict.fromkeys(GC_TABLES, 0)
    if ids:
        for table in GC_TABLES:
            counts[table] = db.run(q[table], (pack(ids),))
    return counts, (rows[-1][2], rows[-1][3]), time.perf_counter() - began


def _deletable(db: OpDb, existing: str, pack: Callable[[Iterable[str]], Any], rows: list[tuple[Any, ...]]) -> list[str]:
    """The candidates (workflow_id, parent_id, ...) that may go: each one's
    parent is absent, or goes too (see ``gc``)."""
    batch = {r[0] for r in rows}
    outside = {r[1] for r in rows if r[1] is not None and r[1] not in batch}
    kept: set[str] = {r[0] for r in db.all(existing, (pack(outside),))} if outside else set()
    going: list[str] = []
    gone: set[str] = set()
    for wid, parent, *_ in rows:
        if parent is None or parent in gone or (parent not in batch and parent not in kept):
            going.append(wid)
            gone.add(wid)
    return going


def vacuum(conn: Connection, pages: int) -> int:
    """SQLite: hand up to ``pages`` free pages back to the file system
    (``PRAGMA incremental_vacuum``: a file created with auto_vacuum=INCREMENTAL;
    on an older file it does nothing). Returns the pages freed."""
    before = int(conn.pragma("freelist_count"))
    conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()  # each row is a page moved
    return before - int(conn.pragma("freelist_count"))


# -- reads: run on committed data (a read connection) ----------------------------------------


def event(db: OpDb, workflow_id: str, key: str) -> Any:
    """The stored value of one event, or None (no such event, or no such workflow yet)."""
    rows = db.all(db.q["event"], (workflow_id, key))
    return rows[0][0] if rows else None


def all_events(db: OpDb, workflow_id: str) -> list[tuple[str, Any]]:
    """(key, stored value) of every event of ``workflow_id``, by key."""
    return [(r[0], r[1]) for r in db.all(db.q["all_events"], (workflow_id,))]


class SqliteDb:
    """SQLite's :class:`OpDb` (one per connection)."""

    __slots__ = ("conn",)
    q = SQLITE_OPS
    postgres = False

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def one(self, sql: str, params: Any) -> Any:
        return self.conn.execute(sql, params).get

    def all(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Any) -> int:
        self.conn.execute(sql, params)
        return self.conn.changes()

    def many(self, sql: str, seq: Iterable[Any]) -> None:
        self.conn.executemany(sql, seq)

    def returned(self, sql: str, seq: Iterable[Any]) -> list[Any]:
        return [row[0] for row in self.conn.executemany(sql, seq)]


def on_conn(op: Callable[..., Any]) -> Callable[..., Any]:
    """An executor op (written per backend) in the ops table: it takes the raw connection."""

    def run(db: Any, *args: Any) -> Any:
        return op(db.conn, *args)

    return run


TOOLKIT_OPS: dict[str, Callable[..., Any]] = {
    "fork": fork,
    "resume_unowned": resume_unowned,
    "send": send,
    "send_many": send_many,
    "start_many": start_many,
    "recv": recv,
    "set_event": set_event,
    "get_event": get_event,
    "get_all_events": get_all_events,
    "enqueue": enqueue,
    "gc": gc,
}
# SQLite's table (PostgreSQL's: pg/_executors.OPS).
OPS: dict[str, Callable[..., Any]] = {
    **TOOLKIT_OPS,
    "register_executor": on_conn(_executors.register),
    "heartbeat": on_conn(_executors.heartbeat),
    "prune": on_conn(_executors.prune),
    "stop_executor": on_conn(_executors.stop),
    "claim": on_conn(_executors.claim),
    "claim_queue": on_conn(_executors.claim_queue),
    "vacuum": on_conn(vacuum),
}

READS: dict[str, Callable[..., Any]] = {
    "event": event,
    "all_events": all_events,
}
# Ops that change a workflow's owner (PostgreSQL: their batch locks the takeovers row exclusive).
OWNER_CHANGING_OPS = frozenset({"claim", "claim_queue", "stop_executor", "resume_unowned"})
