"""durably's own SQL, written once: every statement both stores run, with
``?`` placeholders and a few tokens, rendered for each backend at import
time (:data:`SQLITE`, :data:`POSTGRES`). Tokens: ``{now}`` the database's
clock in epoch seconds, ``{greatest}`` the two-argument maximum. Where the
SQL truly differs (a list of ids, an id-prefix range, a step row's start
time), a statement has a per-dialect override. DDL and migrations stay with
each backend (``_schema.py``, ``pg/_schema.py``), as do the hand-tuned
multi-row step INSERTs and PostgreSQL's fence and batch marks.
"""

from __future__ import annotations

from typing import Final, LiteralString, cast

SQLITE_NOW: Final = "unixepoch('subsec')"
PG_NOW: Final = "extract(epoch from clock_timestamp())"

WORKFLOW_COLUMNS: Final = "workflow_id, name, status, inputs, output, error, parent_id, parked, created_at, updated_at"
# As users see it: a PENDING workflow still waiting in a queue is ENQUEUED.
WAITING_IN_QUEUE: Final = (
    "EXISTS (SELECT 1 FROM queue_entries q WHERE q.workflow_id = workflows.workflow_id"
    " AND q.started_at IS NULL AND q.done = 0)"
)
INFO_COLUMNS: Final = WORKFLOW_COLUMNS.replace(
    "status", f"CASE WHEN status = 'PENDING' AND {WAITING_IN_QUEUE} THEN 'ENQUEUED' ELSE status END", 1
)
# What introspection adds (WorkflowView): from the row, and from the queue
# entry of a queued workflow.
MORE_COLUMNS: Final = (
    "deadline, recovery_attempts, executor,"
    " (SELECT queue FROM queue_entries q WHERE q.workflow_id = workflows.workflow_id),"
    " (SELECT priority FROM queue_entries q WHERE q.workflow_id = workflows.workflow_id),"
    " (SELECT started_at FROM queue_entries q WHERE q.workflow_id = workflows.workflow_id)"
)
NO_MORE_COLUMNS: Final = "NULL, 0, NULL, NULL, NULL, NULL"
VIEW_COLUMNS: Final = f"{INFO_COLUMNS}, {MORE_COLUMNS}"
STEP_COLUMNS: Final = "position, name, output, error, recorded_at, ident, started_at"
SCHEDULE_COLUMNS: Final = "name, cron, workflow, last_slot, paused, tz, missed"

# Each queue's waiting and running entries (a queue's ended entries stay, done = 1).
_QUEUE_COUNTS: Final = "coalesce(c.enqueued, 0), coalesce(c.running, 0)"
_QUEUE_COUNTED: Final = (
    "LEFT JOIN (SELECT queue, sum(CASE WHEN started_at IS NULL THEN 1 ELSE 0 END) AS enqueued,"
    " sum(CASE WHEN started_at IS NULL THEN 0 ELSE 1 END) AS running"
    " FROM queue_entries WHERE done = 0 GROUP BY queue) c ON c.queue = n.queue"
)

_LARGE: Final = "(coalesce(octet_length(output), 0) > ? OR coalesce(octet_length(error), 0) > ?)"
_JOURNAL_COLUMNS: Final = (
    f"position, name, CASE WHEN {_LARGE} THEN NULL ELSE output END, CASE WHEN {_LARGE} THEN NULL ELSE error END,"
    f" ident, {_LARGE}"
)

