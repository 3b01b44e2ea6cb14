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
  queues, executors and claims, fork) and record its output as a step;
  a message is consumed once, a claim takes a workflow for one executor.
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

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable


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

    # -- lifecycle ----------------------------------------------------------------------
    def open(self, codec: str | None = None) -> None:
        """Create or migrate the schema atomically; refuse a damaged or foreign
        database, or another codec than the first open's, before writing."""

    def open_readonly(self) -> None:
        """Open for inspection only: nothing written, nothing created."""

    def close(self, clean: bool = True) -> None:
        """Close; a clean close by the last executor marks the database closed."""

    def stop_waiting(self) -> None:
        """Closing: a batch waiting for a lock gives up (unacknowledged)."""

    # -- transaction steps ---------------------------------------------------------------
    def interrupt_tx(self, workflow_id: str) -> None:
        """Cancel: that workflow's running transaction step is interrupted."""

    def interrupt_all_tx(self) -> None:
        """Close: any running transaction step is interrupted (not recorded)."""

    def tx_done(self, workflow_id: str) -> None:
        """The workflow ended here: forget its cancel."""

    # -- writes -----------------------------------------------------------------------------
    def flush(self, batch: Sequence[Any]) -> None:
        """Apply a batch of records in one transaction (module docstring)."""

    # -- reads (committed data only) -----------------------------------------------------
    def get_workflow(self, workflow_id: str, *, user_view: bool = False) -> tuple[Any, ...] | None: ...
    def load_steps(self, workflow_id: str) -> list[tuple[Any, ...]]: ...
    def step_rows(self, workflow_id: str) -> list[tuple[Any, ...]]: ...
    def pending_workflows(self) -> list[tuple[Any, ...]]: ...
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
    ) -> list[tuple[Any, ...]]: ...
    def children(self, workflow_id: str) -> list[str]: ...
    def read(self, name: str, *args: Any) -> Any:
        """A named read of ``store/_ops.READS`` (events)."""

    def deadlines(self) -> list[tuple[str, float]]: ...
    def deadline(self, workflow_id: str) -> float | None: ...
    def executors(self) -> list[tuple[Any, ...]]:
        """(executor_id, host, pid, pid_started, lease_until, seconds its
        lease has left on the store's clock) of the executors not stopped
        whose lease has not run out (give or take ``_executors.LISTED``)."""

    def statuses(self, ids: Sequence[str]) -> list[tuple[str, str, str | None]]: ...
    def claimable(self, version: str, names: str, dead: str, live: str) -> bool:
        """Whether ``claim`` would take anything now (a read)."""

    def others_live(self, executor_id: str) -> bool:
        """Whether another executor has the file open (a live lease on the
        store's clock; on this host, a live process)."""

    def schedules(self, name: str | None = None) -> list[tuple[Any, ...]]: ...
    def has_schedules(self) -> bool: ...
    def workflow_names(self) -> set[str]: ...

    # -- cross-process wake-ups ---------------------------------------------------------
    def data_version(self) -> int:
        """Changes after another connection committed, at least whenever it
        committed a notice or ended a workflow (SQLite: any commit, seen at
        once; PostgreSQL: a NOTIFY, seen within the delivery delay)."""

    def last_notice(self) -> int: ...
    def notices_since(self, last: int) -> list[tuple[Any, ...]]:
        """(id, kind, workflow_id, detail) committed after ``last``, in order."""
