"""Where workflows run: the worker pool, the engine's event loop, and the
bookkeeping of who is running, queued and waited for.

``Engine`` holds one ``Runner``. Sync workflows run on a
thread pool; a queued one is run by whoever waits for it first (so parents
waiting on children can never starve the pool); async workflows run on the
caller's loop or the engine's own.

Its unprefixed attributes are the interface the engine's other parts use
(``lock`` guards ``active``, ``queued``, ``completions``, ``relaunch`` and
``reclaimed``); ``_``-prefixed ones are its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from asyncio.events import _get_running_loop
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .. import _logs, errors
from .. import _records as R
from .._names import check_name
from ..codec import decode_error
from ..journal import Record
from .admission import LargeReplays
from .context import WorkflowContext, stop, workflow_context
from .counters import Counters
from .tasks import GuardedTask
from .workflows import WorkflowSpec, run_async, run_sync

if TYPE_CHECKING:
    from .._otel import Telemetry
    from ..clock import Clock
    from ..codec import Codec
    from ..journal import Journal
    from ..store.contract import StoreContract, WorkflowRow, WorkflowView
    from .deadlines import Deadlines

log = _logs.get("durably.engine")


class _Completion:
    """Waiters for one workflow's end. ``final`` is (name, status, output,
    error) when its outcome was journaled in this process, or the error to
    raise to waiters when it stopped without one (interrupted); ``users``
    counts the waiters, so the entry goes when the last one leaves."""

    __slots__ = ("event", "futures", "final", "users")

    def __init__(self) -> None:
        self.final: tuple[str, str, Any, Any] | BaseException | None = None
        # Made for the first thread that waits (completion(wid) without a
        # loop): most waiters are asyncio futures, and an Event costs ~2 us.
        self.event: threading.Event | None = None
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.users = 0


class Runner:
    """Running, queueing and waiting for workflows (a part of ``Engine``; it
    outlives an open, as the handles that wait through it do).

    ``store``, ``workflows`` (the engine's registry, shared), ``codec``,
    ``clock`` (where step retries wait) and ``deadlines`` are given;
    ``journal`` is the one of the current open (``open``: each open has its
    own writer; before the first, a journal never started, whose submit
    raises NotOpenError), handed to each workflow it runs; ``closing`` is
    set by ``close`` (running workflows record nothing more);
    ``kick_queues`` is called when a workflow ends (a queue may have room);
    ``check_open`` is the engine's (NotOpenError, or a closing engine's
    workflow unwinds). Handles read rows and wait for outcomes through it.
    """

    def __init__(
        self,
        workers: int,
        store: StoreContract,
        workflows: dict[str, WorkflowSpec],
        codec: Codec,
        clock: Clock,
        deadlines: Deadlines,
        kick_queues: Callable[[], None],
        check_open: Callable[[], None],
        journal: Journal,
    ) -> None:
        self.check_open = check_open
        self.store = store
        self.workflows = workflows
        # A step name -> the other recorded names a replay accepts for it
        # (the aliases of a step; "start:"/"enqueue:" + a workflow's aliases).
        self.accepted: dict[str, frozenset[str]] = {}
        # A declaration of a durably.Registry -> what it is on this engine
        # (its Workflow, Step, Transaction, Queue); a bound registry -> the engine's DurableCalls.
        self.bound: dict[object, Any] = {}
        self.codec = codec
        self.clock = clock
        self.deadlines = deadlines
        self.kick_queues = kick_queues
        self.journal = journal
        self.closing = False
        self.counters = Counters()  # rare events, read by the metrics (telemetry.py)
        self.telemetry: Telemetry | None = None  # set at each open when OpenTelemetry is configured
        self._workers = workers
        self.lock = threading.Lock()
        self.active: dict[str, WorkflowContext] = {}
        self.completions: dict[str, _Completion] = {}
        # Of those, the ones registered while their workflow was not running
        # here (it runs elsewhere, or not yet): the only ones the lease keeper
        # looks up at each commit it sees (wake_remote_waiters). A workflow
        # running here always ends through notify, which takes its entry.
        self.remote_waits: set[str] = set()
        self.relaunch: set[str] = set()  # resumed (or claimed back) while still unwinding
        self.reclaimed: dict[str, int] = {}  # claimed back while unwinding: the new epoch
        self._idle = threading.Condition(self.lock)  # notified when active empties
        # Workflows whose code raised KeyboardInterrupt/SystemExit here: no
        # outcome, PENDING until the next open or resume(); waiters get this.
        self.interrupted: dict[str, errors.WorkflowInterruptedError] = {}
        # sync workflows handed to the pool but not started: (ctx, spec, inputs, replay)
        self.queued: dict[str, tuple[WorkflowContext, WorkflowSpec, Any, bool]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the engine's own loop, once started
        self._loop_thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._to_start: list[Any] = []  # coroutines handed to the engine loop, not yet tasks
        # Journals read for launched workflows before they run (recovery reads
        # them in one query): workflow id -> rows (store.load_journal); taken at their start.
        self.preloaded: dict[str, list[tuple[Any, ...]]] = {}
        self.large = LargeReplays()  # replays of large values, a few at a time

    def open(self, journal: Journal) -> None:
        """At each open: the journal workflows started from now on write to,
        and a worker pool."""
        self.journal = journal
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="durably-worker")
        self.closing = False

    def stop_all(self, interrupt: BaseException, grace: float | None) -> list[str]:
        """Interrupt every running workflow and let each stop at its next
        durable point: a step body that is running finishes and its outcome
        is recorded (a clean close never makes a body run twice). Waits up
        to ``grace`` seconds (None: no bound); then stops the loop and the
        pool, and returns the ids of the workflows it left behind."""
        with self.lock:
            for ctx in self.active.values():
                if ctx.interrupt is None:
                    stop(ctx, interrupt)
            queued, self.queued = self.queued, {}
            waiting = list(self.completions)
            self.preloaded.clear()
        for ctx, *_ in queued.values():  # never started: nothing to unwind
            self.finished(ctx)
        for wid in waiting:
            self.notify(wid)
        here = _running_loop()
        deadline = None if grace is None else time.monotonic() + grace
        with self.lock:
            while True:
                # Workflows on the loop that called close() cannot move while
                # it blocks here: they stop at their next durable point later.
                busy = [w for w, c in self.active.items() if c.loop is None or c.loop is not here]
                left = None if deadline is None else deadline - time.monotonic()
                if not busy or (left is not None and left <= 0):
                    break
                self._idle.wait(left)
        if busy:
            log.error(
                "durably: close() waited %s s for %d workflow(s) still inside a step body or outside any "
                "durable point and gave up on them: %s. They stay PENDING and resume at the next open; "
                "a step body cut short there runs again",
                grace,
                len(busy),
                ", ".join(busy[:20]),
                extra=_logs.many("engine.close_gave_up", busy),
            )
            # Those on a caller's loop are cancelled now: nothing they do can be
            # recorded any more, and a body holding back its loop's shutdown
            # cancel (GuardedTask) would otherwise hold that loop's end forever.
            for task in list(self._tasks):
                if not task.done():
                    try:
                        task.get_loop().call_soon_threadsafe(task.cancel)
                    except RuntimeError:
                        pass  # that loop is closed
        self._stop_loop()
        if self._pool is not None:
            self._pool.shutdown(wait=not busy, cancel_futures=True)
        return busy

    def running_on(self, loop: asyncio.AbstractEventLoop) -> list[str]:
        """The workflows of this engine running on ``loop`` (a caller's loop
        that close() must not block)."""
        with self.lock:
            return [w for w, c in self.active.items() if c.loop is loop]

    def register(self, spec: WorkflowSpec, wid: str) -> WorkflowContext | None:
        with self.lock:
            if wid in self.active:
                return None  # already running in this process
            ctx = WorkflowContext(self, wid, spec.name, {}, spec.is_async)
            self.active[wid] = ctx
            self.store.owned.setdefault(wid, None)  # its epoch if claimed here (else: owner checked alone)
            return ctx

    def launch(
        self,
        spec: WorkflowSpec,
        wid: str,
        inputs: Any,
        replay: bool,
        loop: Any = None,
        journal: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """Run a workflow here; ``replay``: load its journal first (when it
        starts running, so only running workflows hold theirs in memory),
        or use ``journal``, already read (store.load_journal)."""
        ctx = self.register(spec, wid)
        if ctx is None:
            return
        if journal is not None:
            with self.lock:
                self.preloaded[wid] = journal
        if not spec.is_async:
            assert self._pool is not None
            with self.lock:
                self.queued[wid] = (ctx, spec, inputs, replay)
            self._pool.submit(self.steal, wid)  # unless a waiter runs it first
            return
        # Known from now on, not only once the task runs: close() refuses to
        # block the loop that runs it (see running_on).
        ctx.loop = loop if loop is not None else self.engine_loop()
        coro = run_async(ctx, spec, inputs, replay)
        if loop is not None:
            task = GuardedTask(coro, loop=loop)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            # Batched hand-off: recovering 10^5 workflows wakes the loop once,
            # not once per workflow.
            loop = self.engine_loop()
            with self.lock:
                self._to_start.append(coro)
                first = len(self._to_start) == 1
            if first:
                loop.call_soon_threadsafe(self._start_tasks, loop)

    def _start_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the engine loop: turn every handed-over coroutine into a task."""
        with self.lock:
            coros, self._to_start = self._to_start, []
        for coro in coros:
            task = GuardedTask(coro, loop=loop)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def hand_over(self, ctx: WorkflowContext) -> None:
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
        spec = self.workflows.get(ctx.name)
        row = self.store.get_workflow(ctx.workflow_id)
        if spec is not None and row is not None and row.status == "PENDING":
            self.launch(spec, ctx.workflow_id, row.inputs, replay=True)

    def steal_for(self, wid: str, timeout: float | None) -> None:
        """``result()``'s hand: inside a workflow, with no timeout, run a
        queued child in the waiting thread (parents waiting on children must
        not starve the pool). Never with a timeout (the wait must end within
        it) or from outside a workflow (a client thread holds no pool slot)."""
        if timeout is None and workflow_context() is not None:
            self.steal(wid)

    def steal(self, wid: str) -> None:
        """Run a queued (not yet started) sync workflow in this thread.

        The pool task of a queued workflow and whoever waits for it both call
        this; the first one runs it. Whoever waits for a queued workflow runs it instead of blocking a
        worker while it sits behind them in the pool queue: parents waiting
        on children (after recovery, every pending parent and child is queued
        at once) can then never deadlock the pool.
        """
        with self.lock:
            item = self.queued.pop(wid, None)
        if item is not None:
            run_sync(*item)

    def engine_loop(self) -> asyncio.AbstractEventLoop:
        """The engine's own event loop, for async workflows started from sync code."""
        with self.lock:
            if self.loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="durably-loop", daemon=True)
                thread.start()
                self.loop, self._loop_thread = loop, thread
            return self.loop

    def _stop_loop(self) -> None:
        loop, thread = self.loop, self._loop_thread
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
        self.loop = self._loop_thread = None
        with self.lock:
            leftovers, self._to_start = self._to_start, []
        for coro in leftovers:  # handed over as the loop stopped: they stay PENDING
            coro.close()

    # -- finishing and waiting ------------------------------------------------------

    def finished(self, ctx: WorkflowContext, final: tuple[str, str, Any, Any] | BaseException | None = None) -> None:
        wid = ctx.workflow_id
        self.large.ended(wid)
        self.store.tx_done(wid)
        with self.lock:
            if self.active.get(wid) is ctx:
                del self.active[wid]
                self.store.owned.pop(wid, None)
                self.store.fenced.discard(wid)
                if not self.active:
                    self._idle.notify_all()
            if isinstance(final, errors.WorkflowInterruptedError):
                self.interrupted[wid] = final
            relaunch = wid in self.relaunch
            self.relaunch.discard(wid)
            epoch = self.reclaimed.pop(wid, None)
        if relaunch and epoch is not None:
            if self.store.still_owns(wid, epoch):  # claimed back, and not lost again since
                self.store.own(wid, epoch)
            else:
                relaunch = False  # its new owner runs it
        if relaunch and not self.closing:
            row = self.store.get_workflow(wid)
            spec = self.workflows.get(ctx.name)
            if row is not None and row.status == "PENDING" and spec is not None:
                self.launch(spec, wid, row.inputs, replay=True)
                final = None
        if isinstance(final, tuple):  # an outcome was recorded: it is over
            self.deadlines.disarm(wid)
        self.notify(wid, final)
        self.kick_queues()

    def notify(self, wid: str, final: tuple[str, str, Any, Any] | BaseException | None = None) -> None:
        with self.lock:
            done = self.completions.pop(wid, None)
            self.remote_waits.discard(wid)
        if done is None:
            return
        done.final = final
        if done.event is not None:  # (made under the lock by any thread waiting before the pop)
            done.event.set()
        if done.futures:
            here = _get_running_loop()
            for loop, fut in done.futures:
                try:
                    if loop is here:
                        loop.call_soon(_set_done, fut)  # this thread runs that loop: no wake-up to write
                    else:
                        loop.call_soon_threadsafe(_set_done, fut)
                except RuntimeError:
                    pass  # that loop is closed

    def completion(
        self, wid: str, loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[_Completion, asyncio.Future[None] | None, bool]:
        """Register interest in ``wid``'s end: (completion, future for
        ``loop`` or None, whether it is running in this process right now).
        If it is running, its end will be notified: no need to read the row."""
        fut = loop.create_future() if loop is not None else None
        with self.lock:
            done = self.completions.get(wid)
            if done is None:
                done = self.completions[wid] = _Completion()
            done.users += 1
            if loop is not None and fut is not None:
                done.futures.append((loop, fut))
            elif done.event is None:
                done.event = threading.Event()
            here = wid in self.active
            if not here:
                self.remote_waits.add(wid)
            return done, fut, here

    def release(self, wid: str, done: _Completion, fut: asyncio.Future[None] | None = None) -> None:
        """A waiter registered by ``_completion`` leaves: the last one takes
        the entry away (result() on finished workflows must not pile up)."""
        with self.lock:
            if fut is not None:
                done.futures = [f for f in done.futures if f[1] is not fut]
            done.users -= 1
            if done.users <= 0 and self.completions.get(wid) is done:
                del self.completions[wid]
                self.remote_waits.discard(wid)

    def stuck(self, wid: str, row: WorkflowRow | WorkflowView) -> BaseException | None:
        """Why a PENDING workflow not running here will not end without help:
        parked (replay mismatch, unregistered function) or interrupted."""
        if row.parked is not None:
            return errors.WorkflowParkedError(
                f"workflow {wid!r} is parked: {row.parked}", workflow_id=wid, reason=row.parked
            )
        return self.interrupted.get(wid)

    # -- rows and outcomes (for the engine and its handles) ---------------------------

    def row(self, wid: str, user_view: bool = False) -> WorkflowRow | WorkflowView:
        """A workflow's row (the engine must be open; WorkflowNotFoundError)."""
        self.check_open()
        check_name(wid, "workflow id")
        row = self.store.get_workflow(wid, user_view=user_view)
        if row is None:
            raise errors.WorkflowNotFoundError(f"no workflow with id {wid!r}", workflow_id=wid)
        return row

    def result_decoder(self, name: str) -> Callable[[Any], Any]:
        """How workflow ``name``'s result decodes: as its annotations say when
        it is registered here, else plain values."""
        spec = self.workflows.get(name)
        return spec.decode if spec is not None else self.codec.decoder(Any)

    def decode_row(self, name: str, inputs: Any, output: Any, error: Any) -> dict[str, Any]:
        """input, output and error of a workflow row: the output decoded as its
        function's annotations say when it is registered here (plain values
        otherwise); a value that no longer decodes is left as stored."""
        decoded: dict[str, Any] = {}
        try:  # as passed: (args, kwargs), values as stored (JSON values, or objects with pickle)
            decoded["input"] = self.codec.decode_inputs(inputs, None, {})
        except Exception:
            decoded["input"] = inputs
        try:
            decoded["output"] = None if output is None else self.result_decoder(name)(output)
        except Exception:
            decoded["output"] = output
        decoded["error"] = None if error is None else decode_error(error)
        return decoded

    # -- what other processes did (called by the lease keeper) ----------------------

    def cancelled_elsewhere(self, wid: str) -> None:
        """A cancel committed (by any process) of a workflow that may run here.
        The notice may be stale (a resume since): the row decides."""
        with self.lock:
            ctx = self.active.get(wid)
        if ctx is None or ctx.interrupt is not None:
            return
        if not any(status == "CANCELLED" for _w, status, _p in self.store.statuses([wid])):
            return
        with self.lock:
            if self.active.get(wid) is not ctx or ctx.interrupt is not None:
                return
            stop(ctx, errors.WorkflowCancelled(wid))
            self.store.interrupt_tx(wid)
        self.notify(wid)

    def wake_remote_waiters(self) -> None:
        """Waiters here for workflows not running here: wake those that ended
        (or parked) in another process (such an end leaves no notice: its
        row is read). The lease keeper calls this at every commit it sees,
        this process's own included, so it looks only at the waits
        registered while their workflow was not running here
        (``remote_waits``; a local end notifies its waiters itself): it does
        nothing, not even take the lock, while there are none, however many
        callers wait for workflows running here. A waiter registers before
        it reads the row, so one that registers just after this look still
        sees an end committed before."""
        if not self.remote_waits:
            return
        with self.lock:
            ids = [w for w in self.remote_waits if w not in self.active]
        for wid, status, parked in self.store.statuses(ids) if ids else ():
            if status != "PENDING" or parked is not None:
                self.notify(wid)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
