"""Several processes on one file: executors, leases, ownership, notices.

Every engine that opens the file registers as an *executor* (a row in
``executors``) and keeps a lease alive. A PENDING workflow is owned by the
executor named in ``workflows.executor``; ``workflows.epoch`` (its fencing
token) is raised at every change of owner, and so is
``engine_state.takeovers``, which lets a writer re-check what it owns only
when some owner changed (the check runs inside its write transaction:
``Store._fence``).

A workflow may be *claimed* when it has no owner (started by a client, or
released by a clean close), or when its owner is gone: stopped, its lease
expired, unknown (an older file), or, on the same host and boot, its
process is dead (a reused pid is told apart by its start time). Only an
executor that registered the workflow's function and runs the same
application version claims it.

Leases are the store's clock: a heartbeat writes ``lease_until = NOW +
lease`` and a claim compares with ``NOW``, both read by SQLite in the same
statement (``unixepoch('subsec')``, this host's wall clock), never a time
a process passes in. A wall-clock jump of the host moves every lease at
once, so the claimer also says which executors on this host it saw renew
their lease recently on its own monotonic clock (``live``, judged by
runtime/leases.py): those are never taken by lease expiry.

The functions taking a connection run on the writer inside a journal batch
(``OPS`` of store/_ops.py), so each claim is atomic.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from ._apsw import Connection
from ._queries import SQLITE_EXEC as _Q

# Seconds an executor's lease lasts; its heartbeat renews it every LEASE / 4.
LEASE = 10.0
# Stopped executors' rows are kept this long (introspection), then deleted.
_KEEP_STOPPED = 86400.0
# Notices older than this are deleted (every watcher reads them within its poll).
KEEP_NOTICES = 600.0
# Seconds past its lease an executor is still listed for the watcher's
# dead-process check (a margin for clocks; later it is gone by its lease).
LISTED = 60.0
# Rows of each table one prune deletes at most (the lease keeper prunes
# while the engine runs: a round's cost stays bounded whatever piled up).
PRUNE_LIMIT = 500
# The store's clock (unix seconds): SQLite's reading of this host's wall clock.
NOW = "unixepoch('subsec')"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:  # not a database file
            return f.read().decode().strip()[:8]
    except OSError:
        return "noboot"


# Where pids are comparable: this host and boot. ``DURABLY_HOST`` overrides
# it (containers that share the database file but not a pid namespace must
# each set a distinct value, or their dead processes are only found by lease).
HOST = os.environ.get("DURABLY_HOST") or f"{socket.gethostname()}/{_boot_id()}"


def pid_started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # not a database file
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after it
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int, started: str | None) -> bool:
    """Whether the process that registered as (pid, started) still runs here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process with that pid: compare start times
    if started is None:
        return True
    now = pid_started(pid)
    return now is None or now == started


def dead_here(executors: Sequence[tuple[Any, ...]], me: str) -> list[str]:
    """Executors on this host and boot whose process is gone (no need to
    wait for their lease): rows starting (executor_id, host, pid, pid_started)."""
    return [
        eid for eid, host, pid, started, *_ in executors if eid != me and host == HOST and not pid_alive(pid, started)
    ]


# -- ops: run on the writer, inside a journal batch ---------------------------------------


def register(conn: Connection, executor_id: str, pid: int, started: str | None, version: str, lease: float) -> None:
    """This executor's row, its lease ``lease`` seconds from now on the
    store's clock; stopped executors and notices past their keep are deleted."""
    conn.execute(
        _Q["register"],
        (executor_id, HOST, pid, started, version, lease),
    )
    conn.execute(_Q["drop_stopped"], (_KEEP_STOPPED,))
    conn.execute(_Q["drop_notices"], (KEEP_NOTICES,))
    return None


# Executor rows that may go: stopped, or whose lease ran out (killed without
# close), more than _KEEP_STOPPED ago, and owning no PENDING workflow (those
# of a dead owner stay until they are taken over: its row is what names its
# host and pid, and the owner column points at it). Finished workflows keep
# the id of the executor that last ran them; nothing else refers to a row.
_PRUNABLE = (
    "coalesce(stopped_at, lease_until) < unixepoch('subsec') - :keep"
    " AND NOT EXISTS (SELECT 1 FROM workflows w WHERE w.executor = executors.executor_id"
    " AND w.status = 'PENDING')"
)