# name -> statement, in SQLite's spelling with the tokens above.
STATEMENTS: Final[dict[str, str]] = {
    # -- reads --------------------------------------------------------------------------
    "get_workflow": f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = ?",
    "get_view": f"SELECT {VIEW_COLUMNS} FROM workflows WHERE workflow_id = ?",
    "load_steps": "SELECT position, name, output, error, ident FROM steps WHERE workflow_id = ? ORDER BY position",
    # A replay's journal: a value over the size given (``?``, bound twice) is
    # left out (NULL) and the last column says so; replay reads it alone
    # (``step_value``) when it gets there. (octet_length reads neither
    # SQLite's overflow pages nor a TOASTed PostgreSQL value.)
    "load_journal": f"SELECT {_JOURNAL_COLUMNS} FROM steps WHERE workflow_id = ? ORDER BY position",
    "load_journals": f"SELECT workflow_id, {_JOURNAL_COLUMNS} FROM steps WHERE workflow_id IN ({{ids}})"
    " ORDER BY workflow_id, position",
    "step_value": "SELECT output, error FROM steps WHERE workflow_id = ? AND position = ?",
    "step_rows": f"SELECT {STEP_COLUMNS} FROM steps WHERE workflow_id = ? ORDER BY position",
    # Every PENDING workflow, parked ones included, except queue entries not started yet.
    "pending_workflows": "SELECT workflow_id, name, inputs, parent_id, recovery_attempts FROM workflows w"
    " WHERE status = 'PENDING' AND NOT EXISTS (SELECT 1 FROM queue_entries q"
    " WHERE q.workflow_id = w.workflow_id AND q.started_at IS NULL) ORDER BY seq",
    "deadlines": "SELECT workflow_id, deadline FROM workflows WHERE status = 'PENDING' AND deadline IS NOT NULL",
    "deadline": "SELECT deadline FROM workflows WHERE workflow_id = ? AND status = 'PENDING' AND deadline IS NOT NULL",
    # the span a workflow's runs descend from (telemetry), and its recovery attempts
    "trace": "SELECT trace, recovery_attempts FROM workflows WHERE workflow_id = ?",
    # Not stopped, lease not run out (give or take a margin: _executors.LISTED).
    "executors": "SELECT executor_id, host, pid, pid_started, lease_until, lease_until - {now}"
    " FROM executors WHERE stopped_at IS NULL AND lease_until >= {now} - ?",
    "statuses": "SELECT workflow_id, status, parked FROM workflows WHERE workflow_id IN ({ids})",
    "owners": "SELECT workflow_id, executor, epoch FROM workflows WHERE workflow_id IN ({ids})",
    "last_notice": "SELECT coalesce(max(id), 0) FROM notices",
    "notices_since": "SELECT id, kind, workflow_id, detail FROM notices WHERE id > ? ORDER BY id LIMIT 10000",
    "schedules": f"SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name",
    "schedule": f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?",
    "has_schedules": "SELECT 1 FROM schedules LIMIT 1",
    "workflow_names": "SELECT DISTINCT name FROM workflows",
    "children": "SELECT workflow_id FROM workflows WHERE parent_id = ?",
    "still_owns": "SELECT executor, epoch FROM workflows WHERE workflow_id = ? AND status = 'PENDING'",
    # (the status is compared by the caller: a condition on it here makes SQLite's
    # planner scan the status index for every PENDING workflow)
    "owners_status": "SELECT workflow_id, executor, epoch, status FROM workflows WHERE workflow_id IN ({ids})",
    "name_status": "SELECT name, status FROM workflows WHERE workflow_id = ?",
    # Operators' reads (the CLI): messages sent to a workflow and not received yet,
    # oldest first; each queue's waiting and running entries and the limits last
    # declared for it (queues with neither are left out).
    "messages_for": "SELECT id, topic, payload, created_at FROM messages WHERE dest = ? ORDER BY id",
    "queue_stats": f"SELECT n.queue, {_QUEUE_COUNTS}, d.concurrency, d.rate_starts, d.rate_period, d.declared_at"
    f" FROM (SELECT queue FROM queue_entries WHERE done = 0 UNION SELECT name FROM queues) n {_QUEUE_COUNTED}"
    " LEFT JOIN queues d ON d.name = n.queue ORDER BY n.queue",
    # the same on an older file (no queues table: read as it is, no limits)
    "queue_counts": f"SELECT n.queue, {_QUEUE_COUNTS}, NULL, NULL, NULL, NULL"
    f" FROM (SELECT DISTINCT queue FROM queue_entries WHERE done = 0) n {_QUEUE_COUNTED} ORDER BY n.queue",
    # the values codec the database was created for (PostgreSQL keeps it in its meta table)
    "stored_codec": "SELECT value FROM engine_state WHERE key = 'codec'",
    # -- journal records ----------------------------------------------------------------
    # A step row's times come from one clock, the database's (one reading
    # per statement): ``recorded_at`` is it, ``started_at`` is it minus the
    # time since the body started (the record's monotonic ``started`` and
    # ``at``, the monotonic time the statement is bound; NULL stays NULL).
    "insert_step": "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at)"
    " VALUES (?, ?, ?, ?, ?, ?, {now} + (? - ?))",
    "insert_workflow": "INSERT INTO workflows (workflow_id, name, status, inputs, parent_id, deadline, executor,"
    " app_version, trace) VALUES (?, ?, 'PENDING', ?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id) DO NOTHING",
    "complete": "UPDATE workflows SET status = ?, output = ?, error = ?, parked = NULL,"
    " updated_at = {now} WHERE workflow_id = ? AND status = 'PENDING'",
}

