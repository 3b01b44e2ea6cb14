"""What both stores share: the reads, fencing's bookkeeping, the state of
transaction steps and the engine's settings, over one primitive a backend
provides, :meth:`SqlStore.query` (a read of committed data). Each backend
(``_store.Store``, ``pg._store.PgStore``) keeps its connections, locking,
wake-ups, DDL and migrations, and its journal writer (``flush``).

Statements come from ``_queries`` (written once, rendered per backend).
Rows come back named (``contract``): NamedTuples, so positional use keeps
working; ``load_steps`` (every replay reads every step) stays plain tuples.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from itertools import groupby
from operator import itemgetter
from typing import Any, ClassVar

from .. import _crash, errors
from .. import _records as R
from . import _ownership
from ._executors import LISTED
from ._ops import OpDb
from ._queries import HOLDS_DATA, VIEW_COLUMNS, WAITING_IN_QUEUE, Queries, render
from ._transfer import CHUNK, Run, export
from .contract import (
    ExecutorRow,
    MessageRow,
    PendingRow,
    QueueRow,
    ScheduleRow,
    StepRow,
    WorkflowRow,
    WorkflowView,
)

# A transaction step's SQL may run this long (seconds) by default; it holds the writer meanwhile.
TX_BUDGET = 10.0
# Step values larger than this (bytes) stay out of a replay's journal until
# replay reaches them (load_journal).
LARGE_VALUE = 64 * 1024
_LARGE_ARGS = (LARGE_VALUE,) * 6  # the three size tests of a journal row, two values each
_CHUNK = 500  # ids per statement where SQLite lists them (IN (?, ?, ...))


class SqlStore:
    """The shared part of a store; a backend sets ``Q`` and implements
    ``query`` (and the rest of store/contract.py)."""

    Q: ClassVar[Queries]
    _NO_LIMIT: ClassVar[int | None] = None  # LIMIT's "no limit"
    path: str

    def __init__(self) -> None:
        self._failed: errors.DurablyError | None = None  # the store failed for good: every flush raises it
        self._closing = False  # set by close(): a busy wait gives up, a transaction step is interrupted
        self._stop_tx: set[str] = set()  # workflows cancelled: their running transaction step is interrupted
        self._stop_all_tx = False  # the engine is closing: any running transaction step is interrupted
        self.tx_budget = TX_BUDGET  # seconds a transaction step's SQL may run (Engine(transaction_timeout=))
        self.executor: str | None = None  # recorded as the executor of workflows started here
        self.start_owner: str | None = None  # the owner of workflows started here (None: a client's)
        self.app_version = "0"  # recorded on workflows started here (a client's: none, any version runs them)
        self.registration: tuple[Any, ...] | None = None  # this executor's row, written when the store opens
        # Fencing (store/_ownership.py): the epoch of every workflow this
        # process runs; those another executor took over (their records
        # fail with FencedError); the takeovers count last seen; who to tell.
        self.owned: dict[str, int | None] = {}
        self.fenced: set[str] = set()
        self._takeovers: Any = None
        # Workflows registered by ``own`` (outside the writer) since the last
        # fence: the next batch checks them, and only them, unless the count moved.
        self._recheck: deque[str] = deque()
        self.on_fenced: Callable[[list[str]], None] | None = None
        # An older SQLite file opened read-only is read as it is.
        self._ops_db: OpDb | None = None  # the writer connection's, for the ops
        self._queues_table = True  # it has queue_entries
        self._full_view = True  # it has the columns of schema v4 (seq, deadline, ident, ...)
        self._limits_table = True  # it has the queues table (SQLite v6, PostgreSQL v2)

    # -- the primitive ------------------------------------------------------------------

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on committed data (the backend's own SQL)."""
        raise NotImplementedError

    def _ops_on(self, conn: Any) -> OpDb:
        """The ops' view of the writer connection ``conn`` (made again when
        the connection is: PostgreSQL reconnects)."""
        db = self._ops_db
        if db is None or db.conn is not conn:
            db = self._ops_db = self._new_ops_db(conn)
        return db

    def _new_ops_db(self, conn: Any) -> OpDb:
        """How the ops reach ``conn`` (the backend's OpDb)."""
        raise NotImplementedError

    # -- transaction steps ----------------------------------------------------------------

    def interrupt_tx(self, workflow_id: str) -> None:
        """A workflow was cancelled: its transaction step running now (if
        any) is interrupted (the next ones are not run: the workflow stops)."""
        self._stop_tx.add(workflow_id)
        self._interrupt_running(lambda wid: wid == workflow_id)

    def interrupt_all_tx(self) -> None:
        """The engine is closing: a transaction step running now is interrupted."""
        self._stop_all_tx = True
        self._interrupt_running(lambda wid: True)

    def _interrupt_running(self, which: Callable[[str], bool]) -> None:
        """Interrupt the running transaction step now if ``which`` names its
        workflow (SQLite needs nothing: its progress handler polls the flags)."""

    def tx_done(self, workflow_id: str) -> None:
        """The workflow ended here: forget its cancel (see interrupt_tx)."""
        self._stop_tx.discard(workflow_id)

    def backup(self, dest: str) -> tuple[int, int]:
        """A database server's backups are its own tools' job (the SQLite store overrides this)."""
        raise errors.UsageError(
            f"engine.backup() copies SQLite files; {self.path} is a PostgreSQL database: back up its schema "
            f"with pg_dump (pg_dump --schema={getattr(self, 'schema', None) or 'durably'} URL), or write an "
            "SQLite copy of it with `durably backup URL DEST.db`"
        )

    def stop_waiting(self) -> None:
        """The engine is closing: a batch waiting for a lock (or a lost
        connection) gives up (its records fail, unacknowledged)."""
        self._closing = True

    # -- writing ---------------------------------------------------------------------------

    def _lone_step(self, conn: Any, rec: Any) -> bool:
        """Write one step row by the statement that checks its own fence;
        False: it could not say, the batch path writes it (each backend)."""
        raise NotImplementedError

    def _as_lone_step(self, conn: Any, batch: Sequence[Any], isolate: bool) -> bool:
        """The flush's shortcut, the same on both backends: a batch that is
        one step row (not isolated, no crash point armed) written by
        ``_lone_step``; True: it is written."""
        return (
            not isolate
            and len(batch) == 1
            and batch[0].kind == R.STEP
            and not _crash.ARMED
            and not self._recheck  # the general path fences them first
            and self._lone_step(conn, batch[0])
        )

    # -- fencing ---------------------------------------------------------------------------

    def still_owns(self, workflow_id: str, epoch: int) -> bool:
        """Whether the database still names this executor, at ``epoch``, as
        the owner of ``workflow_id`` (checked before running what a claim
        took: it may have been lost again since)."""
        rows = self.query(self.Q.still_owns, (workflow_id,))
        return bool(rows) and tuple(rows[0]) == (self.executor, epoch)

    def still_owned(self, claimed: Sequence[tuple[str, int]]) -> set[str]:
        """Of the (workflow_id, epoch) pairs a claim took, those the database
        still names this executor the owner of, PENDING at that epoch (one
        read for them all; ``still_owns`` one by one)."""
        epochs = dict(claimed)
        rows = self._by_ids(self.Q.owners_status, list(epochs), self.query)
        mine = (self.executor, "PENDING")
        return {wid for wid, owner, epoch, status in rows if (owner, status) == mine and epochs[wid] == epoch}

    def own(self, workflow_id: str, epoch: int | None) -> None:
        """This process runs ``workflow_id`` at ``epoch`` (registered outside
        the writer: after a claim, or relaunching a workflow claimed back).
        The next batch checks it against the database first: the
        registration may be stale (lost again meanwhile). Only it: the
        others are covered by the takeovers count (re-checking every owned
        workflow after each recovery wave held the writer for up to 0.4 s
        per wave with 10^4 owned)."""
        if self.owned.get(workflow_id, -1) == epoch:
            # Registered at this epoch by the claim itself, in the writer
            # (_ownership.claimed), and not lost since: every later change
            # of owner moves the takeovers count, which re-checks every
            # owned workflow. Nothing to add (a recovery wave: 10^3 of them).
            return
        self.owned[workflow_id] = epoch
        self._recheck.append(workflow_id)  # (a deque: appended here, drained by the writer)

    def _check_owners(self, takeovers: Any, refresh: Callable[[list[str]], None]) -> None:
        """The writer's fence, the same on both backends: ``refresh`` (read
        these workflows' owners, lose those no longer this process's) for
        every owned workflow when the takeovers count moved since the last
        look, else for those ``own`` registered since (appended meanwhile:
        the next batch). A refresh that fails is done again by the retry."""
        queue = self._recheck
        recheck = [queue.popleft() for _ in range(len(queue))]
        try:
            if takeovers != self._takeovers:
                refresh(list(self.owned))
                self._takeovers = takeovers
            elif recheck:
                refresh(recheck)
        except BaseException:
            queue.extendleft(reversed(recheck))
            raise

    def _own(self, output: Any) -> None:
        _ownership.claimed(self, output)

    def _by_ids(self, sql: str, ids: Sequence[str], run: Callable[[str, Any], list[Any]]) -> list[Any]:
        """Run ``sql`` (with ``{ids}``, or PostgreSQL's ``= ANY``) for ``ids``."""
        if self.Q.postgres:
            return run(sql, (list(ids),))
        out: list[Any] = []
        for at in range(0, len(ids), _CHUNK):
            chunk = list(ids[at : at + _CHUNK])
            out += run(sql.replace("{ids}", ", ".join("?" * len(chunk))), chunk)
        return out

    # -- reads -------------------------------------------------------------------------------

    def _view_columns(self) -> str:
        return VIEW_COLUMNS

    def get_workflow(self, workflow_id: str, *, user_view: bool = False) -> WorkflowRow | WorkflowView | None:
        """The workflow row, or None; with ``user_view`` as users see it
        (ENQUEUED while it waits in a queue, and what introspection adds)."""
        if user_view:
            sql = (
                self.Q.get_view
                if self._full_view
                else render(f"SELECT {self._view_columns()} FROM workflows WHERE workflow_id = ?", self.Q.postgres)
            )
            rows = self.query(sql, (workflow_id,))
            return WorkflowView._make(rows[0]) if rows else None
        rows = self.query(self.Q.get_workflow, (workflow_id,))
        return WorkflowRow._make(rows[0]) if rows else None

    def load_steps(self, workflow_id: str) -> list[tuple[Any, ...]]:
        """A workflow's journal, in call order: (position, name, output,
        error, ident). Plain tuples: replay reads every step, and naming
        them costs ~40% of this read (measured: issue 20)."""
        return self.query(self.Q.load_steps, (workflow_id,))

    def load_journal(self, workflow_id: str) -> list[tuple[Any, ...]]:
        """A replay's journal: ``load_steps`` rows with a sixth column, true
        where the output and error were left out (None) as larger than
        ``LARGE_VALUE`` bytes: replay reads those one at a time
        (``step_value``), so a journal of large values is never in memory whole."""
        return self.query(self.Q.load_journal, (*_LARGE_ARGS, workflow_id))

    def load_journals(self, workflow_ids: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
        """``load_journal`` of many workflows at once (recovery: one query,
        not one per workflow), by workflow id; a workflow without steps is
        missing."""
        rows = self._by_ids(self.Q.load_journals, workflow_ids, lambda sql, ids: self.query(sql, (*_LARGE_ARGS, *ids)))
        out: dict[str, list[tuple[Any, ...]]] = {}
        for wid, group in groupby(rows, itemgetter(0)):
            out[wid] = [row[1:] for row in group]
        return out

    def step_value(self, workflow_id: str, position: int) -> tuple[Any, Any]:
        """The (output, error) recorded at ``position`` (a value ``load_journal`` left out)."""
        rows = self.query(self.Q.step_value, (workflow_id, position))
        if not rows:
            raise errors.InternalError(f"workflow {workflow_id!r} has no step at position {position} any more")
        return rows[0][0], rows[0][1]

    def step_rows(self, workflow_id: str) -> list[StepRow]:
        """Steps with their timestamps, in the order they were recorded."""
        sql = self.Q.step_rows
        if not self._full_view:
            sql = sql.replace("ident, started_at", "NULL, NULL", 1)
        return list(map(StepRow._make, self.query(sql, (workflow_id,))))

    def pending_workflows(self) -> list[PendingRow]:
        """Every PENDING workflow, parked ones included (a deploy may have
        fixed what parked them), except queue entries not started yet (the
        queue dispatcher starts those)."""
        return list(map(PendingRow._make, self.query(self.Q.pending_workflows)))

    def _id_prefix(self, prefix: str) -> tuple[str, list[Any]]:
        """A filter on the id's prefix, served by the id's unique index."""
        return "workflow_id >= ? AND workflow_id < ?", [prefix, prefix + "\U0010ffff"]

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
    ) -> list[WorkflowView]:
        """Workflow rows as users see them (ENQUEUED while waiting in a
        queue), in creation order (``seq``: a total order; newest first by
        default), filtered. Every filter is served by an index: status, name,
        id prefix, creation time, parent, queue."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            if status in ("ENQUEUED", "PENDING") and self._queues_table:
                where.append(f"status = 'PENDING' AND {'' if status == 'ENQUEUED' else 'NOT '}{WAITING_IN_QUEUE}")
            else:  # (an older file without queues: nothing can be ENQUEUED)
                where.append("status = ?")
                params.append(status)
        if id_prefix is not None:
            clause, more = self._id_prefix(id_prefix)
            where.append(clause)
            params += more
        for value, clause in (
            (name, "name = ?"),
            (start_time, "created_at >= ?"),
            (end_time, "created_at < ?"),
            (parent_id, "parent_id = ?"),
            (queue, "workflow_id IN (SELECT workflow_id FROM queue_entries WHERE queue = ?)"),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        direction = " DESC" if newest_first else ""
        order = f"seq{direction}" if self._full_view else f"created_at{direction}, rowid{direction}"
        sql = render(
            f"SELECT {self._view_columns()} FROM workflows{clause} ORDER BY {order} LIMIT ? OFFSET ?", self.Q.postgres
        )
        rows = self.query(sql, (*params, self._NO_LIMIT if limit is None else limit, offset))
        return list(map(WorkflowView._make, rows))

    def deadlines(self) -> list[tuple[str, float]]:
        """(workflow_id, deadline) of every PENDING workflow that has one."""
        return [(r[0], r[1]) for r in self.query(self.Q.deadlines)]

    def deadline(self, workflow_id: str) -> float | None:
        """The deadline of a PENDING workflow, or None."""
        rows = self.query(self.Q.deadline, (workflow_id,))
        return rows[0][0] if rows else None

    def trace_of(self, workflow_id: str) -> tuple[str | None, int] | None:
        """(trace, recovery_attempts) of a workflow (telemetry), or None."""
        rows = self.query(self.Q.trace, (workflow_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def executors(self) -> list[ExecutorRow]:
        """Executors not stopped whose lease has not run out (LISTED: a
        margin); one whose lease ran out is gone for every claim anyway, and
        each row listed costs the watcher a look at a pid every round."""
        return list(map(ExecutorRow._make, self.query(self.Q.executors, (LISTED,))))

    def statuses(self, ids: Sequence[str]) -> list[tuple[str, str, str | None]]:
        """(workflow_id, status, parked) of those of ``ids`` that exist."""
        return self._by_ids(self.Q.statuses, ids, self.query)

    def last_notice(self) -> int:
        """The id of the newest notice (a watcher starts after it)."""
        return int(self.query(self.Q.last_notice)[0][0])

    def notices_since(self, last: int) -> list[tuple[Any, ...]]:
        """Cross-process wake-ups after id ``last``: (id, kind, workflow_id, detail)."""
        return self.query(self.Q.notices_since, (last,))

    def schedules(self, name: str | None = None) -> list[ScheduleRow]:
        """Schedule rows, by name; only ``name``'s when given."""
        rows = self.query(self.Q.schedules) if name is None else self.query(self.Q.schedule, (name,))
        return list(map(ScheduleRow._make, rows))

    def has_schedules(self) -> bool:
        return bool(self.query(self.Q.has_schedules))

    def workflow_names(self) -> set[str]:
        """The names of every workflow in the database (the demo's check)."""
        return {r[0] for r in self.query(self.Q.workflow_names)}

    def children(self, workflow_id: str) -> list[str]:
        """Ids of a workflow's children."""
        return [r[0] for r in self.query(self.Q.children, (workflow_id,))]

    def messages_for(self, workflow_id: str) -> list[MessageRow]:
        """Messages sent to ``workflow_id`` and not received yet, oldest first."""
        return list(map(MessageRow._make, self.query(self.Q.messages_for, (workflow_id,))))

    def queue_stats(self) -> list[QueueRow]:
        """Each queue's waiting and running workflows and its declared limits,
        by name (an older file read as it is: counts only)."""
        if not self._queues_table:
            return []
        sql = self.Q.queue_stats if self._limits_table else self.Q.queue_counts
        return [QueueRow(q, int(e), int(r), c, rs, rp, at) for q, e, r, c, rs, rp, at in self.query(sql)]

    # -- moving between backends (store/_transfer.py) -----------------------------------------

    def holds_data(self) -> bool:
        """Whether any table a copy carries has a row (a copy's destination must not)."""
        return bool(self.query(render(HOLDS_DATA, self.Q.postgres)))

    def stored_codec(self) -> str | None:
        """The values codec the database was created for (None: never recorded)."""
        rows = self.query(self.Q.stored_codec)
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    def export_rows(self, chunk: int = CHUNK) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        """(table, rows) of every table a copy carries, chunk by chunk in key
        order, all read from one snapshot (store/_transfer.py)."""
        with self._export_snapshot() as run:
            yield from export(run, self.Q.postgres, chunk)

    def import_rows(self, chunks: Iterable[tuple[str, list[tuple[Any, ...]]]]) -> dict[str, int]:
        """Write ``export_rows`` of another store into this one, just created
        and empty; returns the rows written per table (store/_transfer.py)."""
        raise NotImplementedError

    def _export_snapshot(self) -> AbstractContextManager[Run]:
        """Reads of one snapshot (each backend)."""
        raise NotImplementedError
