"""Where workflows run: the worker pool, the engine's event loop, and the
bookkeeping of who is running, queued and waited for.

``Engine`` inherits this; it supplies ``_store``, ``_workflows``, ``_codec``
and ``_closing``. Sync workflows run on a thread pool; a queued one is run by
whoever waits for it first (so parents waiting on children can never starve
the pool); async workflows run on the caller's loop or the engine's own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .. import _records as R
from .. import errors
from ..journal import Record
from .context import WorkflowContext, stop, workflow_context
from .tasks import GuardedTask
from .workflows import WorkflowSpec, run_async, run_sync

log = logging.getLogger("durably")


class _Completion:
    """Waiters for one workflow's end. ``final`` is (name, status, output,
    error) when its outcome was journaled in this process, or the error to
    raise to waiters when it stopped without one (interrupted); ``users``
    counts the waiters, so the entry goes when the last one leaves."""

    __slots__ = ("event", "futures", "final", "users")

    def __init__(self) -> None:
        self.final: tuple[str, str, Any, Any] | BaseException | None = None
        self.event = threading.Event()
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.users = 0


class Scheduler:
    """Running, queueing and waiting for workflows (a base of ``Engine``)."""

    _store: Any
    _workflows: dict[str, WorkflowSpec]
    _closing: bool

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._lock = threading.Lock()
        self._active: dict[str, WorkflowContext] = {}
        self._completions: dict[str, _Completion] = {}
        self._relaunch: set[str] = set()  # resumed (or claimed back) while still unwinding
        self._reclaimed: dict[str, int] = {}  # claimed back while unwinding: the new epoch
        self._idle = threading.Condition(self._lock)  # notified when _active empties
        # Workflows whose code raised KeyboardInterrupt/SystemExit here: no
        # outcome, PENDING until the next open or resume(); waiters get this.
        self._interrupted: dict[str, errors.WorkflowInterruptedError] = {}
        # sync workflows handed to the pool but not started: (ctx, spec, inputs, replay)
        self._queued: dict[str, tuple[WorkflowContext, WorkflowSpec, Any, bool]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._to_start: list[Any] = []  # coroutines handed to the engine loop, not yet tasks

    def _start_pool(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="durably-worker")

    def _stop_all(self, interrupt: BaseException, grace: float | None) -> list[str]:
        """Interrupt every running workflow and let each stop at its next
        durable point: a step body that is running finishes and its outcome
        is recorded (a clean close never makes a body run twice). Waits up
        to ``grace`` seconds (None: no bound); then stops the loop and the
        pool, and returns the ids of the workflows it left behind."""
        with self._lock:
            for ctx in self._active.values():
                if ctx.interrupt is None:
                    stop(ctx, interrupt)
            queued, self._queued = self._queued, {}
            waiting = list(self._completions)
        for ctx, *_ in queued.values():  # never started: nothing to unwind
            self._finished(ctx)
        for wid in waiting:
            self._notify(wid)
        here = _running_loop()
        deadline = None if grace is None else time.monotonic() + grace
        with self._lock:
            while True:
                # Workflows on the loop that called close() cannot move while
                # it blocks here: they stop at their next durable point later.
                busy = [w for w, c in self._active.items() if c.loop is None or c.loop is not here]
                left = None if deadline is None else deadline - time.monotonic()
                if not busy or (left is not None and left <= 0):
                    break
                self._idle.wait(left)
        if busy:
            log.error("durably: close() waited %s s for %d workflow(s) still inside a step body or outside any "
                      "durable point and gave up on them: %s. They stay PENDING and resume at the next open; "
                      "a step body cut short there runs again", grace, len(busy), ", ".join(busy[:20]))
        self._stop_loop()
        if self._pool is not None:
            self._pool.shutdown(wait=not busy, cancel_futures=True)
        return busy

    def _register(self, spec: WorkflowSpec, wid: str) -> WorkflowContext | None:
        with self._lock:
            if wid in self._active:
                return None  # already running in this process
            ctx = WorkflowContext(self, wid, spec.name, {}, spec.is_async)
            self._active[wid] = ctx
            self._store.owned.setdefault(wid, None)  # its epoch if claimed here (else: owner checked alone)
            return ctx

    def _launch(self, spec: WorkflowSpec, wid: str, inputs: Any, replay: bool, loop: Any = None) -> None:
        """Run a workflow here; ``replay``: load its journal first (when it
        starts running, so only running workflows hold theirs in memory)."""
        ctx = self._register(spec, wid)
        if ctx is None:
            return
        if not spec.is_async:
            assert self._pool is not None
            with self._lock:
                self._queued[wid] = (ctx, spec, inputs, replay)
            self._pool.submit(self._steal, wid)  # unless a waiter runs it first
            return
        coro = run_async(ctx, spec, inputs, replay)
        if loop is not None:
            task = GuardedTask(coro, loop=loop)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            # Batched hand-off: recovering 10^5 workflows wakes the loop once,
            # not once per workflow.
            loop = self._engine_loop()
            with self._lock:
                self._to_start.append(coro)
                first = len(self._to_start) == 1
            if first:
                loop.call_soon_threadsafe(self._start_tasks, loop)

    def _start_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the engine loop: turn every handed-over coroutine into a task."""
        with self._lock:
            coros, self._to_start = self._to_start, []
        for coro in coros:
            task = GuardedTask(coro, loop=loop)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _hand_over(self, ctx: WorkflowContext) -> None:
        """Continue an async workflow whose task was cancelled under it on the
        engine's own loop, replaying its journal."""
        # The cancelled task may have left its last record queued in the
        # journal. Batches commit in order, so once this barrier is durable
        # that record is too, and the replay finds it instead of running the
        # step a second time (found by test_async_workflow_outlives_...).
        try:
            ctx.journal.submit(Record(R.WRITE, ("barrier", ())))
        except errors.DurablyError:
            return  # the writer stopped: the workflow resumes at the next open
        spec = self._workflows.get(ctx.name)
        row = self._store.get_workflow(ctx.workflow_id)
        if spec is not None and row is not None and row[2] == "PENDING":
            self._launch(spec, ctx.workflow_id, row[3], replay=True)

    def _steal_for(self, wid: str, timeout: float | None) -> None:
        """``result()``'s hand: inside a workflow, with no timeout, run a
        queued child in the waiting thread (parents waiting on children must
        not starve the pool). Never with a timeout (the wait must end within
        it) or from outside a workflow (a client thread holds no pool slot)."""
        if timeout is None and workflow_context() is not None:
            self._steal(wid)

    def _steal(self, wid: str) -> None:
        """Run a queued (not yet started) sync workflow in this thread.

        The pool task of a queued workflow and whoever waits for it both call
        this; the first one runs it. Whoever waits for a queued workflow runs it instead of blocking a
        worker while it sits behind them in the pool queue: parents waiting
        on children (after recovery, every pending parent and child is queued
        at once) can then never deadlock the pool.
        """
        with self._lock:
            item = self._queued.pop(wid, None)
        if item is not None:
            run_sync(*item)

    def _engine_loop(self) -> asyncio.AbstractEventLoop:
        """The engine's own event loop, for async workflows started from sync code."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="durably-loop", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._loop_thread
        if loop is None or thread is None:
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(drain(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._loop_thread = None
        with self._lock:
            leftovers, self._to_start = self._to_start, []
        for coro in leftovers:  # handed over as the loop stopped: they stay PENDING
            coro.close()

    # -- finishing and waiting ------------------------------------------------------

    def _finished(self, ctx: WorkflowContext, final: tuple[str, str, Any, Any] | BaseException | None = None) -> None:
        wid = ctx.workflow_id
        self._store.tx_done(wid)
        with self._lock:
            if self._active.get(wid) is ctx:
                del self._active[wid]
                self._store.owned.pop(wid, None)
                self._store.fenced.discard(wid)
                if not self._active:
                    self._idle.notify_all()
            if isinstance(final, errors.WorkflowInterruptedError):
                self._interrupted[wid] = final
            relaunch = wid in self._relaunch
            self._relaunch.discard(wid)
            epoch = self._reclaimed.pop(wid, None)
        if relaunch and epoch is not None:
            if self._store.still_owns(wid, epoch):  # claimed back, and not lost again since
                self._store.own(wid, epoch)
            else:
                relaunch = False  # its new owner runs it
        if relaunch and not self._closing:
            row = self._store.get_workflow(wid)
            spec = self._workflows.get(ctx.name)
            if row is not None and row[2] == "PENDING" and spec is not None:
                self._launch(spec, wid, row[3], replay=True)
                final = None
        if isinstance(final, tuple):  # an outcome was recorded: it is over
            self._disarm_deadline(wid)
        self._notify(wid, final)
        self._queues_kick()

    # Supplied by the Engine's other parts (declared, not defined here: a
    # no-op here would silently win or lose by the order of the bases).
    _disarm_deadline: Callable[[str], None]  # a workflow ended: drop its deadline timer
    _queues_kick: Callable[[], None]  # a workflow ended: a queue may have room

    def _notify(self, wid: str, final: tuple[str, str, Any, Any] | BaseException | None = None) -> None:
        with self._lock:
            done = self._completions.pop(wid, None)
        if done is None:
            return
        done.final = final
        done.event.set()
        for loop, fut in done.futures:
            try:
                loop.call_soon_threadsafe(_set_done, fut)
            except RuntimeError:
                pass  # that loop is closed

    def _completion(self, wid: str, loop: asyncio.AbstractEventLoop | None = None) -> tuple[_Completion, "asyncio.Future[None] | None", bool]:
        """Register interest in ``wid``'s end: (completion, future for
        ``loop`` or None, whether it is running in this process right now).
        If it is running, its end will be notified: no need to read the row."""
        fut = loop.create_future() if loop is not None else None
        with self._lock:
            done = self._completions.get(wid)
            if done is None:
                done = self._completions[wid] = _Completion()
            done.users += 1
            if fut is not None:
                done.futures.append((loop, fut))  # type: ignore[arg-type]
            return done, fut, wid in self._active

    def _release(self, wid: str, done: _Completion, fut: "asyncio.Future[None] | None" = None) -> None:
        """A waiter registered by ``_completion`` leaves: the last one takes
        the entry away (result() on finished workflows must not pile up)."""
        with self._lock:
            if fut is not None:
                done.futures = [f for f in done.futures if f[1] is not fut]
            done.users -= 1
            if done.users <= 0 and self._completions.get(wid) is done:
                del self._completions[wid]

    def _stuck(self, wid: str, row: tuple[Any, ...]) -> BaseException | None:
        """Why a PENDING workflow not running here will not end without help:
        parked (replay mismatch, unregistered function) or interrupted."""
        if row[7] is not None:
            return errors.WorkflowParkedError(
                f"workflow {wid!r} is parked: {row[7]}", workflow_id=wid, reason=row[7])
        return self._interrupted.get(wid)


def _set_done(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