# Where PostgreSQL's SQL differs from the rendered SQLite text.
_PG_OVERRIDES: Final[dict[str, str]] = {
    "executors": "SELECT executor_id, host, pid, pid_started, lease_until, lease_until - ({now})::float8"
    " FROM executors WHERE stopped_at IS NULL AND lease_until >= {now} - ?",
    "statuses": "SELECT workflow_id, status, parked FROM workflows WHERE workflow_id = ANY(?)",
    "owners": "SELECT workflow_id, executor, epoch FROM workflows WHERE workflow_id = ANY(?)",
    "owners_status": "SELECT workflow_id, executor, epoch, status FROM workflows WHERE workflow_id = ANY(?)",
    "load_journals": f"SELECT workflow_id, {_JOURNAL_COLUMNS} FROM steps WHERE workflow_id = ANY(?)"
    " ORDER BY workflow_id, position",
    "insert_step": "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at)"
    " VALUES (?, ?, ?, ?, ?, ?, {now} + (?::float8 - ?::float8))",
    "stored_codec": "SELECT value FROM meta WHERE key = 'codec'",
}

# Named writes (record kind ``WRITE``: ``(name, params)``): the
# single-statement changes the runtime makes to durably's tables. The
# runtime names the change; only the store holds the SQL. Each applies
# atomically with the rest of its journal batch; its result is the number
# of rows changed.
WRITE_STATEMENTS: Final[dict[str, str]] = {
    # (error, workflow_id): a PENDING workflow ends CANCELLED (its queue slot frees,
    # a notice wakes its owner if that is another process: schema triggers)
    "cancel": "UPDATE workflows SET status = 'CANCELLED', error = ?, updated_at = {now}"
    " WHERE workflow_id = ? AND status = 'PENDING'",
    # (executor, app_version, workflow_id): run it again from its journal, owned here
    "resume": "UPDATE workflows SET status = 'PENDING', parked = NULL, output = NULL, error = NULL,"
    " recovery_attempts = 0, executor = ?, epoch = epoch + 1, app_version = ?,"
    " updated_at = {now} WHERE workflow_id = ? AND status <> 'SUCCESS'",
    # (error, workflow_id): a poison workflow's terminal state
    "exceed": "UPDATE workflows SET status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', error = ?,"
    " updated_at = {now} WHERE workflow_id = ? AND status = 'PENDING'",
    # (reason, workflow_id): replay found changed code; it stays PENDING
    "park": "UPDATE workflows SET parked = ?, updated_at = {now} WHERE workflow_id = ? AND status = 'PENDING'",
    # (reason, workflow_id): nobody registered its function (first reason kept)
    "park_unregistered": "UPDATE workflows SET parked = ? WHERE workflow_id = ? AND status = 'PENDING'"
    " AND parked IS NULL",
    # (workflow_id, executor): give up a claimed workflow (its function is not registered here)
    "release": "UPDATE workflows SET executor = NULL WHERE workflow_id = ? AND executor = ?",
    # (): a no-op whose commit orders what was submitted before it
    "barrier": "SELECT 1",
    # schedules: (name, cron, workflow, last_slot, tz, missed)
    "schedule_upsert": "INSERT INTO schedules (name, cron, workflow, last_slot, tz, missed) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, workflow = excluded.workflow,"
    " tz = excluded.tz, missed = excluded.missed",
    # (slot, name, slot): progress only moves forward (two runners fire a slot once)
    "schedule_advance": "UPDATE schedules SET last_slot = ? WHERE name = ? AND last_slot < ?",
    "schedule_pause": "UPDATE schedules SET paused = 1 WHERE name = ?",
    # (now, name): resuming skips what fell while paused
    "schedule_resume": "UPDATE schedules SET paused = 0, last_slot = {greatest}(last_slot, ?)"
    " WHERE name = ? AND paused = 1",
    "schedule_delete": "DELETE FROM schedules WHERE name = ?",
    # (name, concurrency, rate_starts, rate_period): the limits an executor
    # serving the queue declared (the last declaration wins; what operators see)
    "queue_declare": "INSERT INTO queues (name, concurrency, rate_starts, rate_period) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, rate_starts = excluded.rate_starts,"
    " rate_period = excluded.rate_period, declared_at = {now}",
}
# Writes that change a workflow's owner (PostgreSQL: their batch takes the fence lock exclusive).
OWNER_CHANGING_WRITES: Final = frozenset({"resume", "release"})

