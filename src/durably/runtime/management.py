"""Inspecting and managing workflows: ``Engine.handle``, ``list_workflows``,
``steps``, ``cancel``, ``fork`` and ``resume``.

Each change is one journaled record (durable before the call returns);
the running instances it concerns are told at once (a cancel interrupts
them at their next durable point, a resume launches the workflow again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _records as R
from .. import errors
from .._ids import new_id
from .._names import check_name, check_workflow_id
from .._status import STATUSES
from ..codec import encode_error
from ..handle import StepInfo, WorkflowHandle, WorkflowInfo
from ..journal import Record
from .context import stop

if TYPE_CHECKING:
    from ..codec import Codec
    from ..store.contract import MessageRow, QueueRow, StoreContract
    from .deadlines import Deadlines
    from .identity import Identity
    from .runner import Runner
    from .workflows import WorkflowSpec

_INT64_MAX = 2**63 - 1


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _unix_time(what: str, value: Any) -> float | None:
    """A time bound of a listing, as a float (an int too large for the
    stores' integers is one too); None stays None. NaN is refused."""
    if value is None:
        return None
    try:
        seconds = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    except OverflowError:  # an int past float's range
        seconds = None
    if seconds is None or seconds != seconds:
        raise errors.UsageError(f"{what} must be a unix time in seconds, not {_short(value)}")
    return seconds


def _count(what: str, value: Any) -> None:
    """``limit`` and ``offset``: both stores take a signed 64-bit integer (SQLite's range)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT64_MAX):
        raise errors.UsageError(f"{what} must be an int from 0 to 2**63 - 1, not {_short(value)}")


class Management:
    """Reads and changes of existing workflows (a part of ``Engine``).

    Rows are read and waited for through ``runner`` (whose journal, the
    current open's, takes the changes); ``spec`` looks a registered
    workflow up (the starter's); ``kick_queues`` tells the queues a slot
    may be free."""

    __slots__ = ("identity", "store", "codec", "workflows", "runner", "deadlines", "spec", "kick_queues")

    def __init__(
        self,
        identity: Identity,
        store: StoreContract,
        codec: Codec,
        workflows: dict[str, WorkflowSpec],
        runner: Runner,
        deadlines: Deadlines,
        spec: Callable[[Any], WorkflowSpec],
        kick_queues: Callable[[], None],
    ) -> None:
        self.identity = identity
        self.store = store
        self.codec = codec
        self.workflows = workflows
        self.runner = runner
        self.deadlines = deadlines
        self.spec = spec
        self.kick_queues = kick_queues

    # -- reads --------------------------------------------------------------------------

    def handle(self, workflow_id: str) -> WorkflowHandle[Any]:
        """``Engine.handle``."""
        self.runner.row(workflow_id)
        return WorkflowHandle.of(self.runner, workflow_id)

    def list_workflows(
        self,
        status: str | None,
        name: Any,
        limit: int | None,
        *,
        id_prefix: str | None,
        start_time: float | None,
        end_time: float | None,
        queue: str | None,
        parent_id: str | None,
        offset: int,
        newest_first: bool,
    ) -> list[WorkflowInfo]:
        """Workflows in creation order (newest first unless ``newest_first``
        is False; workflows created in the same millisecond keep the order
        they were created in), filtered by status, name (or the workflow
        function), id prefix, creation time range (``start_time`` <=
        created_at < ``end_time``, unix seconds), queue and parent; at most
        ``limit`` (None: all) after skipping ``offset``. Each filter is
        served by an index."""
        self.runner.check_open()
        if status is not None and str(status) not in STATUSES:
            raise errors.UsageError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        if name is not None and not isinstance(name, str):
            name = self.spec(name).name
        for what, value in (("id_prefix", id_prefix), ("queue", queue), ("parent_id", parent_id)):
            if value is not None:
                check_name(value, what)
        _count("limit", limit)
        _count("offset", offset)
        rows = self.store.list_workflows(
            None if status is None else str(status),
            name,
            limit,
            id_prefix=id_prefix,
            start_time=_unix_time("start_time", start_time),
            end_time=_unix_time("end_time", end_time),
            queue=queue,
            parent_id=parent_id,
            offset=offset,
            newest_first=bool(newest_first),
        )
        return [WorkflowInfo.from_row(r, self.runner) for r in rows]

    def steps(self, workflow_id: str) -> list[StepInfo]:
        """``Engine.steps``."""
        self.runner.row(workflow_id)
        return [StepInfo.from_row(r) for r in self.store.step_rows(workflow_id)]

    def waiting_messages(self, workflow_id: str) -> list[MessageRow]:
        """Messages sent to ``workflow_id`` and not received yet, oldest
        first: (id, topic, payload as stored, created_at). WorkflowNotFoundError
        if there is no such workflow."""
        self.runner.row(workflow_id)
        return self.store.messages_for(workflow_id)

    def queue_stats(self) -> list[QueueRow]:
        """Every queue with workflows waiting or running, or declared by an
        executor, by name: (queue, enqueued, running, concurrency,
        rate_starts, rate_period, declared_at). The limits are those an
        executor serving the queue declared last; each dispatcher applies
        its own."""
        self.runner.check_open()
        return self.store.queue_stats()

    # -- changes ------------------------------------------------------------------------

    def _registered(self, workflow_id: str, name: str) -> WorkflowSpec:
        spec = self.workflows.get(name)
        if spec is None:
            raise errors.UnknownWorkflowError(
                f"workflow {workflow_id!r} runs {name!r}, which is not registered with this engine",
                workflow_id=workflow_id,
                name=name,
            )
        return spec

    def cancel(self, workflow_id: str, reason: str | None, children: bool = True) -> None:
        """Cancel a PENDING workflow and (unless ``children=False``) its
        pending descendants.

        Durable before it returns; a running workflow stops at its next
        durable point (a step boundary, a sleep, a recv). Finished workflows
        are left alone. A cancelled queued workflow frees its queue slot now.
        """
        # ``reason`` (e.g. a deadline) is kept for the root's WorkflowCancelledError.
        runner = self.runner
        runner.row(workflow_id)
        ids, frontier = [workflow_id], [workflow_id] if children else []
        while frontier:
            found = [c for wid in frontier for c in self.store.children(wid)]
            ids.extend(found)
            frontier = found
        # Interrupt first: a completion racing with the cancel then never
        # reports SUCCESS to waiters without re-reading the row.
        with runner.lock:
            for wid in ids:
                ctx = runner.active.get(wid)
                if ctx is not None:
                    stop(ctx, errors.WorkflowCancelled(wid))
                    self.store.interrupt_tx(wid)  # a transaction step running now ends at once
        why = None if reason is None else encode_error(errors.WorkflowCancelledError(reason, workflow_id=workflow_id))
        journal = runner.journal
        for wid in ids:
            journal.submit(Record(R.WRITE, ("cancel", (why if wid == workflow_id else None, wid))))
        for wid in ids:
            self.deadlines.disarm(wid)
            runner.notify(wid)
        # A cancelled queue entry's slot is free once the cancel commits (the
        # queue_entry_done trigger), not when its body returns.
        self.kick_queues()

    def fork(self, workflow_id: str, start_step: int, new_workflow_id: str | None) -> WorkflowHandle[Any]:
        """Start a new workflow from a recorded one: the same function and
        inputs, the first ``start_step`` recorded steps kept (in the order of
        ``engine.steps(id)``; they replay, child workflows they started
        included), the rest run again with the current code. ``start_step=0``
        restarts it from the beginning. The original is untouched; returns
        the new workflow's handle (its id: ``new_workflow_id`` or a new one).
        A client engine forks by name: a live executor that registered the
        function runs the fork. Like DBOS ``fork_workflow``."""
        row = self.runner.row(workflow_id)
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise errors.UsageError(f"start_step must be an int >= 0, not {start_step!r}")
        client = self.identity.client  # a client forks by name: an executor that registered it runs the fork
        spec = None if client else self._registered(workflow_id, row.name)
        new = check_workflow_id(new_workflow_id, "new_workflow_id") if new_workflow_id is not None else new_id()
        codec = self.codec
        owner = None if client else self.identity.executor_id
        args = (workflow_id, new, start_step, owner, lambda i: codec.encode(i, "workflow id"))  # pyright: ignore[reportUnknownLambdaType, reportUnknownVariableType]
        self.runner.journal.submit(Record(R.OP, (None, None, "fork", "fork", args)))
        if spec is not None:
            self.runner.launch(spec, new, row.inputs, replay=True)
        return WorkflowHandle.of(self.runner, new)

    def resume(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Run a CANCELLED, ERROR, parked, interrupted or
        MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow again from its last recorded step.
        A client engine hands it to a live executor that registered its
        function (any ``app_version``: the first to claim it runs it)."""
        runner = self.runner
        row = runner.row(workflow_id)
        name, status, inputs = row.name, row.status, row.inputs
        handle = WorkflowHandle.of(runner, workflow_id)
        if status == "SUCCESS":
            return handle
        if self.identity.client:
            # A client has no workflow code: the workflow is left to the
            # first live executor that registered it (fenced, woken by a notice).
            runner.journal.submit(Record(R.OP, (None, None, "resume", "resume_unowned", (workflow_id,))))
            return handle
        spec = self._registered(workflow_id, name)
        identity = self.identity
        runner.journal.submit(Record(R.WRITE, ("resume", (identity.executor_id, identity.app_version, workflow_id))))
        runner.interrupted.pop(workflow_id, None)
        with runner.lock:
            ctx = runner.active.get(workflow_id)
            if ctx is not None:
                # Still unwinding (e.g. a cancel not yet reached a step
                # boundary): run it again as soon as that instance ends.
                if isinstance(ctx.interrupt, errors.WorkflowCancelled):
                    runner.relaunch.add(workflow_id)
                return handle
        runner.launch(spec, workflow_id, inputs, replay=True)
        return handle
