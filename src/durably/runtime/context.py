"""The workflow context: which workflow is running here and where its replay is.

One :class:`WorkflowContext` per running workflow, reachable through a
contextvar, so it follows asyncio tasks and threads without a global registry.

How a durable call is identified (its *key*), so that a replay finds it:

* In a sync workflow, by call order: each call takes the next position, and
  the row at that position is its record (one thread, one order).
* In an async workflow, coroutines interleave in the order their outcomes
  happen to arrive, so a global call order would depend on timing (a replay,
  where recorded outcomes return at once, would see another order). Each
  asyncio task of the workflow is a *branch* instead: the workflow's own task
  is the root, and a task it (or a branch) creates becomes a child branch,
  numbered in the order the branches make their first durable call (tasks
  start in the order they were created). A call's key is (branch, index in
  that branch): the same whatever the interleaving. Root keys are plain ints,
  as in older journals. The row's position is only its storage key.
* Order-dependent code (``asyncio.wait(..., FIRST_COMPLETED)``,
  ``as_completed``) also needs the recorded outcomes to arrive in the order
  they arrived live: an async workflow's rows take their positions in the
  order outcomes were submitted, which is the order they were delivered (the end of a sleep and
  the arrival of a child's outcome are recorded as ``wake`` and ``join``
  rows for this); a replay hands recorded outcomes to the code in that order
  (:meth:`turn`), and a live outcome only after every recorded one. A replay that cannot
  go on because the code never makes a recorded call (changed code) parks
  the workflow after ``REPLAY_STALL`` seconds without progress.
* Which outcomes a branch sees as done when it resumes (``asyncio.wait``
  returns a *set*) depends on how many outcomes arrived before it ran. So
  every outcome of an async workflow, live or replayed, passes a *gate*
  (:class:`Settle`): the next outcome is handed over only once the previous
  one has settled, that is once the event loop ran out of ready callbacks
  other than the journal's deliveries of new outcomes (everything that
  outcome set off has run), or at the latest after
  ``SETTLE_PASSES`` loop iterations on a loop that never runs dry. Live and
  on replay alike, each outcome is then seen alone, in its recorded order.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import errors
from ..journal import DELIVER
from .tasks import current_task

if TYPE_CHECKING:
    from ..journal import Journal
    from .runner import Runner

current: contextvars.ContextVar[WorkflowContext | None] = contextvars.ContextVar("durably_workflow", default=None)
# The branch (task) of an async workflow this code runs in; see the docstring.
_BRANCH: contextvars.ContextVar[Branch | None] = contextvars.ContextVar("durably_branch", default=None)
# True while an async step body runs in this task: durable calls are plain there.
_IN_STEP: contextvars.ContextVar[bool] = contextvars.ContextVar("durably_in_step", default=False)

# Seconds a replay may wait for a recorded call that the code does not make.
REPLAY_STALL = 10.0


# Loop iterations after which an outcome counts as settled on a loop that
# never runs out of ready callbacks (a chain of N nested tasks settles in
# about 2N iterations).
SETTLE_PASSES = 32


class Settle:
    """Per event loop: when the outcome last handed to each workflow has
    settled (see the module docstring). One self-rescheduling callback counts
    loop iterations while some outcome is settling; a loop that runs dry
    settles everything at once."""

    __slots__ = ("loop", "count", "armed", "busy_until", "queued", "ready", "__weakref__")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.count = SETTLE_PASSES  # a gate taken at g is free once count >= g + SETTLE_PASSES
        self.armed = False
        self.busy_until = 0
        self.queued: list[WorkflowContext] = []
        # asyncio's ready queue (CPython's event loops); on another loop
        # (uvloop), only the iteration bound applies.
        ready = getattr(loop, "_ready", None)
        self.ready: deque[Any] | None = ready if isinstance(ready, deque) else None  # pyright: ignore[reportUnknownMemberType]  # (asyncio's private deque: its items are Handles)

    def take(self, ctx: WorkflowContext) -> bool:
        """Hand an outcome to ``ctx`` now if its gate is free (then the gate
        is taken). Once per outcome: kept to one call, arming aside."""
        count = self.count
        if ctx.gate_q or ctx.gate_at + SETTLE_PASSES > count:
            return False
        ctx.gate_at = count
        self.busy_until = count + SETTLE_PASSES
        if not self.armed:
            self._arm()
        return True

    def _arm(self) -> None:
        """Start counting loop iterations: ``_tick`` runs at the next one and
        reschedules itself while some outcome is settling."""
        self.armed = True
        self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        ready = self.ready
        # Nothing else ready: whatever the last outcomes set off has run.
        self.count += SETTLE_PASSES if ready is not None and _dry(ready) else 1
        if self.queued:
            queued, self.queued = self.queued, []
            for ctx in queued:
                self._open(ctx)
        if self.count < self.busy_until or self.queued:
            self.loop.call_soon(self._tick)
        else:
            self.armed = False

    def _open(self, ctx: WorkflowContext) -> None:
        q = ctx.gate_q
        if ctx.gate_at + SETTLE_PASSES <= self.count:
            while q:
                fut = q.popleft()
                if not fut.done():
                    fut.set_result(None)
                    # The gate is taken (as in take); this runs in _tick,
                    # which stays armed while busy_until is ahead.
                    ctx.gate_at = self.count
                    self.busy_until = self.count + SETTLE_PASSES
                    break
        if q:
            self.queued.append(ctx)

    def wait(self, ctx: WorkflowContext) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.loop.create_future()
        if not ctx.gate_q:
            self.queued.append(ctx)
        ctx.gate_q.append(fut)
        if not self.armed:
            self._arm()
        return fut


def _dry(ready: deque[Any]) -> bool:
    """Whether asyncio's ready queue holds nothing but journal deliveries
    (``DELIVER``: a batch's outcomes, which the writer thread schedules when
    the batch is durable). None of them is something an outcome already
    handed over set off, and each outcome they deliver passes its gate: a
    busy loop, where the next batch is nearly always ready, still lets the
    last outcomes settle at once instead of after ``SETTLE_PASSES`` turns."""
    for handle in ready:
        if handle._callback is not DELIVER:
            return False
    return True


_SETTLE: weakref.WeakKeyDictionary[Any, Settle] = weakref.WeakKeyDictionary()


def settle_for(loop: Any) -> Settle:
    settle = _SETTLE.get(loop)
    if settle is None:
        settle = _SETTLE[loop] = Settle(loop)
    return settle


class EngineShutdown(BaseException):
    """Unwinds a running workflow when its engine closes; it stays PENDING."""


class Fenced(EngineShutdown):
    """Unwinds a workflow another executor took over (this process lost its
    lease): nothing more is recorded here; its new owner runs it."""


class Branch:
    """One asyncio task of an async workflow (the root: the workflow's task)."""

    __slots__ = ("ctx", "path", "task", "seq", "children", "deliver")

    # A branch is the value of _BRANCH in its task's context, which the task
    # holds: task -> context -> branch -> task is a reference cycle that only
    # the cyclic garbage collector frees. With 1,024 workflows in flight those
    # cycles made every collection long (12% of async throughput), so the
    # branch lets go of its task when the task ends (release, leave_root).

    def __init__(self, ctx: WorkflowContext, path: str | None, task: Any) -> None:
        self.ctx = ctx
        self.path = path  # None for the root, else "0", "0.2" ...
        self.task = task  # None once it ended (no cycle left behind, see above)
        self.seq = 0  # index of this branch's next durable call
        self.children = 0  # branches created from this one so far
        self.deliver: Any = None  # the key a primitive delivers under, if not its last call's

    def release(self, _task: Any) -> None:
        """The branch's task ended (a done callback): let go of it."""
        self.task = None


_MARKS = ("join", "wake")  # keys of rows that mark a delivery, not a call


def encode_key(key: Any) -> str:
    if isinstance(key, int):
        return f"#{key}"
    if key[0] in _MARKS:
        return f"{key[0]}:{key[1]}"
    return f"{key[0]}#{key[1]}"


def decode_key(ident: str) -> Any:
    mark, colon, rest = ident.partition(":")
    if colon and mark in _MARKS:
        return (mark, rest)
    path, _, seq = ident.rpartition("#")
    return int(seq) if not path else (path, int(seq))


def in_async_step(ctx: WorkflowContext) -> bool:
    """Inside a step body of an async workflow: a body run in the workflow's
    own task marks that task (``in_body``), one run in a task or a thread of
    its own sets ``_IN_STEP`` in the context that task or thread copies."""
    task = current_task(ctx.loop)
    return _IN_STEP.get() or getattr(task, "in_body", False)


def in_step() -> bool:
    """Inside a step body (sync or async): durable calls are plain calls."""
    ctx = current.get()
    if ctx is None:
        return False
    return in_async_step(ctx) if ctx.is_async else ctx.in_step


def workflow_context() -> WorkflowContext | None:
    """The workflow a durable call belongs to: None outside a workflow and
    inside a step body (where the outer step's outcome covers everything)."""
    ctx = current.get()
    if ctx is None or (in_async_step(ctx) if ctx.is_async else ctx.in_step):
        return None
    return ctx


class WorkflowContext:
    """State of one running workflow."""

    __slots__ = (
        "workflow_id",
        "name",
        "runner",
        "journal",
        "codec",
        "recorded",
        "replay_len",
        "position",
        "interrupt",
        "parked",
        "is_async",
        "waiter",
        "backoffs",
        "loop",
        "in_step",
        "root",
        "pending",
        "heap",
        "turns",
        "progress",
        "branch_top",
        "settle",
        "gate_at",
        "gate_q",
        "traced",
    )

    def __init__(
        self, runner: Runner, workflow_id: str, name: str, recorded: dict[Any, tuple[Any, ...]], is_async: bool
    ) -> None:
        self.workflow_id = workflow_id
        self.name = name
        self.runner = runner  # where it runs (the engine's Runner)
        self.journal: Journal = runner.journal  # the open engine's writer
        self.codec = runner.codec
        self.recorded = recorded
        # Positions at or above this are live (the journal has nothing there).
        self.replay_len = (max(recorded) + 1) if recorded else 0
        self.position = 0
        # Set from another thread to stop the workflow at its next durable
        # point: a WorkflowCancelled or EngineShutdown instance.
        self.interrupt: BaseException | None = None
        self.parked: errors.NonDeterminismError | None = None
        self.is_async = is_async
        # What the workflow is blocked on (sleep, recv ...), fired on interrupt.
        self.waiter: Any = None
        # The retry backoffs of its steps waiting now (an async workflow may
        # have several, one per branch), also fired on interrupt; made on
        # first use (see runtime/retries.py).
        self.backoffs: set[Any] | None = None
        self.loop: Any = None  # the event loop running an async workflow
        self.in_step = False  # a sync step body is running (durable calls are plain)
        self.root: Branch | None = None
        # Recorded outcomes not yet handed to the code: key -> (order, name);
        # a heap of (order, key) over them; the turns waiting for theirs.
        self.pending: dict[Any, tuple[Any, str]] = {}
        self.heap: list[tuple[Any, Any]] = []
        self.turns: dict[Any, asyncio.Future[None]] = {}
        self.progress = 0
        self.branch_top: dict[str | None, int] = {}  # async: last recorded index per branch
        self.settle: Settle | None = None  # async: the gate of its loop (set when it starts)
        self.gate_at = -SETTLE_PASSES  # when its last outcome was handed over (Settle.count)
        self.gate_q: deque[asyncio.Future[None]] = deque()  # outcomes waiting at the gate
        self.traced = False  # its attempt's span records (sampled): its steps get spans (_otel.py)

    def load(self, rows: list[tuple[Any, ...]]) -> None:
        """Install the journal loaded from the store: rows of (position,
        name, output, error, ident)."""
        recorded: dict[Any, tuple[Any, ...]] = {}
        top = -1
        for row in rows:
            pos = row[0]
            ident = row[4] if len(row) > 4 else None
            recorded[pos if ident is None else decode_key(ident)] = row
            top = max(top, pos)
        self.recorded = recorded
        self.replay_len = top + 1
        if not self.is_async:
            return
        # Async: new rows go after every recorded one; replayed calls take
        # no position. Recorded outcomes are delivered in their live order,
        # which is their rows' order.
        self.position = top + 1
        for key in recorded:
            if isinstance(key, int):
                self.branch_top[None] = max(self.branch_top.get(None, -1), key)
            elif key[0] not in _MARKS:
                self.branch_top[key[0]] = max(self.branch_top.get(key[0], -1), key[1])
        for key, row in recorded.items():
            pos, name = row[:2]
            if name == "sleep" or name.endswith(".deadline") or name.startswith("patch:"):
                continue  # consumed inside a call, never handed to the code by itself
            self.pending[key] = (pos, name)
            self.heap.append((pos, key))
        heapq.heapify(self.heap)

    # -- claiming keys -----------------------------------------------------------------

    def take_position(self) -> Any:
        """Claim the key of the next durable call; raise if the workflow must
        stop. Sync: the next position. Async: (branch, index) (see above)."""
        if self.interrupt is not None:
            raise self.interrupt
        if self.parked is not None:
            raise self.parked  # once parked, nothing more may run
        if not self.is_async:
            pos = self.position
            self.position = pos + 1
            return pos
        return self.claim(current_task(self.loop))

    def claim(self, task: Any) -> Any:
        """The next key of the branch running in ``task`` (async; the caller
        checked for an interrupt or a park)."""
        br = self.root
        if br is None or br.task is not task:
            br = self._branch(task)
        seq = br.seq
        br.seq = seq + 1
        self.progress += 1
        return seq if br.path is None else (br.path, seq)

    def _branch(self, task: Any = None) -> Branch:
        if task is None:
            task = current_task(self.loop)
        br = _BRANCH.get()
        if br is None or br.ctx is not self:
            br = self.root
            if br is None:
                br = self.root = Branch(self, None, task)
        if br.task is not task:
            # A task created by this branch: a branch of its own, numbered in
            # the order branches make their first durable call.
            path = str(br.children) if br.path is None else f"{br.path}.{br.children}"
            br.children += 1
            br = Branch(self, path, task)
            _BRANCH.set(br)
            if task is not None:
                task.add_done_callback(br.release)
        return br

    def peek_key(self) -> Any:
        """The key the next durable call here will take (without taking it)."""
        if not self.is_async:
            return self.position
        br = self._branch()
        return br.seq if br.path is None else (br.path, br.seq)

    def replaying_at(self, key: Any) -> bool:
        """Whether the journal holds calls at or after ``key`` in its branch:
        an older run is being replayed there."""
        if not self.is_async:
            replaying: bool = key < self.replay_len
            return replaying
        path, seq = (None, key) if isinstance(key, int) else key
        return seq <= self.branch_top.get(path, -1)

    def deliver_as(self, key: Any) -> None:
        """The primitive running in this task delivers under ``key`` (a mark
        row), not under the key of its last call."""
        self._branch().deliver = key

    def leave_root(self) -> None:
        """In the workflow's own task, once its outcome is settled: the root
        branch lets go of the task (see Branch)."""
        root = self.root
        if root is not None:
            root.task = None
            self.root = None  # and the context lets go of it (branch.ctx is the context)
        _BRANCH.set(None)

    def enter_root(self) -> None:
        """In the workflow's own task, before its code runs (async; ``loop`` set)."""
        self.root = Branch(self, None, current_task(self.loop))
        _BRANCH.set(self.root)

    def row(self, key: Any) -> tuple[int, str | None]:
        """(position, ident) of the row a live call at ``key`` writes: in an
        async workflow positions follow submission (= delivery) order."""
        if not self.is_async:
            return key, None
        pos = self.position
        self.position = pos + 1
        return pos, (None if key == pos else encode_key(key))

    def child_id(self, key: Any) -> str:
        """The id of a child started at ``key`` (``<parent>/<position>`` for
        root calls, as always; ``<parent>/<branch>#<index>`` in a branch)."""
        if isinstance(key, int):
            return f"{self.workflow_id}/{key}"
        return f"{self.workflow_id}/{encode_key(key)}"

    def replayed(self, key: Any, name: str) -> tuple[Any, Any] | None:
        """The recorded (output, error) at ``key``, or None if it is live.

        Raises NonDeterminismError, parking the workflow, when the recorded
        step has another name (not one of the step's aliases).
        """
        if not self.recorded:
            return None
        # Each key is replayed once: drop the row, so a long replay does not
        # hold every recorded value (one may be 25 MB) to the end.
        row = self.recorded.pop(key, None)
        if row is None:
            return None
        if row[1] != name and row[1] not in self.runner.accepted.get(name, ()):  # an alias: a rename
            where = key if isinstance(key, int) else encode_key(key)
            self.parked = errors.NonDeterminismError(
                f"workflow {self.workflow_id!r} called {name!r} at step {where}, but its journal "
                f"recorded {row[1]!r} there; the code changed under a running workflow. It is "
                "parked (PENDING); restore the old code path (or use a new workflow id) and "
                "resume it",
                workflow_id=self.workflow_id,
                position=where,
                recorded=row[1],
                called=name,
            )
            raise self.parked
        stored: tuple[Any, ...] = row  # (not narrowed by the length test below)
        if len(row) > 5 and row[5]:  # a large value the loaded journal left out: read it now, alone
            value = self.runner.store.step_value(self.workflow_id, row[0])
            self.runner.large.read(self.workflow_id)  # (runtime/admission.py)
            return value
        return stored[2], stored[3]

    # -- ordered delivery (async) ------------------------------------------------------

    def deliver_now(self) -> bool:
        """Whether an outcome may be handed to the code at once: nothing
        recorded is pending and the previous outcome settled (the gate is
        then taken). Otherwise the caller awaits :meth:`turn`."""
        if self.pending:
            return False
        settle = self.settle
        return settle is None or settle.take(self)

    async def turn(self, key: Any) -> None:
        """Wait until the outcome at ``key`` may be handed to the code: after
        every recorded outcome delivered before it live (a live outcome:
        after every recorded one), and once the previous outcome settled."""
        if self.pending:
            await self._recorded_turn(key)
        settle = self.settle
        if settle is not None and not settle.take(self):
            await settle.wait(self)

    async def _recorded_turn(self, key: Any) -> None:
        while self.pending and self._head() != key:
            fut = asyncio.get_running_loop().create_future()
            self.turns[key] = fut
            self._watch(fut)
            try:
                await fut
            finally:
                self.turns.pop(key, None)
        if key in self.pending:
            del self.pending[key]
        self.progress += 1
        self._release()

    def _head(self) -> Any:
        heap = self.heap
        while heap and heap[0][1] not in self.pending:
            heapq.heappop(heap)
        return heap[0][1] if heap else None

    def _release(self) -> None:
        """Wake whoever may go now: the head's turn, or every live one once
        nothing recorded is pending."""
        head = self._head()
        if head is None:
            for fut in list(self.turns.values()):
                if not fut.done():
                    fut.set_result(None)
            return
        turn = self.turns.get(head)
        if turn is not None and not turn.done():
            turn.set_result(None)

    def _watch(self, fut: asyncio.Future[None]) -> None:
        seen = self.progress

        def check() -> None:
            if fut.done() or self.progress != seen:
                if not fut.done():
                    self._watch(fut)
                return
            head = self._head()
            name = self.pending[head][1] if head in self.pending else "?"
            where = head if isinstance(head, int) else encode_key(head)
            self.parked = errors.NonDeterminismError(
                f"workflow {self.workflow_id!r} did not call {name!r} (step {where}) that its journal "
                f"recorded before the outcomes it waits for, within {REPLAY_STALL:.0f} s of replay; "
                "the code changed under a running workflow. It is parked (PENDING); restore the old "
                "code path and resume it",
                workflow_id=self.workflow_id,
                position=where,
                recorded=name,
                called=None,
            )
            for waiting in list(self.turns.values()):
                if not waiting.done():
                    waiting.set_exception(self.parked)

        asyncio.get_running_loop().call_later(REPLAY_STALL, check)

    def interrupt_turns(self) -> None:
        """On the workflow's loop: end every turn wait with the interrupt."""
        for fut in [*self.turns.values(), *self.gate_q]:
            if not fut.done():
                fut.set_exception(self.interrupt or errors.InternalError("interrupted"))


def stop(ctx: WorkflowContext, interrupt: BaseException) -> None:
    """Interrupt ``ctx`` at its next durable point, waking it if it waits."""
    ctx.interrupt = interrupt
    waiter = ctx.waiter
    if waiter is not None:
        waiter.fire()
    backoffs = ctx.backoffs
    if backoffs:
        for backoff in tuple(backoffs):  # (a C-level copy: safe while another thread adds one)
            backoff.fire()
    if (ctx.turns or ctx.gate_q) and ctx.loop is not None:
        try:
            ctx.loop.call_soon_threadsafe(ctx.interrupt_turns)
        except RuntimeError:
            pass  # that loop is closed


def other_engine(ctx: WorkflowContext, store: Any, call: str) -> errors.UsageError:
    """The error for a durable call made, inside a workflow, on an engine
    other than the one running it (its journal is not that workflow's)."""
    return errors.UsageError(
        f"engine.{call}() was called on the engine of {store.path!r} inside workflow {ctx.name!r} "
        f"(id {ctx.workflow_id!r}), which runs on another Engine object (of {ctx.runner.store.path!r}). A "
        "workflow's durable calls (sleep, send, recv, events, now, starts, queues, patches) go to the engine "
        "that runs it: call them on that engine, or register the workflow and its steps with the engine you "
        "call (decorate them with its @workflow/@step)"
    )


def require() -> WorkflowContext:
    ctx = workflow_context()
    if ctx is None:
        raise errors.UsageError("this call is only valid inside a workflow")
    return ctx