# The executor ops' statements that both backends share (their ops stay per
# backend: _executors.py, pg/_executors.py).
EXECUTOR_STATEMENTS: Final[dict[str, str]] = {
    "register": "INSERT INTO executors (executor_id, host, pid, pid_started, app_version, lease_until)"
    " VALUES (?, ?, ?, ?, ?, {now} + ?)",
    "drop_stopped": "DELETE FROM executors WHERE stopped_at IS NOT NULL AND stopped_at < {now} - ?",
    "drop_notices": "DELETE FROM notices WHERE created_at < {now} - ?",
    "heartbeat": "UPDATE executors SET lease_until = {now} + ? WHERE executor_id = ? AND stopped_at IS NULL",
    "stop": "UPDATE executors SET stopped_at = {now}, lease_until = 0 WHERE executor_id = ?",
    "release_all": "UPDATE workflows SET executor = NULL WHERE status = 'PENDING' AND executor = ?",
    # A copy of the database (backup, copy): no executor of the source runs on it.
    "stop_all": "UPDATE executors SET stopped_at = {now}, lease_until = 0 WHERE stopped_at IS NULL",
    "queue_running": "SELECT count(*) FROM queue_entries WHERE queue = ? AND started_at IS NOT NULL AND done = 0",
    "queue_recent": "SELECT started_at FROM queue_entries WHERE queue = ? AND started_at IS NOT NULL"
    " AND started_at > ? AND started_at <= ? ORDER BY started_at",
    "queue_delayed": "SELECT min(not_before) FROM queue_entries WHERE queue = ? AND started_at IS NULL"
    " AND done = 0 AND not_before > ?",
}

