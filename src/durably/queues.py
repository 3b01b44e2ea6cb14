"""Queues: durable enqueue with global concurrency and rate limits,
priority, deduplication and delayed start.

An enqueued workflow is a PENDING workflow row plus a ``queue_entries`` row,
written in one transaction before ``enqueue`` returns. One dispatcher thread
per engine starts waiting entries when their queue has room: ``started_at``
is recorded (durably) before the workflow is launched, so the limits are
computed from the database and hold across restarts: a started, unfinished
entry counts against ``concurrency`` after a crash too, and every start in
the last ``period`` seconds counts against the rate limit.

Order: lowest ``priority`` first, then FIFO. A ``dedup_key`` that is live
(its workflow has not finished) returns the existing workflow's handle.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

from . import _records as R
from . import errors
from ._names import check_name
from ._ids import new_id
from .handle import WorkflowHandle
from .journal import Record
from .runtime.context import workflow_context
from .runtime.toolkit import seconds_arg
from .runtime.waits import BackgroundLoop

log = logging.getLogger("durably")

_BATCH = 100  # entries started per dispatcher round and queue


class Queue:
    """A named queue; get one from ``engine.queue(name, ...)``."""

    def __init__(self, engine: Any, name: str, concurrency: int | None, rate_limit: tuple[int, float] | None) -> None:
        check_name(name, "queue name")
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1):
            raise errors.UsageError(f"queue {name!r}: concurrency must be an int >= 1 or None, not {concurrency!r}")
        if rate_limit is not None:
            ok = isinstance(rate_limit, tuple) and len(rate_limit) == 2
            n, period = rate_limit if ok else (None, None)
            if not (ok and isinstance(n, int) and not isinstance(n, bool) and n >= 1
                    and isinstance(period, (int, float)) and math.isfinite(period) and period > 0):
                raise errors.UsageError(
                    f"queue {name!r}: rate_limit must be (starts >= 1, seconds > 0), not {rate_limit!r}")
            rate_limit = (n, float(period))
        self.engine = engine
        self.name = name
        self.concurrency = concurrency
        self.rate_limit = rate_limit

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, concurrency={self.concurrency}, rate_limit={self.rate_limit})"

    def _record(self, workflow: Any, args: tuple[Any, ...], kwargs: dict[str, Any], workflow_id: str | None,
                priority: int, dedup_key: str | None, delay: float, timeout: float | None) -> tuple[Record, Any]:
        engine = self.engine
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise errors.UsageError(f"priority must be an int (lower runs first), not {priority!r}")
        if dedup_key is not None:
            check_name(dedup_key, "dedup_key")
        delay = seconds_arg(delay, "enqueue delay")
        spec, inputs, deadline = engine._start_args(workflow, args, kwargs, workflow_id, timeout)
        not_before = engine._clock.now() + delay
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
                return None, engine._codec.decoder(str)(recorded[0])  # type: ignore[return-value]
            wid = workflow_id or ctx.child_id(pos)
            parent = ctx.workflow_id
        args_ = (wid, spec.name, inputs, parent, deadline, self.name, priority, not_before, dedup_key,
                 lambda i: engine._codec.encode(i, "workflow id"))
        return Record(R.OP, (parent, None if ctx is None else ctx.row(pos), name, "enqueue", args_)), None

    def _done(self, rec: Record | None, replayed: Any) -> WorkflowHandle:
        engine = self.engine
        if rec is None:
            return WorkflowHandle(engine, replayed)
        output, error = rec.result
        if error is not None:
            from .codec import decode_error
            raise decode_error(error)
        wid = engine._codec.decoder(str)(output)
        if rec.params[4][4] is not None:  # a timeout: arm the deadline the database holds for it
            deadline = engine._store.deadline(wid)
            if deadline is not None:
                engine._arm_deadline(wid, deadline)
        engine._queues_kick()
        return WorkflowHandle(engine, wid)

    def enqueue(self, workflow: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
                priority: int = 0, dedup_key: str | None = None, delay: float = 0.0,
                timeout: float | None = None, **kwargs: Any) -> WorkflowHandle:
        """Enqueue a workflow; durable before it returns. Returns its handle
        (the existing workflow's, for a known ``workflow_id`` or a live
        ``dedup_key``). ``delay``: seconds before it may start."""
        self.engine._check_queue(self)
        ctx = workflow_context()
        if ctx is not None and ctx.is_async:
            raise errors.UsageError("in an async workflow use `await queue.enqueue_async(...)`")
        rec, replayed = self._record(workflow, args, kwargs, workflow_id, priority, dedup_key, delay, timeout)
        if rec is not None:
            self.engine._journal.submit(rec)
        return self._done(rec, replayed)

    async def enqueue_async(self, workflow: Callable[..., Any] | str, *args: Any, workflow_id: str | None = None,
                            priority: int = 0, dedup_key: str | None = None, delay: float = 0.0,
                            timeout: float | None = None, **kwargs: Any) -> WorkflowHandle:
        self.engine._check_queue(self)
        ctx = workflow_context()
        key = ctx.peek_key() if ctx is not None and ctx.is_async else None
        rec, replayed = self._record(workflow, args, kwargs, workflow_id, priority, dedup_key, delay, timeout)
        if rec is not None:
            await self.engine._journal.submit_async(rec)
            if rec.error is not None:
                raise rec.error
        if key is not None:
            if not ctx.deliver_now():  # type: ignore[union-attr]
                await ctx.turn(key)
        return self._done(rec, replayed)


class Dispatcher(BackgroundLoop):
    """Starts waiting queue entries when their queue has room (one thread)."""

    thread_name = "durably-queues"

    def run_round(self) -> float | None:
        wake: float | None = None
        for queue in list(self.engine._queues.values()):
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
        engine = self.engine
        rec = Record(R.OP, (None, None, "claim_queue", "claim_queue", (
            engine.executor_id, engine.app_version, queue.name, queue.concurrency, queue.rate_limit,
            engine._clock.now(), _BATCH)))
        engine._journal.submit(rec)
        if rec.error is not None:
            raise rec.error
        claimed, wake = rec.result[0]
        for wid, name, inputs, _attempts, epoch, _before in claimed:
            spec = engine._workflows.get(name)
            if spec is None:
                log.warning("durably: queued workflow %s runs %r, which is not registered here; it is released",
                            wid, name)
                engine._journal.submit(Record(R.WRITE, ("release", (wid, engine.executor_id))))
                continue
            if not engine._store.still_owns(wid, epoch):
                continue  # lost again since the claim: its new owner runs it
            engine._store.own(wid, epoch)
            engine._launch(spec, wid, inputs, replay=True)
        return wake


class Queues:
    """Declaring queues and running their dispatcher (a base of ``Engine``)."""

    _open: bool
    _store: Any
    _workflows: dict[str, Any]
    _launch: Callable[..., None]  # from runtime.scheduler.Scheduler

    def __init__(self) -> None:
        self._queues: dict[str, Queue] = {}
        self._dispatcher: Dispatcher | None = None

    def queue(self, name: str, *, concurrency: int | None = None,
              rate_limit: tuple[int, float] | None = None) -> Queue:
        """Declare (or get) the queue ``name``.

        ``concurrency``: at most this many of its workflows run at once;
        ``rate_limit=(n, seconds)``: at most n starts per sliding window. Both
        are global to the database and hold across restarts. Declaring a name
        again with other limits raises UsageError.
        """
        queue = Queue(self, name, concurrency, rate_limit)
        existing = self._queues.get(name)
        if existing is not None:
            if (existing.concurrency, existing.rate_limit) != (queue.concurrency, queue.rate_limit):
                raise errors.UsageError(f"queue {name!r} is already declared as {existing!r}")
            return existing
        self._queues[name] = queue
        if self._open and self._dispatcher is None:
            self._start_dispatcher()
        return queue

    def enqueue(self, queue: str, workflow: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> WorkflowHandle:
        """``engine.queue(queue).enqueue(...)`` for a declared queue name."""
        declared = self._queues.get(queue) if isinstance(queue, str) else None
        if declared is None:
            raise errors.UsageError(f"no queue named {queue!r} is declared; call engine.queue({queue!r}, ...) first")
        return declared.enqueue(workflow, *args, **kwargs)

    def _check_queue(self, queue: Queue) -> None:
        if queue.engine is not self or self._queues.get(queue.name) is not queue:
            raise errors.UsageError(f"{queue!r} is not declared on this engine")

    def _start_dispatcher(self) -> None:
        self._dispatcher = Dispatcher(self)
        self._dispatcher.start()

    def _start_queues(self) -> None:
        """At open: dispatch the declared queues."""
        if self._queues:
            self._start_dispatcher()

    def _stop_queues(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None

    def _queues_kick(self) -> None:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.kick()

