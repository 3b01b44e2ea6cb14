"""Queues: durable enqueue with global concurrency and rate limits,
priority, deduplication and delayed start.

An enqueued workflow is a PENDING workflow row plus a ``queue_entries`` row,
written in one transaction before ``enqueue`` returns. One dispatcher thread
per engine starts waiting entries when their queue has room: ``started_at``
is recorded (durably) before the workflow is launched, so the limits are
computed from the database and hold across restarts: a started, unfinished
entry counts against ``concurrency`` after a crash too, and every start in
the last ``period`` seconds counts against the rate limit.

Times: on the system clock, a claim records ``started_at`` from the
store's clock, read inside its transaction (PostgreSQL: the server's, as
``created_at``), so a workflow never leaves its queue before it entered it
and rate windows mean the same to every host; on a virtual clock, from it.

Order: lowest ``priority`` first, then FIFO. A ``dedup_key`` that is live
(its workflow has not finished) returns the existing workflow's handle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _logs, errors
from . import _records as R
from ._ids import new_id
from ._names import check_name
from ._signatures import as_enqueue, as_enqueue_async
from .clock import SystemClock
from .handle import WorkflowHandle
from .journal import Record
from .runtime.context import workflow_context
from .runtime.toolkit import seconds_arg
from .runtime.waits import BackgroundLoop

if TYPE_CHECKING:
    from .clock import Clock
    from .codec import Codec
    from .journal import Journal
    from .runtime.deadlines import Deadlines
    from .runtime.identity import Identity
    from .runtime.runner import Runner
    from .runtime.workflows import WorkflowSpec
    from .store.contract import StoreContract

    # Vets a start or an enqueue: (spec, encoded inputs, deadline or None).
    Vet = Callable[
        [Any, tuple[Any, ...], dict[str, Any], "str | None", "float | None"], tuple[WorkflowSpec, Any, "float | None"]
    ]

log = _logs.get("durably.queues")

_BATCH = 100  # entries started per dispatcher round and queue


class Queue:
    """A named queue; get one from ``engine.queue(name, ...)``."""

    def __init__(
        self, manager: QueueManager, name: str, concurrency: int | None, rate_limit: tuple[int, float] | None
    ) -> None:
        check_name(name, "queue name")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise errors.UsageError(f"queue {name!r}: concurrency must be an int >= 1 or None, not {concurrency!r}")
        if rate_limit is not None:
            ok = isinstance(rate_limit, tuple) and len(rate_limit) == 2
            n, period = rate_limit if ok else (None, None)
            if not (
                ok
                and isinstance(n, int)
                and not isinstance(n, bool)
                and n >= 1
                and isinstance(period, (int, float))
                and math.isfinite(period)
                and period > 0
            ):
                raise errors.UsageError(
                    f"queue {name!r}: rate_limit must be (starts >= 1, seconds > 0), not {rate_limit!r}"
                )
            rate_limit = (n, float(period))
        self._manager = manager
        self.name = name
        self.concurrency = concurrency
        self.rate_limit = rate_limit

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, concurrency={self.concurrency}, rate_limit={self.rate_limit})"

    def _record(
        self,
        workflow: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
        priority: int,
        dedup_key: str | None,
        delay: float,
        timeout: float | None,
    ) -> tuple[Record | None, Any]:
        queues = self._manager
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise errors.UsageError(f"priority must be an int (lower runs first), not {priority!r}")
        if dedup_key is not None:
            check_name(dedup_key, "dedup_key")
        wait = seconds_arg(delay, "enqueue delay")
        spec, inputs, deadline = queues.vet(workflow, args, kwargs, workflow_id, timeout)
        not_before = queues.clock.now() + (wait or 0.0)
        ctx = workflow_context()
        pos = name = None
        if ctx is None:
            wid = workflow_id or new_id()
            parent = None
        else:
            pos = ctx.take_position()
            name = f"enqueue:{spec.name}"
            recorded = ctx.replayed(pos, name)
            if recorded is not None:
                return None, queues.codec.decoder(str)(recorded[0])
            wid = workflow_id or ctx.child_id(pos)
            parent = ctx.workflow_id
        codec = queues.codec

        def encode_id(i: Any) -> Any:  # the store's, for the id it returns
            return codec.encode(i, "workflow id")

        args_ = (
            wid,
            spec.name,
            inputs,
            parent,
            deadline,
            self.name,
            priority,
            not_before,
            dedup_key,
            encode_id,
        )
        return Record(R.OP, (parent, None if ctx is None else ctx.row(pos), name, "enqueue", args_)), None

    def _done(self, rec: Record | None, replayed: Any) -> WorkflowHandle[Any]:
        queues = self._manager
        if rec is None:
            return WorkflowHandle.of(queues.runner, replayed)
        output, error = rec.result
        if error is not None:
            from .codec import decode_error

            raise decode_error(error)
        wid = queues.codec.decoder(str)(output)
        if rec.params[4][4] is not None:  # a timeout: arm the deadline the database holds for it
            deadline = queues.store.deadline(wid)
            if deadline is not None:
                queues.deadlines.arm(wid, deadline)
        queues.kick()
        return WorkflowHandle.of(queues.runner, wid)

    @as_enqueue
    def enqueue(
        self,
        workflow: Any,
        /,
        *args: Any,
        workflow_id: str | None = None,
        priority: int = 0,
        dedup_key: str | None = None,
        delay: float = 0.0,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle[Any]:
        """Enqueue a workflow; durable before it returns. Returns its handle
        (the existing workflow's, for a known ``workflow_id`` or a live
        ``dedup_key``). ``delay``: seconds before it may start."""
        self._manager.check(self)
        ctx = workflow_context()
        if ctx is not None and ctx.is_async:
            raise errors.UsageError("in an async workflow use `await queue.enqueue_async(...)`")
        rec, replayed = self._record(workflow, args, kwargs, workflow_id, priority, dedup_key, delay, timeout)
        if rec is not None:
            self._manager.journal.submit(rec)
        return self._done(rec, replayed)

    @as_enqueue_async
    async def enqueue_async(
        self,
        workflow: Any,
        /,
        *args: Any,
        workflow_id: str | None = None,
        priority: int = 0,
        dedup_key: str | None = None,
        delay: float = 0.0,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle[Any]:
        self._manager.check(self)
        ctx = workflow_context()
        key = ctx.peek_key() if ctx is not None and ctx.is_async else None
        rec, replayed = self._record(workflow, args, kwargs, workflow_id, priority, dedup_key, delay, timeout)
        if rec is not None:
            await self._manager.journal.submit_async(rec)
            if rec.error is not None:
                raise rec.error
        if ctx is not None and key is not None:
            if not ctx.deliver_now():
                await ctx.turn(key)
        return self._done(rec, replayed)


class Dispatcher(BackgroundLoop):
    """Starts waiting queue entries when their queue has room (one thread)."""

    thread_name = "durably-queues"

    def __init__(self, queues: QueueManager, journal: Journal) -> None:
        super().__init__(queues.clock, journal)
        self.queues = queues

    def run_round(self) -> float | None:
        wake: float | None = None
        for queue in list(self.queues.declared.values()):
            t = self._dispatch(queue)
            if t is not None and (wake is None or t < wake):
                wake = t
        return wake

    def _dispatch(self, queue: Queue) -> float | None:
        """Start what may start now; return when to look again (None: on a kick).

        The claim is one atomic op (store/_executors.claim_queue): the
        queue's running count and rate window are read in the same write
        transaction that marks the entries started, so limits hold across
        every process serving the queue."""
        queues, identity, journal, clock = self.queues, self.queues.identity, self.journal, self.queues.clock
        # Real time: the store reads its own clock when the claim runs (a
        # time read here may be stale by then: the writer may be busy).
        now = None if isinstance(clock, SystemClock) else clock.now()
        rec = Record(
            R.OP,
            (
                None,
                None,
                "claim_queue",
                "claim_queue",
                (
                    identity.executor_id,
                    identity.app_version,
                    queue.name,
                    queue.concurrency,
                    queue.rate_limit,
                    now,
                    _BATCH,
                ),
            ),
        )
        journal.submit(rec)
        if rec.error is not None:
            raise rec.error
        claimed, wake, used = rec.result[0]
        wake_at: float | None = wake
        if now is None and wake is not None:
            wake_at = clock.now() + (wake - used)  # from the store's clock to this host's
        runner, store = queues.runner, queues.store
        for wid, name, inputs, _attempts, epoch, _before in claimed:
            spec = runner.workflows.get(name)
            if spec is None:
                log.warning(
                    "durably: queued workflow %s runs %r, which is not registered here; it is released",
                    wid,
                    name,
                    extra=_logs.fields("queues.unregistered", wid, name),
                )
                journal.submit(Record(R.WRITE, ("release", (wid, identity.executor_id))))
                continue
            if not store.still_owns(wid, epoch):
                continue  # lost again since the claim: its new owner runs it
            store.own(wid, epoch)
            runner.launch(spec, wid, inputs, replay=True)
        return wake_at


class QueueManager:
    """Declaring queues and running their dispatcher (a part of ``Engine``;
    it outlives an open, as the ``Queue`` objects it hands out do).

    ``identity`` says who dispatches (executor id, app version); handles
    read through ``runner``; ``vet`` checks a start's arguments (the
    starter's); ``is_open`` tells whether the engine is open and not
    closing. ``journal`` is the one of the current open (``open``); the
    dispatcher thread is built at each open with it.
    """

    def __init__(
        self,
        identity: Identity,
        store: StoreContract,
        clock: Clock,
        codec: Codec,
        runner: Runner,
        deadlines: Deadlines,
        vet: Vet,
        is_open: Callable[[], bool],
        journal: Journal,
    ) -> None:
        self.identity = identity
        self.store = store
        self.clock = clock
        self.codec = codec
        self.runner = runner
        self.deadlines = deadlines
        self.vet = vet
        self.is_open = is_open
        self.journal = journal
        self.declared: dict[str, Queue] = {}
        self._dispatcher: Dispatcher | None = None

    def open(self, journal: Journal) -> None:
        """At each open: the journal enqueues and the dispatcher write to."""
        self.journal = journal

    def queue(self, name: str, concurrency: int | None, rate_limit: tuple[int, float] | None) -> Queue:
        """Declare (or get) the queue ``name``.

        ``concurrency``: at most this many of its workflows run at once;
        ``rate_limit=(n, seconds)``: at most n starts per sliding window. Both
        are global to the database and hold across restarts. Declaring a name
        again with other limits raises UsageError.
        """
        queue = Queue(self, name, concurrency, rate_limit)
        existing = self.declared.get(name)
        if existing is not None:
            if (existing.concurrency, existing.rate_limit) != (queue.concurrency, queue.rate_limit):
                raise errors.UsageError(f"queue {name!r} is already declared as {existing!r}")
            return existing
        self.declared[name] = queue
        if self.is_open() and not self.identity.client:
            self._declare(queue)
        if self.is_open() and self._dispatcher is None:
            self._start_dispatcher()
        return queue

    def _declare(self, queue: Queue) -> None:
        """Record the limits this executor serves ``queue`` with, for
        operators (``durably queues``; the last declaration wins). Each
        dispatcher passes its own to every claim."""
        starts, period = queue.rate_limit if queue.rate_limit is not None else (None, None)
        self.journal.submit(Record(R.WRITE, ("queue_declare", (queue.name, queue.concurrency, starts, period))))

    def check(self, queue: Queue) -> None:
        """UsageError unless ``queue`` was declared here."""
        if queue._manager is not self or self.declared.get(queue.name) is not queue:
            raise errors.UsageError(f"{queue!r} is not declared on this engine")

    def _start_dispatcher(self) -> None:
        self._dispatcher = Dispatcher(self, self.journal)
        self._dispatcher.start()

    def start(self) -> None:
        """At open (an executor): record the declared queues' limits, and dispatch them."""
        for queue in list(self.declared.values()):
            self._declare(queue)
        if self.declared:
            self._start_dispatcher()

    def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None

    def kick(self) -> None:
        """A workflow ended or was enqueued: a queue may have room."""
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.kick()