def prune(conn: Connection, limit: int) -> tuple[int, int]:
    """Delete up to ``limit`` executor rows that may go (_PRUNABLE) and up
    to ``limit`` notices older than KEEP_NOTICES, among the ``limit`` oldest
    (a look at that many rows of the id order, not a scan of the table).
    Times are the database's clock. Returns (executors, notices) deleted:
    ``limit`` means there may be more."""
    conn.execute(
        f"DELETE FROM executors WHERE executor_id IN (SELECT executor_id FROM executors WHERE {_PRUNABLE}"
        " LIMIT :limit)",
        {"keep": _KEEP_STOPPED, "limit": limit},
    )
    executors = conn.changes()
    conn.execute(
        "DELETE FROM notices WHERE id IN (SELECT id FROM notices ORDER BY id LIMIT ?)"
        " AND created_at < unixepoch('subsec') - ?",
        (limit, KEEP_NOTICES),
    )
    return executors, conn.changes()


def heartbeat(conn: Connection, executor_id: str, lease: float) -> Any:
    """Renew the lease: ``lease`` seconds from now on the store's clock."""
    conn.execute(
        _Q["heartbeat"],
        (lease, executor_id),
    )
    return conn.changes()


def stop(conn: Connection, executor_id: str) -> None:
    """A clean close: the executor is gone, and its PENDING workflows are
    released for any live executor to claim (a notice wakes them)."""
    conn.execute(_Q["stop"], (executor_id,))
    conn.execute(_Q["release_all"], (executor_id,))
    if conn.changes():
        conn.execute("INSERT INTO notices (kind) VALUES ('start')")
    return None


def others_live(conn: Connection, executor_id: str | None) -> bool:
    """Whether another executor has the file open: a live lease, and on this
    host a live process (the crash mark stays set while one does; a file
    marked open with none is a crash)."""
    if not conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'executors'").get:
        return False
    rows = conn.execute(
        "SELECT executor_id, host, pid, pid_started FROM executors WHERE executor_id IS NOT ?"
        f" AND stopped_at IS NULL AND lease_until >= {NOW}",
        (executor_id,),
    ).fetchall()
    dead = set(dead_here(rows, executor_id or ""))
    return any(row[0] not in dead for row in rows)


# Gone: no owner, a dead owner (``dead``), or an owner whose lease ran out
# on the store's clock, unless the claimer saw it renew lately (``live``).
_GONE = (
    "(executor IS NULL OR executor IN (SELECT value FROM json_each(:dead))"
    " OR (executor NOT IN (SELECT value FROM json_each(:live))"
    " AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.executor_id = workflows.executor"
    f" AND e.stopped_at IS NULL AND e.lease_until >= {NOW})))"
)


def claim(
    conn: Connection, me: str, version: str, names: str, dead: str, live: str, limit: int, only: str | None
) -> list[tuple[Any, ...]]:
    """Take up to ``limit`` PENDING workflows (of the JSON list ``names``)
    whose owner is gone or that have none, not waiting in a queue, of this
    application version (or none recorded); ``dead``: JSON list of
    executors known dead; ``live``: JSON list of executors known live
    whatever their lease says; ``only``: a JSON list of ids to consider
    (None: any). Raises their epoch; counts a recovery attempt for those
    taken from an owner that was running them. Returns (workflow_id, name,
    inputs, recovery_attempts, epoch, previous owner) rows, newest first
    (children before the parents that wait for them)."""
    rows = conn.execute(
        _claimable(only), {"names": names, "version": version, "dead": dead, "live": live, "only": only, "limit": limit}
    ).fetchall()
    if not rows:
        return []
    return _take(conn, me, version, rows)


def _claimable(only: str | None) -> str:
    where = (
        f"status = 'PENDING' AND name IN (SELECT value FROM json_each(:names))"
        f" AND (app_version IS NULL OR app_version = :version) AND {_GONE}"
        " AND NOT EXISTS (SELECT 1 FROM queue_entries q WHERE q.workflow_id = workflows.workflow_id"
        " AND q.started_at IS NULL AND q.done = 0)"
    )
    if only is not None:
        where += " AND workflow_id IN (SELECT value FROM json_each(:only))"
    return f"SELECT workflow_id, executor FROM workflows WHERE {where} ORDER BY seq DESC LIMIT :limit"


def any_claimable(store: Any, version: str, names: str, dead: str, live: str) -> bool:
    """A read first (no write transaction when there is nothing to take)."""
    return bool(
        store.query(
            _claimable(None), {"names": names, "version": version, "dead": dead, "live": live, "only": None, "limit": 1}
        )
    )


