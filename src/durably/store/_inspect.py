"""Inspection reads: ``Engine.stats()`` and the named reads of ``durably.testing``.

Each statement is written once, SQLite style (``?`` placeholders, ``{now}``
for the store's clock), and rendered for the store it runs on (``%s`` and
``clock_timestamp()`` on PostgreSQL, whose connections already point at
durably's schema). They run through the store's ``query`` on committed data,
never on the step path, and nothing in the runtime calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .. import _status
from . import _queries


class _Queryable(Protocol):
    def query(self, sql: str, params: Any = ...) -> list[tuple[Any, ...]]: ...


class _Counted(Protocol):
    batches: int
    records: int


def backend_of(store: object) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return str(getattr(store, "backend", "sqlite"))


def render(sql: str, backend: str) -> str:
    """``sql`` (``?`` placeholders, ``{now}``) for ``backend``, as the store's
    own statements are rendered (store/_queries.py)."""
    return _queries.render(sql, backend == "postgresql")


def run(store: _Queryable, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one of the reads below (see ``render``) on committed data."""
    return store.query(render(sql, backend_of(store)), params)


def run_user_sql(store: _Queryable, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    """A read of the application's own tables (those its transaction steps
    write), SQLite style: ``?`` placeholders become ``%s`` on PostgreSQL
    unless the SQL is already written for psycopg."""
    if backend_of(store) == "postgresql":
        from .pg._tx import portable

        return store.query(portable(sql, params), params or None)
    return store.query(sql, params)


# -- stats ----------------------------------------------------------------------------

# The statuses a workflow row holds (ENQUEUED is a view of PENDING: ``Stats.queued``).
STATUSES = tuple(s for s in _status.STATUSES if s != "ENQUEUED")


@dataclass(frozen=True)
class Stats:
    """A snapshot of one database, from ``Engine.stats()`` (the same on
    SQLite and PostgreSQL; the counts are read by one statement, so they
    agree with each other).

    Attributes:
        workflows: workflows by status (every status, 0 when none).
        steps: recorded step rows (every workflow's journal).
        messages: messages sent and not received yet.
        events: events published (one per workflow and key).
        queued: workflows waiting in each queue (not started yet), by queue
            name; queues with none waiting are left out.
        executors: processes with the database open (registered, not
            closed, lease not run out on the store's clock).
        schedules: schedules defined (paused ones included).
        journal_batches: transactions this engine's writer committed since
            it was opened.
        journal_records: records (steps, starts, ends, ...) in them.
    """

    workflows: dict[str, int]
    steps: int
    messages: int
    events: int
    queued: dict[str, int] = field(default_factory=dict[str, int])
    executors: int = 0
    schedules: int = 0
    journal_batches: int = 0
    journal_records: int = 0

    @property
    def total_workflows(self) -> int:
        """Workflows of every status."""
        return sum(self.workflows.values())


_STATS = """
SELECT 'status', status, count(*) FROM workflows GROUP BY status
UNION ALL SELECT 'queue', queue, count(*) FROM queue_entries WHERE started_at IS NULL AND done = 0 GROUP BY queue
UNION ALL SELECT 'steps', NULL, count(*) FROM steps
UNION ALL SELECT 'messages', NULL, count(*) FROM messages
UNION ALL SELECT 'events', NULL, count(*) FROM events
UNION ALL SELECT 'executors', NULL, count(*) FROM executors WHERE stopped_at IS NULL AND lease_until >= {now}
UNION ALL SELECT 'schedules', NULL, count(*) FROM schedules
"""


def read_stats(store: _Queryable, journal: _Counted | None) -> Stats:
    """The ``Stats`` of ``store``, with the counters of ``journal`` (the
    engine's writer; None when it never opened)."""
    workflows = dict.fromkeys(STATUSES, 0)
    queued: dict[str, int] = {}
    totals: dict[str, int] = {}
    for kind, name, count in run(store, _STATS):
        if kind == "status":
            workflows[name] = int(count)
        elif kind == "queue":
            queued[name] = int(count)
        else:
            totals[kind] = int(count)
    return Stats(
        workflows=workflows,
        steps=totals.get("steps", 0),
        messages=totals.get("messages", 0),
        events=totals.get("events", 0),
        queued=queued,
        executors=totals.get("executors", 0),
        schedules=totals.get("schedules", 0),
        journal_batches=journal.batches if journal is not None else 0,
        journal_records=journal.records if journal is not None else 0,
    )


_STATUS_COUNTS = """
SELECT status, count(*) FROM workflows GROUP BY status
UNION ALL SELECT 'ENQUEUED', count(*) FROM queue_entries WHERE started_at IS NULL AND done = 0
"""


def status_counts(store: _Queryable) -> dict[str, int]:
    """Workflows by status as users see them (every status of ``_status.STATUSES``,
    0 when none): a PENDING workflow still waiting in a queue counts as ENQUEUED.
    One statement (the web view's live poll): the counts agree with each other."""
    counts = dict.fromkeys(_status.STATUSES, 0)
    for status, count in run(store, _STATUS_COUNTS):
        counts[str(status)] = counts.get(str(status), 0) + int(count)
    counts["PENDING"] = max(0, counts["PENDING"] - counts["ENQUEUED"])
    return counts


# -- rows for durably.testing ---------------------------------------------------------


class StoredWorkflow(NamedTuple):
    """A workflow's stored row (codec-encoded values as stored)."""

    workflow_id: str
    name: str
    status: str
    inputs: Any
    output: Any
    error: Any
    parent_id: str | None
    parked: str | None
    created_at: float
    updated_at: float
    deadline: float | None
    recovery_attempts: int
    executor: str | None
    epoch: int
    app_version: str | None


class StoredStep(NamedTuple):
    """One recorded step of a workflow's journal."""

    position: int
    name: str
    output: Any
    error: Any
    ident: str | None
    started_at: float | None
    recorded_at: float


class StoredMessage(NamedTuple):
    """A message waiting to be received."""

    id: int
    dest: str
    topic: str | None
    payload: Any


class StoredEvent(NamedTuple):
    """The latest value of one event of a workflow."""

    workflow_id: str
    key: str
    value: Any


class StoredQueueEntry(NamedTuple):
    """A workflow's entry in a queue (kept after it ends)."""

    workflow_id: str
    queue: str
    priority: int
    not_before: float
    dedup_key: str | None
    started_at: float | None
    done: int


class StoredExecutor(NamedTuple):
    """A process that opened the database (its registration)."""

    executor_id: str
    host: str
    pid: int
    app_version: str
    started_at: float
    lease_until: float
    stopped_at: float | None


class StoredNotice(NamedTuple):
    """A cross-process wake-up (kind: msg, event, cancel, queue, start)."""

    id: int
    kind: str
    workflow_id: str | None
    detail: str | None


class StoredSendKey(NamedTuple):
    """An idempotency key of a client send, and where it went."""

    key: str
    dest: str


TABLES = (
    "workflows",
    "steps",
    "messages",
    "events",
    "queue_entries",
    "schedules",
    "send_keys",
    "executors",
    "notices",
)

_WORKFLOW = f"SELECT {', '.join(StoredWorkflow._fields)} FROM workflows"
_STEPS = f"SELECT {', '.join(StoredStep._fields)} FROM steps WHERE workflow_id = ? ORDER BY position"
_MESSAGES = f"SELECT {', '.join(StoredMessage._fields)} FROM messages"
_EVENTS = f"SELECT {', '.join(StoredEvent._fields)} FROM events"
_QUEUE = f"SELECT {', '.join(StoredQueueEntry._fields)} FROM queue_entries"
_EXECUTORS = f"SELECT {', '.join(StoredExecutor._fields)} FROM executors ORDER BY started_at, executor_id"
_NOTICES = f"SELECT {', '.join(StoredNotice._fields)} FROM notices ORDER BY id"
_SEND_KEYS = f"SELECT {', '.join(StoredSendKey._fields)} FROM send_keys ORDER BY key"


def workflow_rows(store: _Queryable, workflow_id: str | None = None) -> list[StoredWorkflow]:
    if workflow_id is None:
        return [StoredWorkflow(*r) for r in run(store, _WORKFLOW + " ORDER BY seq")]
    return [StoredWorkflow(*r) for r in run(store, _WORKFLOW + " WHERE workflow_id = ?", (workflow_id,))]


def step_rows(store: _Queryable, workflow_id: str) -> list[StoredStep]:
    return [StoredStep(*r) for r in run(store, _STEPS, (workflow_id,))]


def message_rows(store: _Queryable, dest: str | None = None) -> list[StoredMessage]:
    if dest is None:
        return [StoredMessage(*r) for r in run(store, _MESSAGES + " ORDER BY id")]
    return [StoredMessage(*r) for r in run(store, _MESSAGES + " WHERE dest = ? ORDER BY id", (dest,))]


def event_rows(store: _Queryable, workflow_id: str | None = None) -> list[StoredEvent]:
    if workflow_id is None:
        return [StoredEvent(*r) for r in run(store, _EVENTS + " ORDER BY workflow_id, key")]
    return [StoredEvent(*r) for r in run(store, _EVENTS + " WHERE workflow_id = ? ORDER BY key", (workflow_id,))]


def queue_rows(store: _Queryable, queue: str | None = None) -> list[StoredQueueEntry]:
    if queue is None:
        return [StoredQueueEntry(*r) for r in run(store, _QUEUE + " ORDER BY seq")]
    return [StoredQueueEntry(*r) for r in run(store, _QUEUE + " WHERE queue = ? ORDER BY seq", (queue,))]


def executor_rows(store: _Queryable) -> list[StoredExecutor]:
    return [StoredExecutor(*r) for r in run(store, _EXECUTORS)]


def notice_rows(store: _Queryable) -> list[StoredNotice]:
    return [StoredNotice(*r) for r in run(store, _NOTICES)]


def send_key_rows(store: _Queryable) -> list[StoredSendKey]:
    return [StoredSendKey(*r) for r in run(store, _SEND_KEYS)]


def table_counts(store: _Queryable) -> dict[str, int]:
    """Rows in each of durably's tables (``TABLES``), by one statement."""
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TABLES)
    return {name: int(count) for name, count in run(store, sql)}