# Retention (store/_ops.gc): one batch of finished workflows deleted with
# everything that belongs to them. ``{in_list}`` tests a column against one
# parameter holding a list (SQLite: a JSON array read by json_each, one
# prepared statement whatever the length; PostgreSQL: an array, ``= ANY``).
# Candidates come in creation order (a parent before its children) after a
# cursor (created_at, seq), served by the created_at index: a workflow
# created after the cut-off cannot have ended before it. PostgreSQL locks
# them (a resume or a send racing with the delete waits for it, or is
# skipped, never deadlocked: SKIP LOCKED).
GC_STATEMENTS: Final[dict[str, str]] = {
    # (after_created, cutoff, after_created, after_seq, statuses, cutoff, limit)
    "candidates": "SELECT workflow_id, parent_id, created_at, seq FROM workflows"
    " WHERE created_at >= ? AND created_at < ? AND (created_at > ? OR seq > ?)"
    " AND {unindexed}status {in_list} AND updated_at < ? ORDER BY created_at, seq LIMIT ?{skip_locked}",
    "existing": "SELECT workflow_id FROM workflows WHERE workflow_id {in_list}",
    # children first: foreign keys point at the workflow row
    "messages": "DELETE FROM messages WHERE dest {in_list}",
    "events": "DELETE FROM events WHERE workflow_id {in_list}",
    "queue_entries": "DELETE FROM queue_entries WHERE workflow_id {in_list}",
    "send_keys": "DELETE FROM send_keys WHERE dest {in_list}",
    "notices": "DELETE FROM notices WHERE workflow_id {in_list}",
    "steps": "DELETE FROM steps WHERE workflow_id {in_list}",
    "workflows": "DELETE FROM workflows WHERE workflow_id {in_list}",
}
# The tables a batch deletes from, in the order it does (GcReport's counts).
GC_TABLES: Final = ("messages", "events", "queue_entries", "send_keys", "notices", "steps", "workflows")


def _render_gc(postgres: bool) -> dict[str, LiteralString]:
    in_list = "= ANY(?)" if postgres else "IN (SELECT value FROM json_each(?))"
    skip = " FOR UPDATE SKIP LOCKED" if postgres else ""
    return {
        # (SQLite: ``+status`` keeps its planner off the status index, which
        # would sort every finished workflow for each batch)
        name: render(
            sql.replace("{in_list}", in_list)
            .replace("{skip_locked}", skip)
            .replace("{unindexed}", "" if postgres else "+"),
            postgres,
        )
        for name, sql in GC_STATEMENTS.items()
    }


def literal_sql(sql: str) -> LiteralString:
    """``sql`` as psycopg's stubs type a query, LiteralString (SQL text not
    built from values): for durably's statements assembled from its own
    fragments and checked names (:func:`render`, the schema's DDL, the
    sandbox's snapshot), and for a transaction step's SQL, which its user
    wrote. The values of both go as parameters. The one place they are
    vouched for."""
    # (by way of object: mypy reads LiteralString as str, a cast from str redundant)
    return cast(LiteralString, cast(object, sql))


def render(template: str, postgres: bool) -> LiteralString:
    """One statement in a backend's spelling: ``{now}`` and ``{greatest}``
    filled in; for PostgreSQL (psycopg) every ``?`` becomes ``%s`` (durably's
    own SQL has no ``?`` or ``%`` inside literals)."""
    if "%" in template:
        raise ValueError(f"a literal % in durably's own SQL: {template!r}")
    sql = template.replace("{now}", PG_NOW if postgres else SQLITE_NOW)
    sql = sql.replace("{greatest}", "greatest" if postgres else "max")
    return literal_sql(sql.replace("?", "%s") if postgres else sql)