def _take(conn: Connection, me: str, version: str, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One UPDATE for all of ``rows`` (a wave of 10^3 at recovery: one
    statement, not one each); the result in ``rows``' order. A workflow
    taken from another owner counts a recovery attempt (``before`` is the
    owner the same transaction just read)."""
    taken = {
        r[0]: r
        for r in conn.execute(
            "UPDATE workflows SET executor = :me, epoch = epoch + 1, app_version = coalesce(app_version, :version),"
            " recovery_attempts = recovery_attempts + (executor IS NOT NULL AND executor <> :me)"
            " WHERE workflow_id IN (SELECT value FROM json_each(:ids))"
            " RETURNING workflow_id, name, inputs, recovery_attempts, epoch",
            {"me": me, "version": version, "ids": json.dumps([wid for wid, _before in rows])},
        )
    }  # (the workflow_owner_changed trigger counts the takeovers)
    return [(*taken[wid], before) for wid, before in rows if wid in taken]


def queue_window(
    concurrency: int | None,
    rate: tuple[int, float] | None,
    now: float,
    batch: int,
    running: Callable[[], int],
    recent: Callable[[float, float], list[float]],
    start: Callable[[int], list[tuple[Any, ...]]],
    delayed: Callable[[], float | None],
) -> tuple[list[tuple[Any, ...]], float | None]:
    """What a queue may start now, and when to look again (both stores:
    each passes its own reads, run inside the claim's transaction):
    ``running()`` entries started and not done; ``recent(lo, hi)`` start
    times in (lo, hi], in order; ``start(n)`` starts up to n waiting entries
    and returns the claimed rows; ``delayed()`` the earliest ``not_before``
    still in the future. Returns (claimed rows, when to look again or None)."""
    free = batch
    wake = None
    if concurrency is not None:
        free = min(free, concurrency - running())
    if rate is not None:
        n, period = rate
        # Starts "in the future" were recorded before the wall clock went
        # back: they are older than the window, not in it.
        starts = recent(now - period, now + 1.0)
        free = min(free, n - len(starts))
        if len(starts) >= n:
            wake = starts[len(starts) - n] + period
    claimed: list[tuple[Any, ...]] = []
    if free > 0:
        claimed = start(free)
        if len(claimed) == free:
            wake = now  # there may be more: look again at once
    if wake is None or wake > now:
        soonest = delayed()
        if soonest is not None and (wake is None or soonest < wake):
            wake = soonest
    return claimed, wake


def claim_queue(
    conn: Connection,
    me: str,
    version: str,
    queue: str,
    concurrency: int | None,
    rate: tuple[int, float] | None,
    now: float | None,
    batch: int,
) -> Any:
    """Start what a queue may start now, atomically across processes: its
    running count and its rate window are read in this write transaction
    (SQLite: the only writer). ``now``: the engine's clock (a virtual one),
    or None: the store's clock, read here, inside the transaction, so an
    entry's start time is never before its creation. Returns (claimed rows
    as in :func:`claim`, when to look again or None, the ``now`` used)."""
    at: float = conn.execute(f"SELECT {NOW}").get if now is None else now

    def start(free: int) -> list[tuple[Any, ...]]:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT workflow_id FROM queue_entries WHERE queue = ? AND started_at IS NULL AND done = 0"
                " AND not_before <= ? ORDER BY priority, seq LIMIT ?",
                (queue, at, free),
            )
        ]
        for wid in ids:
            conn.execute("UPDATE queue_entries SET started_at = ? WHERE workflow_id = ?", (at, wid))
        return _take(conn, me, version, [(wid, None) for wid in ids])

    claimed, wake = queue_window(
        concurrency,
        rate,
        at,
        batch,
        running=lambda: conn.execute(_Q["queue_running"], (queue,)).get,
        recent=lambda lo, hi: [r[0] for r in conn.execute(_Q["queue_recent"], (queue, lo, hi))],
        start=start,
        delayed=lambda: conn.execute(_Q["queue_delayed"], (queue, at)).get,
    )
    return claimed, wake, at


def notice(conn: Connection, kind: str, workflow_id: str | None = None, detail: str | None = None) -> None:
    conn.execute("INSERT INTO notices (kind, workflow_id, detail) VALUES (?, ?, ?)", (kind, workflow_id, detail))


def notices_since(conn: Connection, last: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, kind, workflow_id, detail FROM notices WHERE id > ? ORDER BY id LIMIT 10000", (last,)
    ).fetchall()
