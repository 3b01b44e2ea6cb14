"""The store contract: everything the runtime asks of a database, and what
each operation guarantees atomically. ``store/_store.py`` (SQLite) and
``store/pg/_store.py`` (PostgreSQL) fulfil it; ``tests/test_store_contract.py`` holds any store to it, so a second
backend is tested by the same suite.

Writes go through one method, :meth:`StoreContract.flush`, which applies a
batch of journal records (``durably._records``) in ONE transaction: either
all of its successful records are durable when it returns, or none are and
it raised. Within the batch, a record the database rejects (a constraint, a
value it cannot store, a typed refusal from an op) fails alone with
``record.error`` set; the rest commit. Record kinds:

* ``STEP`` insert one step outcome row (position unique per workflow).
* ``START`` create a workflow PENDING, owned by ``start_owner`` (None: a
  client's, with a ``start`` notice) unless its id exists (result: the
  existing (name, status)); a child's start and its parent's step row land
  together.
* ``COMPLETE`` end a workflow, only while it is PENDING.
* ``TX`` run a transaction step's SQL and record its outcome in the batch.
* ``OP`` run a named operation (``store/_ops.OPS``: messages, events,
  queues, executors and claims, fork, retention) and record its output as
  a step; a message is consumed once, a claim takes a workflow for one
  executor, a retention batch (``gc``) deletes each workflow whole (with
  every row that belongs to it) or not at all, and ``vacuum`` hands free
  pages back to the file system (SQLite; nothing on PostgreSQL).
* ``WRITE`` one named single-statement change (``store/_writes.WRITES``).

Fencing: every record that advances a workflow (``STEP``, ``COMPLETE``,
``TX``, ``OP`` with a workflow, a child ``START``) is written only if this
process still owns the workflow (``owned``), checked inside the batch's
transaction; otherwise it fails with ``FencedError`` and ``on_fenced`` is
told (store/_executors.py).

Busy (another process holds the database) is waited out, never an error;
only a store that can no longer be trusted (I/O error, failed fsync, full
disk, corruption) fails for good (every later flush raises the same error).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

# -- rows the reads return (NamedTuples: positional use keeps working) ---------------------


class WorkflowRow(NamedTuple):
    """A workflow's row (``get_workflow``)."""

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


class WorkflowView(NamedTuple):
    """A workflow as users see it (``get_workflow(user_view=True)``,
    ``list_workflows``): status ENQUEUED while it waits in a queue, and what
    introspection adds (NULLs/0 for an older SQLite file read as it is)."""

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
    recovery_attempts: int | None
    executor: str | None
    queue: str | None
    priority: int | None
    dequeued_at: float | None


class StepRow(NamedTuple):
    """A step with its timestamps (``step_rows``). ``load_steps`` (replay's
    read, on the hot path) returns plain tuples (position, name, output,
    error, ident): see ``load_steps``."""

    position: Any
    name: str
    output: Any
    error: Any
    recorded_at: float
    ident: Any
    started_at: float | None


class PendingRow(NamedTuple):
    """A PENDING workflow to run again (``pending_workflows``)."""

    workflow_id: str
    name: str
    inputs: Any
    parent_id: str | None
    recovery_attempts: int


class ScheduleRow(NamedTuple):
    """A schedule (``schedules``)."""

    name: str
    cron: str
    workflow: str
    last_slot: float
    paused: int
    tz: str | None
    missed: str  # the missed-slot policy


class ExecutorRow(NamedTuple):
    """A live executor (``executors``); ``left``: seconds its lease has left
    on the store's clock."""

    executor_id: str
    host: str
    pid: int
    pid_started: str | None
    lease_until: float
    left: float


class MessageRow(NamedTuple):
    """A message sent to a workflow and not received yet (``messages_for``);
    ``payload`` as stored (codec-encoded)."""

    id: int
    topic: str | None
    payload: Any
    created_at: float


class QueueRow(NamedTuple):
    """One queue as operators see it (``queue_stats``): its workflows
    waiting (``enqueued``: not started yet, delayed ones included) and
    ``running`` (started, not ended), and the limits an executor serving it
    last declared (``concurrency``; ``rate_limit=(rate_starts,
    rate_period)``; all None when none declared it since schema v6, or no
    limit), ``declared_at`` (unix time) when."""

    queue: str
    enqueued: int
    running: int
    concurrency: int | None
    rate_starts: int | None
    rate_period: float | None
    declared_at: float | None