class Queries:
    """Every named statement of :data:`STATEMENTS`, rendered for one backend."""

    __slots__ = (*STATEMENTS, "writes", "postgres")

    get_workflow: LiteralString
    get_view: LiteralString
    load_steps: LiteralString
    load_journal: LiteralString
    load_journals: LiteralString
    step_value: LiteralString
    step_rows: LiteralString
    pending_workflows: LiteralString
    deadlines: LiteralString
    deadline: LiteralString
    trace: LiteralString
    executors: LiteralString
    statuses: LiteralString
    owners: LiteralString
    last_notice: LiteralString
    notices_since: LiteralString
    schedules: LiteralString
    schedule: LiteralString
    has_schedules: LiteralString
    workflow_names: LiteralString
    children: LiteralString
    still_owns: LiteralString
    owners_status: LiteralString
    name_status: LiteralString
    messages_for: LiteralString
    queue_stats: LiteralString
    queue_counts: LiteralString
    stored_codec: LiteralString
    insert_step: LiteralString
    insert_workflow: LiteralString
    complete: LiteralString
    writes: dict[str, LiteralString]

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        for name, template in STATEMENTS.items():
            setattr(self, name, render(_PG_OVERRIDES.get(name, template) if postgres else template, postgres))
        self.writes = {name: render(t, postgres) for name, t in WRITE_STATEMENTS.items()}


SQLITE: Final = Queries(postgres=False)
POSTGRES: Final = Queries(postgres=True)
SQLITE_EXEC: Final = {name: render(t, False) for name, t in EXECUTOR_STATEMENTS.items()}
PG_EXEC: Final = {name: render(t, True) for name, t in EXECUTOR_STATEMENTS.items()}

# -- moving a database between backends (store/_transfer.py) ------------------------------
# The tables ``durably copy`` carries, in the order they are written (a row
# after those it references), each as (its columns, its primary key): the
# same names on both backends. Not carried, as live-only state: executors
# and their leases, notices (wake-ups of processes that are gone), the
# engine_state rows (the crash mark, the takeovers count, PostgreSQL's batch
# marks: the destination's own) and the codec, which the destination records
# when it is created (``open(codec)``).
TRANSFER_TABLES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "workflows": (
        (
            "seq",
            "workflow_id",
            "name",
            "status",
            "inputs",
            "output",
            "error",
            "parent_id",
            "parked",
            "created_at",
            "updated_at",
            "deadline",
            "recovery_attempts",
            "executor",
            "epoch",
            "app_version",
            "trace",
        ),
        ("seq",),
    ),
    "steps": (
        ("workflow_id", "position", "name", "output", "error", "ident", "started_at", "recorded_at"),
        ("workflow_id", "position"),
    ),
    "messages": (("id", "dest", "topic", "payload", "created_at"), ("id",)),
    "events": (("workflow_id", "key", "value", "updated_at"), ("workflow_id", "key")),
    "queue_entries": (
        ("seq", "workflow_id", "queue", "priority", "not_before", "dedup_key", "started_at", "done"),
        ("seq",),
    ),
    "schedules": (("name", "cron", "workflow", "last_slot", "paused", "tz", "missed"), ("name",)),
    "send_keys": (("key", "dest", "created_at"), ("key",)),
}
# Whether a database holds anything of durably's worth keeping (a copy's destination must not).
HOLDS_DATA: Final = " UNION ALL ".join(f"SELECT 1 FROM (SELECT 1 FROM {t} LIMIT 1) AS {t}" for t in TRANSFER_TABLES)


def transfer_select(table: str, first: bool, postgres: bool) -> LiteralString:
    """One chunk of ``table`` in primary-key order (keyset: after the last
    key of the previous chunk, unless ``first``), ``LIMIT ?``."""
    columns, key = TRANSFER_TABLES[table]
    after = "" if first else f" WHERE ({', '.join(key)}) > ({', '.join('?' * len(key))})"
    return render(f"SELECT {', '.join(columns)} FROM {table}{after} ORDER BY {', '.join(key)} LIMIT ?", postgres)


def transfer_insert(table: str) -> str:
    """SQLite's insert of ``table``'s rows (PostgreSQL writes them with COPY)."""
    columns, _ = TRANSFER_TABLES[table]
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


SQLITE_GC: Final = _render_gc(False)
PG_GC: Final = _render_gc(True)