# -- a transaction step's handle ---------------------------------------------------------


@runtime_checkable
class Tx(Protocol):
    """SQL access for a ``@engine.transaction`` step (``durably.Tx``).

    Its statements run inside the journal batch's transaction, in a
    SAVEPOINT of their own: they commit with the step's outcome or not at
    all. Transaction control and writes to durably's own tables are refused.
    SQLite's handle takes ``?`` parameters; PostgreSQL's takes ``%s``,
    ``%(name)s`` or ``?``.
    """

    def execute(self, sql: str, params: Any = ...) -> list[tuple[Any, ...]]:
        """Run one statement; return all its result rows."""
        ...

    def executemany(self, sql: str, seq: Iterable[Any]) -> None:
        """Run one statement for each parameter set in ``seq``."""
        ...

    def query_one(self, sql: str, params: Any = ...) -> tuple[Any, ...] | None:
        """First row of a query, or None."""
        ...

    @property
    def changes(self) -> int:
        """Rows changed by the last statement."""
        ...


# -- the store ----------------------------------------------------------------------------


@runtime_checkable
class StoreContract(Protocol):
    path: str
    executor: str | None  # this process's executor id
    start_owner: str | None  # owner of workflows started here (None: a client)
    app_version: str  # recorded on workflows started here by an executor
    owned: dict[str, int | None]  # workflows running here -> their epoch (None: owner checked alone)
    fenced: set[str]  # workflows taken over by another executor
    on_fenced: Callable[[list[str]], None] | None
    tx_budget: float  # seconds a transaction step's SQL may run
    registration: tuple[Any, ...] | None  # this executor's row, written when the store opens

    # -- lifecycle ----------------------------------------------------------------------
    def open(self, codec: str | None = None) -> None:
        """Create or migrate the schema atomically; refuse a damaged or foreign
        database, or another codec than the first open's, before writing."""
        ...

    def open_readonly(self) -> None:
        """Open for inspection only: nothing written, nothing created."""
        ...

    def close(self, clean: bool = True) -> None:
        """Close; a clean close by the last executor marks the database closed."""
        ...

    def backup(self, dest: str) -> tuple[int, int]:
        """An online, consistent copy at the new file ``dest`` that an engine
        opens as it is: (pages, page size). SQLite only; PostgreSQL raises
        UsageError (pg_dump, or ``durably backup URL DEST.db``)."""
        ...

    def stop_waiting(self) -> None:
        """Closing: a batch waiting for a lock gives up (unacknowledged)."""
        ...

    # -- transaction steps ---------------------------------------------------------------
    def interrupt_tx(self, workflow_id: str) -> None:
        """Cancel: that workflow's running transaction step is interrupted."""
        ...

    def interrupt_all_tx(self) -> None:
        """Close: any running transaction step is interrupted (not recorded)."""
        ...

    def tx_done(self, workflow_id: str) -> None:
        """The workflow ended here: forget its cancel."""
        ...

    # -- writes -----------------------------------------------------------------------------
    def flush(self, batch: Sequence[Any]) -> None:
        """Apply a batch of records in one transaction (module docstring)."""
        ...

    # -- fencing ----------------------------------------------------------------------------
    def own(self, workflow_id: str, epoch: int | None) -> None:
        """This process runs ``workflow_id`` at ``epoch`` (after a claim); the
        next batch re-checks every owned workflow first."""
        ...

    def still_owns(self, workflow_id: str, epoch: int) -> bool:
        """Whether the database still names this executor, at ``epoch``, as
        the owner of the PENDING ``workflow_id`` (a read)."""
        ...

    def still_owned(self, claimed: Sequence[tuple[str, int]]) -> set[str]:
        """``still_owns`` of many (workflow_id, epoch) pairs in one read: those still owned."""
        ...

    # -- reads (committed data only) -----------------------------------------------------
    def query(self, sql: str, params: Any = ...) -> list[tuple[Any, ...]]:
        """A read-only query in the backend's own SQL."""
        ...

    def get_workflow(self, workflow_id: str, *, user_view: bool = False) -> WorkflowRow | WorkflowView | None:
        """The workflow's row; with ``user_view``, as users see it."""
        ...

    def load_steps(self, workflow_id: str) -> list[tuple[Any, ...]]:
        """(position, name, output, error, ident) in call order (plain tuples)."""
        ...

    def load_journal(self, workflow_id: str) -> list[tuple[Any, ...]]:
        """``load_steps`` rows and a sixth column: true where the values,
        too large, were left out (None); ``step_value`` reads them."""
        ...

    def load_journals(self, workflow_ids: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
        """``load_journal`` of many workflows in one read, by id (no steps: missing)."""
        ...

    def step_value(self, workflow_id: str, position: int) -> tuple[Any, Any]:
        """The (output, error) recorded at ``position``."""
        ...

    def step_rows(self, workflow_id: str) -> list[StepRow]: ...
    def pending_workflows(self) -> list[PendingRow]: ...
    def list_workflows(
        self,
        status: str | None = None,
        name: str | None = None,
        limit: int | None = 100,
        *,
        id_prefix: str | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
        queue: str | None = None,
        parent_id: str | None = None,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[WorkflowView]: ...
    def children(self, workflow_id: str) -> list[str]: ...
    def messages_for(self, workflow_id: str) -> list[MessageRow]:
        """Messages sent to ``workflow_id`` not received yet, oldest first."""
        ...

    def queue_stats(self) -> list[QueueRow]:
        """Every queue with a workflow waiting or running, or with declared
        limits, by name (one statement: the counts agree)."""
        ...

    def read(self, name: str, *args: Any) -> Any:
        """A named read of ``store/_ops.READS`` (events)."""
        ...

    def deadlines(self) -> list[tuple[str, float]]: ...
    def deadline(self, workflow_id: str) -> float | None: ...
    def trace_of(self, workflow_id: str) -> tuple[str | None, int] | None:
        """(trace, recovery_attempts) of a workflow, or None: where its runs'
        spans descend from (a W3C traceparent written with its start when
        telemetry is on; durably/telemetry.py)."""
        ...

    def executors(self) -> list[ExecutorRow]:
        """(executor_id, host, pid, pid_started, lease_until, seconds its
        lease has left on the store's clock) of the executors not stopped
        whose lease has not run out (give or take ``_executors.LISTED``)."""
        ...

    def statuses(self, ids: Sequence[str]) -> list[tuple[str, str, str | None]]: ...
    def claimable(self, version: str, names: str, dead: str, live: str) -> bool:
        """Whether ``claim`` would take anything now (a read)."""
        ...

    def others_live(self, executor_id: str) -> bool:
        """Whether another executor has the file open (a live lease on the
        store's clock; on this host, a live process)."""
        ...

    def schedules(self, name: str | None = None) -> list[ScheduleRow]: ...
    def has_schedules(self) -> bool: ...
    def workflow_names(self) -> set[str]: ...

    # -- cross-process wake-ups ---------------------------------------------------------
    def data_version(self) -> int:
        """Changes after another connection committed, at least whenever it
        committed a notice or ended a workflow (SQLite: any commit, seen at
        once; PostgreSQL: a NOTIFY, seen within the delivery delay)."""
        ...

    def last_notice(self) -> int: ...
    def notices_since(self, last: int) -> list[tuple[Any, ...]]:
        """(id, kind, workflow_id, detail) committed after ``last``, in order."""
        ...

    # -- moving between backends (store/_transfer.py, ``durably copy``) ------------------
    def holds_data(self) -> bool:
        """Whether any table a copy carries (workflows, steps, messages,
        events, queue entries, schedules, send keys) has a row."""
        ...

    def stored_codec(self) -> str | None:
        """The values codec recorded at creation (None: never recorded)."""
        ...

    def export_rows(self, chunk: int = ...) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        """(table, rows) of every table a copy carries, chunk by chunk in
        primary-key order, all from ONE snapshot (a store opened read-only
        will do; an SQLite file of an older schema, or crashed with its -wal
        gone, is refused)."""
        ...

    def import_rows(self, chunks: Iterable[tuple[str, list[tuple[Any, ...]]]]) -> dict[str, int]:
        """Write another store's ``export_rows`` into this one, created by
        ``open(codec)`` and empty, ids kept; rows written per table. SQLite:
        a transaction every so many rows (the caller builds the file under a
        temporary name); PostgreSQL: one transaction (a failure leaves the
        schema empty)."""
        ...
