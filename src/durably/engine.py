"""The Engine: one database file, its registered workflows and steps, and the
client API to start, wait for, inspect, cancel and resume workflows.

No global state: everything hangs off an explicit ``Engine`` instance, so
tests can open as many ``Engine(":memory:")`` as they like.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random as _random
import socket
import threading
import uuid as _uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from . import _crash, _registry, errors
from . import _records as R
from ._ids import new_id
from ._names import check_name, check_workflow_id
from .clock import Clock, SystemClock
from .codec import encode_error, get_codec
from .handle import StepInfo, WorkflowHandle, WorkflowInfo
from .journal import Journal, Record
from .queues import Queue, QueueManager
from .runtime.context import EngineShutdown, current, in_step, stop, workflow_context
from .runtime.coordination import POLL, Coordinator, RecoveryReport
from .runtime.deadlines import Deadlines
from .runtime.messaging import Messaging
from .runtime.runner import Runner
from .runtime.steps import ATTEMPT, StepSpec, make_step, make_transaction
from .runtime.toolkit import Toolkit, seconds_arg
from .runtime.waits import Waits
from .runtime.workflows import WorkflowSpec, run_sync
from .schedules import Schedule, ScheduleInfo, ScheduleManager
from .store import _executors, make_store
from .store._connection import is_memory
from .store._inspect import Stats, read_stats
from .store._store import STATUSES

log = logging.getLogger("durably")
F = TypeVar("F", bound=Callable[..., Any])


# Seconds close() waits, by default, for running step bodies to finish.
CLOSE_GRACE = 30.0
# Opens that may find a workflow running and run it again (per workflow).
MAX_RECOVERY_ATTEMPTS = 100


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise errors.UsageError(f"{what} must be a number of seconds > 0, not {value!r}")
    return float(value)


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


def _not_a_step_yet(fn: Callable[..., Any]) -> None:
    """``@step`` over ``@transaction`` (or the reverse, or twice) would journal
    one call as two steps: refused."""
    inner = getattr(fn, "__durably_step__", None)
    if inner is not None:
        raise errors.UsageError(
            f"{inner.name!r} is already a durably step or transaction step; decorate the plain function once"
        )


def _by_name(*args: Any, **kwargs: Any) -> Any:
    """The stand-in function of a workflow a client starts by name."""
    raise errors.UsageError("a client engine does not run workflows")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle_future(fut: asyncio.Future[Any], value: Any) -> None:
    if fut.done():
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)


class Engine:
    """An embedded durable-workflow engine on one SQLite file.

    Parameters:
        path: database file, created if missing (mode 0600); ``":memory:"``
            for tests (nothing survives the process).
        synchronous: ``"full"`` (default) makes every acknowledged record
            survive power loss; ``"normal"`` survives process crashes only and
            may lose the last commits on power loss.
        codec: ``"json"`` (default, typed by annotations) or ``"pickle"``
            (arbitrary objects; trust every writer of the file).
        workers: threads running sync workflows concurrently.
        vfs: name of a registered apsw VFS to open the file through (for
            fault-injection tests; normally None, SQLite's default).
        check: when to run ``PRAGMA quick_check`` at open: ``"auto"`` (after
            a crash, the default), ``"always"``, or ``"never"``.
        clock: where durable time comes from; ``durably.VirtualClock()`` in
            tests makes sleeps and timeouts of days finish at once.
        app_version: this application's release (default: the environment
            variable ``DURABLY_APP_VERSION``, else ``"0"``). An executor only
            takes over workflows started by the same version (README,
            "Several processes").
        lease: seconds this process's lease lasts without a heartbeat; past
            it, another process on the file takes its workflows over.
        client: start, enqueue, send, cancel and read only (by workflow
            name, without the workflow code); never runs a workflow.
        schema: with a ``postgresql://`` URL as ``path``, the PostgreSQL
            schema holding durably's tables (default ``"durably"``).

    Example::

        engine = durably.Engine("app.db")

        @engine.step(retries=3)
        def fetch(url: str) -> str: ...

        @engine.workflow()
        def crawl(url: str) -> int:
            return len(fetch(url))

        with engine:
            print(engine.run(crawl, "https://example.com"))
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "full",
        codec: str = "json",
        workers: int = 64,
        vfs: str | None = None,
        check: str = "auto",
        clock: Clock | None = None,
        transaction_timeout: float = 10.0,
        app_version: str | None = None,
        lease: float = _executors.LEASE,
        client: bool = False,
        poll: float = POLL,
        schema: str | None = None,
    ) -> None:
        if workers < 1:
            raise errors.UsageError(f"workers must be >= 1, not {workers}")
        self.path = path
        self._store = make_store(path, synchronous, vfs, check, schema)
        self._store.tx_budget = _positive(transaction_timeout, "transaction_timeout")
        # This engine, as recorded on the workflows it runs (introspection).
        self.client = bool(client)
        self._new_executor_id()
        self.app_version = check_name(
            app_version if app_version is not None else os.environ.get("DURABLY_APP_VERSION", "0"), "app_version"
        )
        self._store.app_version = self.app_version
        lease, poll = _positive(lease, "lease"), _positive(poll, "poll")
        self._codec = get_codec(codec)
        # Registered names and aliases (each its own namespace) -> spec.
        self._workflows: dict[str, WorkflowSpec] = {}
        self._steps: dict[str, StepSpec] = {}
        self._close_lock = threading.Lock()
        self._ever_opened = False
        self._journal: Journal = None  # type: ignore[assignment]  # made at each open
        self._open = False
        self.recovery = RecoveryReport()
        if clock is not None and not isinstance(clock, Clock):
            raise errors.UsageError(f"clock must be a durably clock (e.g. durably.VirtualClock()), not {clock!r}")
        # An engine closes the clock it made (its timer thread), never a given one.
        self._own_clock = clock is None
        self._clock: Clock = clock or SystemClock()
        self._waits = Waits()
        # The parts. Each holds typed references to what it uses (the store,
        # the clock, another part, an engine method it is handed); none
        # inherits another's behaviour, and the public methods below delegate.
        self._deadlines = Deadlines(self._clock, self._cancel)
        self._runner = Runner(
            workers,
            self._store,
            self._workflows,
            self._codec,
            self._clock,
            self._deadlines,
            self._kick_queues,
            self._check_open,
        )
        self._toolkit = Toolkit(self._store, self._codec, self._clock, self._waits, self._check_open)
        self._messaging = Messaging(self._toolkit)
        self._queues = QueueManager(
            self, self._store, self._clock, self._codec, self._runner, self._deadlines, self._start_args
        )
        self._schedules = ScheduleManager(
            self, self._store, self._clock, self._workflows, self._spec, self._check_open, self._opened
        )
        self._lease_keeper = Coordinator(self, self._store, self._runner, self._waits, self._queues.kick, lease, poll)

    def _new_executor_id(self) -> None:
        # This process, as recorded on the workflows it runs. Made again at an
        # open in another process than the one that built the engine (an app
        # module imported before gunicorn forks its workers), so two workers
        # never share one executor id.
        self._pid = os.getpid()
        self.executor_id = f"{socket.gethostname()}:{self._pid}:{new_id()[-8:]}"
        self._store.executor = self.executor_id
        self._store.start_owner = None if self.client else self.executor_id

    # -- registration ---------------------------------------------------------

    def workflow(
        self,
        name: str | None = None,
        *,
        max_recovery_attempts: int = MAX_RECOVERY_ATTEMPTS,
        aliases: Iterable[str] = (),
    ) -> Callable[[F], F]:
        """Register a sync or async workflow function.

        Called from outside a workflow, the decorated function starts a
        workflow and waits for its result; called inside one, it starts a
        child workflow and waits for it. ``max_recovery_attempts``: how many
        opens may find it running (its process died) and run it again; past
        that it ends MAX_RECOVERY_ATTEMPTS_EXCEEDED (a poison workflow that
        kills its process at every attempt is not run forever).

        ``name`` defaults to ``module.qualname``, a ``__main__`` module
        resolved to its import name (durably/_names.py). ``aliases``: names
        this workflow was recorded under before (a rename): workflows
        recorded under one are recovered, resumed, forked and started
        idempotently by this function; their rows keep the old name. A name
        or alias another function holds raises UsageError.
        """
        if callable(name):
            return self.workflow()(name)  # used as @engine.workflow

        def register(fn: F) -> F:
            wname, more = _registry.names_of(fn, name, aliases, "workflow")
            spec = WorkflowSpec(fn, wname, self._codec, max_recovery_attempts)
            old = _registry.register(self._workflows, spec, more, "workflow")
            # A parent's journal records the child starts under the child's name.
            self._accept(old, spec.name, more, ("start:", "enqueue:"))
            return self._workflow_callable(spec)  # type: ignore[return-value]

        return register

    def _accept(self, old: Any, name: str, aliases: tuple[str, ...], prefixes: tuple[str, ...]) -> None:
        """Tell replay which recorded step names the step ``name`` accepts."""
        accepted = self._runner.accepted
        for prefix in prefixes:
            if old is not None:
                accepted.pop(prefix + old.name, None)
            if aliases:
                accepted[prefix + name] = frozenset(prefix + a for a in aliases)

    def _workflow_callable(self, spec: WorkflowSpec) -> Callable[..., Any]:
        if spec.is_async:

            @functools.wraps(spec.fn)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                handle = await self.start_async(spec.fn, *args, **kwargs)
                return await handle.result_async()

            call_async.__durably_workflow__ = spec  # type: ignore[attr-defined]
            return call_async

        @functools.wraps(spec.fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._run_inline(spec, args, kwargs)

        call.__durably_workflow__ = spec  # type: ignore[attr-defined]
        return call

    def step(
        self,
        name: str | None = None,
        *,
        retries: int = 0,
        backoff: float = 2.0,
        initial_delay: float = 0.5,
        max_delay: float = 60.0,
        retry_on: Any = None,
        should_retry: Callable[[Exception], bool] | None = None,
        timeout: float | None = None,
        jitter: float = 0.0,
        retry_deadline: float | None = None,
        aliases: Iterable[str] = (),
    ) -> Callable[[F], F]:
        """Register a step: its outcome is journaled once and replayed after.

        ``retries`` extra attempts on an exception, waiting ``initial_delay *
        backoff**n`` (at most ``max_delay``) seconds between them; only the
        final outcome is recorded. ``jitter`` (a fraction in [0, 1]) draws
        each wait uniformly from ``[delay * (1 - jitter), delay]`` (1.0: "full
        jitter"). ``retry_deadline``: seconds after the first attempt started
        past which no attempt starts; a wait that would end later is not
        taken, and the last error is the outcome. ``retry_on`` (exception
        classes) and ``should_retry`` (exception -> bool) narrow which
        exceptions are retried. Each retry is logged at WARNING on the
        ``durably.steps`` logger (extra fields ``workflow_id``,
        ``workflow_name``, ``step``, ``attempt``: the one that failed, counted
        as ``step_attempt``, and ``delay``).

        The wait is on the engine's clock (a ``VirtualClock`` skips it) and
        ends at once when the workflow is cancelled, its deadline passes or
        the engine closes: the workflow stops there as in a durable sleep,
        nothing is recorded for the step, and if it runs again (resume,
        reopen) the step starts again from attempt 0.

        ``timeout`` (async steps): each attempt's body is cancelled after
        that many seconds with StepTimeoutError, which the retry policy sees.
        Inside the body, ``engine.step_attempt`` is the attempt number (0
        first). Outside a workflow a step is a plain call, and inside a step
        body too (the outer step's outcome covers it).

        ``name`` and ``aliases``: as for ``workflow``; a replay accepts a step
        recorded under an alias (step and workflow names are separate
        namespaces; transaction steps share the steps').
        """
        if callable(name):
            return self.step()(name)

        def register(fn: F) -> F:
            _not_a_step_yet(fn)
            sname, more = _registry.names_of(fn, name, aliases, "step")
            spec = StepSpec(
                fn,
                sname,
                self._codec,
                retries,
                backoff,
                initial_delay,
                max_delay,
                retry_on,
                should_retry,
                timeout,
                jitter,
                retry_deadline,
            )
            self._accept(_registry.register(self._steps, spec, more, "step"), sname, more, ("",))
            return make_step(spec)  # type: ignore[return-value]

        return register

    def transaction(
        self, name: str | None = None, *, timeout: float | None = None, aliases: Iterable[str] = ()
    ) -> Callable[[F], F]:
        """Register a transaction step: ``fn(db: durably.Tx, ...)``, a plain def.

        Its SQL runs in the journal's batch, in a SAVEPOINT of its own, and
        commits exactly once together with its outcome record. Keep it short:
        it holds the writer for everyone. ``timeout`` (default: the engine's
        ``transaction_timeout``, 10 s): SQLite interrupts its SQL after that
        long, and so do ``cancel()`` of its workflow and ``close()``; the
        step's outcome is then TransactionTimeoutError, its SQL undone.
        ``name`` and ``aliases``: as for ``step``.
        """
        if callable(name):
            return self.transaction()(name)
        budget = None if timeout is None else _positive(timeout, "transaction timeout")

        def register(fn: F) -> F:
            _not_a_step_yet(fn)
            sname, more = _registry.names_of(fn, name, aliases, "step")
            spec = StepSpec(fn, sname, self._codec, 0, 2.0, 0.0, 0.0)
            self._accept(_registry.register(self._steps, spec, more, "step"), sname, more, ("",))
            return make_transaction(spec, budget)  # type: ignore[return-value]

        return register

    @property
    def step_attempt(self) -> int | None:
        """Inside a step body: which attempt this is (0: the first; retries
        count up). None outside a step body."""
        return ATTEMPT.get() if in_step() else None

    @property
    def workflow_id(self) -> str | None:
        """The id of the workflow running in the current context, or None."""
        ctx = current.get()
        return None if ctx is None else ctx.workflow_id

    # -- lifecycle --------------------------------------------------------------

    def open(self) -> Engine:
        """Open the database, start the writer and workers, recover pending workflows."""
        if self._open:
            raise errors.UsageError("engine is already open")
        if self._ever_opened or os.getpid() != self._pid:
            self._new_executor_id()  # each open is a new executor (its row is a new registration)
        self._ever_opened = True
        keeper = self._lease_keeper
        self._store.registration = None if is_memory(self._store.path) else keeper.registration()
        self._store.open(self._codec.name)
        journal = self._journal = Journal(self._store.flush)
        journal.start()
        for part in (self._runner, self._toolkit, self._queues, self._schedules, keeper):
            part.journal = journal
        self._runner.start_pool()
        self._runner.closing = False
        self._open = True
        try:
            keeper.register()
            self.recovery = keeper.recover()
            for wid, deadline in self._store.deadlines():
                self._deadlines.arm(wid, deadline)
            if not self.client:
                self._queues.start()
                self._schedules.start()
            keeper.start(self._store.last_notice())
        except BaseException:
            self.close()
            raise
        return self

    def close(self, timeout: float | None = CLOSE_GRACE) -> list[str]:
        """Stop running workflows at their next durable point and close.

        A step body that is running finishes and its outcome is recorded: a
        clean close never makes a body run twice. Waits up to ``timeout``
        seconds (None: as long as it takes) for that; workflows still busy
        then (a body blocked outside any durable point) are logged at ERROR
        and left behind. Returns their ids (usually empty). Workflows that
        have not finished stay PENDING and resume at the next open.
        UsageError if called from inside a workflow or step (it would wait
        for itself), or on an event loop that runs async workflows of this
        engine (blocking that loop, it could not wait for them: use
        ``await engine.close_async()`` or ``async with engine:`` there).
        """
        timeout = self._close_args(timeout)
        if not self._open:
            return []
        here = _running_loop()
        if here is not None:
            running = self._runner.running_on(here)
            if running:
                raise errors.UsageError(
                    f"engine.close() was called on the event loop that runs {len(running)} async workflow(s) "
                    f"of this engine ({', '.join(running[:3])}{', ...' if len(running) > 3 else ''}); blocking "
                    "that loop it could not wait for their step bodies, which would run again at the next "
                    "open. Use `await engine.close_async()` (or `async with engine:`) on this loop; the "
                    "engine is still open"
                )
        return self._close(timeout)

    async def close_async(self, timeout: float | None = CLOSE_GRACE) -> list[str]:
        """``close()`` for asyncio code (a web app's lifespan, ``async with
        engine:``): the same steps, waiting without blocking the calling
        loop, so the workflows running on it finish their step bodies and
        record them as workflows in threads do. Returns the ids left behind."""
        timeout = self._close_args(timeout)
        if not self._open:
            return []
        # The blocking part runs in a thread of its own while this loop keeps
        # running the workflows it waits for (a thread not on any loop waits
        # for every workflow, see Runner.stop_all).
        done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

        def closer() -> None:
            try:
                left: list[str] | BaseException = self._close(timeout)
            except BaseException as exc:  # handed to the awaiting caller
                left = exc
            try:
                done.get_loop().call_soon_threadsafe(_settle_future, done, left)
            except RuntimeError:
                pass  # the caller's loop is gone: nobody waits for the answer

        threading.Thread(target=closer, name="durably-close", daemon=True).start()
        return await asyncio.shield(done)

    def _close_args(self, timeout: float | None) -> float | None:
        if current.get() is not None:
            raise errors.UsageError(
                "engine.close() was called inside a workflow or step; it waits for running workflows to "
                "stop, so it would wait for itself. Close the engine from the code that opened it"
            )
        return None if timeout is None else seconds_arg(timeout, "close timeout")

    def _close(self, timeout: float | None) -> list[str]:
        with self._close_lock:  # close() and close_async() at once: one closes, the other finds it closed
            if not self._open:
                return []
            return self._shut(timeout)

    def _shut(self, timeout: float | None) -> list[str]:
        runner = self._runner
        runner.closing = True
        with runner.lock:  # running workflows unwind from their next durable point on
            for ctx in runner.active.values():
                if ctx.interrupt is None:
                    stop(ctx, EngineShutdown())
        self._lease_keeper.stop()
        self._store.interrupt_all_tx()  # a transaction step's SQL would hold the writer through the grace
        self._deadlines.disarm_all()
        self._queues.stop()
        self._schedules.stop()
        self._waits.fire_all()
        left = runner.stop_all(EngineShutdown(), timeout)
        self._waits.fire_all()
        if self._own_clock:
            self._clock.close()  # type: ignore[attr-defined]
        self._lease_keeper.unregister(release=not left)  # released: others may take its pending workflows
        self._store.stop_waiting()
        self._journal.stop()
        self._store.close()
        runner.interrupted.clear()
        self._open = False
        return left

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<durably.Engine {self._store.path!r} {state}{' client' if self.client else ''}>"

    def __enter__(self) -> Engine:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close_async()

    @property
    def is_open(self) -> bool:
        return self._open and not self._runner.closing

    @property
    def _closing(self) -> bool:
        """``close()`` has begun (running workflows record nothing more)."""
        return self._runner.closing

    def _opened(self) -> bool:
        """``open()`` ran and ``close()`` has not ended (closing included)."""
        return self._open

    def _check_open(self) -> None:
        if not self._open or self._closing:
            ctx = current.get()
            if ctx is not None and ctx.runner is self._runner and self._closing:
                # Inside a workflow of this closing engine: the whole workflow
                # unwinds (a BaseException, and every later durable call in any
                # of its tasks raises it too). A NotOpenError here would be an
                # ordinary outcome its code could react to, live only: the
                # reaction would be journaled, the replay would differ.
                if ctx.interrupt is None:
                    stop(ctx, EngineShutdown())
                raise ctx.interrupt  # type: ignore[misc]
            raise errors.NotOpenError("the engine is not open; use `with engine:` or engine.open()")
        failure = self._journal.failure
        if failure is not None:
            raise failure

    # -- starting -----------------------------------------------------------------

    def start(
        self,
        workflow: Callable[..., Any] | str,
        *args: Any,
        workflow_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle:
        """Start a workflow once its start record is durable; return its handle.

        ``workflow_id`` is an idempotency key: if it exists, the existing
        workflow's handle is returned and nothing new runs (a different
        workflow function under that id raises WorkflowConflictError; one
        recorded under an alias of this workflow is this workflow).
        ``timeout`` (seconds) sets a durable deadline: when it passes, even
        across restarts, the workflow and its children are cancelled.
        Inside a workflow this starts a child with id ``<parent>/<position>``.
        """
        spec, wid, rec = self._prepare_start(workflow, args, kwargs, workflow_id, timeout)
        if rec is not None:
            if _crash.ARMED:
                _crash.hit("workflow.before_start_record")
            existing = self._journal.submit(rec)
            if _crash.ARMED:
                _crash.hit("workflow.after_start_record")
            self._started(spec, wid, rec, existing, loop=None)
        return WorkflowHandle(self, wid)

    async def start_async(
        self,
        workflow: Callable[..., Any] | str,
        *args: Any,
        workflow_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle:
        """``start`` for asyncio code. An async workflow runs on the calling loop."""
        ctx = workflow_context()
        key = ctx.peek_key() if ctx is not None and ctx.is_async else None
        spec, wid, rec = self._prepare_start(workflow, args, kwargs, workflow_id, timeout)
        if rec is not None:
            if _crash.ARMED:
                _crash.hit("workflow.before_start_record")
            existing = await self._journal.submit_async(rec)
            if _crash.ARMED:
                _crash.hit("workflow.after_start_record")
            self._started(spec, wid, rec, existing, loop=asyncio.get_running_loop())
        if key is not None:
            if not ctx.deliver_now():  # type: ignore[union-attr]
                await ctx.turn(key)
        return WorkflowHandle(self, wid)

    def run(
        self,
        workflow: Callable[..., Any] | str,
        *args: Any,
        workflow_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Start a workflow and wait for its result (``timeout``: as in ``start``,
        a durable deadline after which it is cancelled)."""
        return self.start(workflow, *args, workflow_id=workflow_id, timeout=timeout, **kwargs).result()

    def _spec(self, workflow: Callable[..., Any] | str | WorkflowSpec) -> WorkflowSpec:
        if isinstance(workflow, WorkflowSpec):
            spec: WorkflowSpec | None = workflow
        elif isinstance(workflow, str):
            spec = self._workflows.get(workflow)
        else:
            spec = getattr(workflow, "__durably_workflow__", None)
            if spec is None:  # the undecorated function
                spec = next((s for s in self._workflows.values() if s.fn is workflow), None)
        if spec is None and self.client and isinstance(workflow, str):
            # A client starts by name, without the code: inputs are encoded
            # as given, the result read back untyped; an executor runs it.
            spec = WorkflowSpec(_by_name, check_name(workflow, "workflow name"), self._codec)
            return spec
        if spec is None or self._workflows.get(spec.name) is not spec:
            raise errors.UsageError(f"{workflow!r} is not a workflow registered with this engine")
        return spec

    def _start_args(
        self,
        workflow: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
        timeout: float | None,
    ) -> tuple[WorkflowSpec, Any, float | None]:
        """Vet a start or an enqueue: (spec, encoded inputs, deadline or None)."""
        ctx = workflow_context()
        self._toolkit.mine(ctx, "start")
        self._check_open()
        spec = self._spec(workflow)
        if workflow_id is not None:
            check_workflow_id(workflow_id)
        timeout = seconds_arg(timeout, "workflow timeout", allow_none=True)
        if timeout is not None:
            deadline: float | None = self._clock.now() + timeout
        elif ctx is not None:
            # A child (started or enqueued) inherits its parent's absolute
            # deadline, so a whole tree is bounded by the root's timeout even
            # when the parent returns first (as DBOS does).
            deadline = self._store.deadline(ctx.workflow_id)
        else:
            deadline = None
        return spec, self._codec.encode_inputs(args, kwargs, f"inputs of workflow {spec.name!r}"), deadline

    def _prepare_start(
        self,
        workflow: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
        timeout: float | None = None,
    ) -> tuple[WorkflowSpec, str, Record | None]:
        spec, inputs, deadline = self._start_args(workflow, args, kwargs, workflow_id, timeout)
        ctx = workflow_context()
        if ctx is None:
            wid = workflow_id or new_id()
            return spec, wid, Record(R.START, (wid, spec.name, inputs, None, None, deadline))
        # A child: journaled at the parent's next position.
        pos = ctx.take_position()
        step_name = f"start:{spec.name}"
        recorded = ctx.replayed(pos, step_name)
        if recorded is not None:
            return spec, self._codec.decoder(str)(recorded[0]), None
        wid = workflow_id or ctx.child_id(pos)
        parent_step = (ctx.workflow_id, ctx.row(pos), step_name, self._codec.encode(wid, "child id"))
        return spec, wid, Record(R.START, (wid, spec.name, inputs, ctx.workflow_id, parent_step, deadline))

    def _started(
        self, spec: WorkflowSpec, wid: str, rec: Record, existing: Any, loop: Any, launch: bool = True
    ) -> None:
        if existing is not None:
            name, _status = existing
            if name != spec.name and self._workflows.get(name) is not spec:  # an alias is this workflow
                raise errors.WorkflowConflictError(
                    f"workflow id {wid!r} already belongs to workflow {name!r}, not {spec.name!r}",
                    workflow_id=wid,
                    existing_name=name,
                    requested_name=spec.name,
                )
            return
        if len(rec.params) > 5 and rec.params[5] is not None:
            self._deadlines.arm(wid, rec.params[5])
        if launch and not self.client:
            self._runner.launch(spec, wid, rec.params[2], replay=False, loop=loop)

    def _run_inline(self, spec: WorkflowSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A sync workflow called directly runs in the calling thread.

        Inside a workflow that makes it a child run by its parent's thread,
        so parents waiting on children can never starve the worker pool.
        """
        spec, wid, rec = self._prepare_start(spec, args, kwargs, None)
        if rec is not None:
            existing = self._journal.submit(rec)
            self._started(spec, wid, rec, existing, loop=None, launch=False)
            ctx = self._runner.register(spec, wid) if existing is None else None
            if ctx is not None:
                run_sync(ctx, spec, rec.params[2], False)
        else:
            # A replayed parent reaching a child it started before a crash: if
            # the child is still pending and nobody runs it, run it here.
            self._runner.steal(wid)
            row = self._store.get_workflow(wid)
            if row is not None and row[2] == "PENDING":
                ctx = self._runner.register(spec, wid)
                if ctx is not None:
                    run_sync(ctx, spec, row[3], True)
        return WorkflowHandle(self, wid).result()

    # -- inspecting and managing ------------------------------------------------------

    def handle(self, workflow_id: str) -> WorkflowHandle:
        """A handle for an existing workflow (WorkflowNotFoundError if none)."""
        self._runner.row(workflow_id)
        return WorkflowHandle(self, workflow_id)

    def list_workflows(
        self,
        status: str | None = None,
        name: Any = None,
        limit: int | None = 100,
        *,
        id_prefix: str | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
        queue: str | None = None,
        parent_id: str | None = None,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[WorkflowInfo]:
        """Workflows in creation order (newest first unless ``newest_first``
        is False; workflows created in the same millisecond keep the order
        they were created in), filtered by status, name (or the workflow
        function), id prefix, creation time range (``start_time`` <=
        created_at < ``end_time``, unix seconds), queue and parent; at most
        ``limit`` (None: all) after skipping ``offset``. Each filter is
        served by an index."""
        self._check_open()
        if status is not None and str(status) not in STATUSES:
            raise errors.UsageError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        if name is not None and not isinstance(name, str):
            name = self._spec(name).name
        for what, value in (("id_prefix", id_prefix), ("queue", queue), ("parent_id", parent_id)):
            if value is not None:
                check_name(value, what)
        for what, value in (("limit", limit), ("offset", offset)):
            # Both stores take a signed 64-bit integer (SQLite's range).
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT64_MAX
            ):
                raise errors.UsageError(f"{what} must be an int from 0 to 2**63 - 1, not {_short(value)}")
        start_time, end_time = (
            _unix_time(what, value) for what, value in (("start_time", start_time), ("end_time", end_time))
        )
        rows = self._store.list_workflows(
            None if status is None else str(status),
            name,
            limit,
            id_prefix=id_prefix,
            start_time=start_time,
            end_time=end_time,
            queue=queue,
            parent_id=parent_id,
            offset=offset,
            newest_first=bool(newest_first),
        )
        return [WorkflowInfo.from_row(r, self._runner) for r in rows]

    def steps(self, workflow_id: str) -> list[StepInfo]:
        """The recorded steps of a workflow, in the order they were recorded
        (call order in sync workflows; values encoded)."""
        self._runner.row(workflow_id)
        return [StepInfo.from_row(r) for r in self._store.step_rows(workflow_id)]

    def cancel(self, workflow_id: str, *, children: bool = True) -> None:
        """Cancel a PENDING workflow and (unless ``children=False``) its
        pending descendants.

        Durable before it returns; a running workflow stops at its next
        durable point (a step boundary, a sleep, a recv). Finished workflows
        are left alone. A cancelled queued workflow frees its queue slot now.
        """
        self._cancel(workflow_id, None, children)

    def _cancel(self, workflow_id: str, reason: str | None, children: bool = True) -> None:
        """``cancel``; ``reason`` (e.g. a deadline) is kept for the root's
        WorkflowCancelledError."""
        self._runner.row(workflow_id)
        ids, frontier = [workflow_id], [workflow_id] if children else []
        while frontier:
            children = [c for wid in frontier for c in self._store.children(wid)]
            ids.extend(children)
            frontier = children
        # Interrupt first: a completion racing with the cancel then never
        # reports SUCCESS to waiters without re-reading the row.
        runner = self._runner
        with runner.lock:
            for wid in ids:
                ctx = runner.active.get(wid)
                if ctx is not None:
                    stop(ctx, errors.WorkflowCancelled(wid))
                    self._store.interrupt_tx(wid)  # a transaction step running now ends at once
        why = None if reason is None else encode_error(errors.WorkflowCancelledError(reason, workflow_id=workflow_id))
        for wid in ids:
            self._journal.submit(Record(R.WRITE, ("cancel", (why if wid == workflow_id else None, wid))))
        for wid in ids:
            self._deadlines.disarm(wid)
            runner.notify(wid)
        # A cancelled queue entry's slot is free once the cancel commits (the
        # queue_entry_done trigger), not when its body returns.
        self._queues.kick()

    def fork(self, workflow_id: str, start_step: int = 0, *, new_workflow_id: str | None = None) -> WorkflowHandle:
        """Start a new workflow from a recorded one: the same function and
        inputs, the first ``start_step`` recorded steps kept (in the order of
        ``engine.steps(id)``; they replay, child workflows they started
        included), the rest run again with the current code. ``start_step=0``
        restarts it from the beginning. The original is untouched; returns
        the new workflow's handle (its id: ``new_workflow_id`` or a new one).
        Like DBOS ``fork_workflow``."""
        row = self._runner.row(workflow_id)
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise errors.UsageError(f"start_step must be an int >= 0, not {start_step!r}")
        spec = self._workflows.get(row[1])
        if spec is None:
            raise errors.UnknownWorkflowError(
                f"workflow {workflow_id!r} runs {row[1]!r}, which is not registered with this engine",
                workflow_id=workflow_id,
                name=row[1],
            )
        new = check_workflow_id(new_workflow_id, "new_workflow_id") if new_workflow_id is not None else new_id()
        rec = Record(
            R.OP,
            (
                None,
                None,
                "fork",
                "fork",
                (workflow_id, new, start_step, self.executor_id, lambda i: self._codec.encode(i, "workflow id")),
            ),
        )
        self._journal.submit(rec)
        self._runner.launch(spec, new, row[3], replay=True)
        return WorkflowHandle(self, new)

    def resume(self, workflow_id: str) -> WorkflowHandle:
        """Run a CANCELLED, ERROR, parked, interrupted or
        MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow again from its last recorded step."""
        row = self._runner.row(workflow_id)
        name, status, inputs = row[1], row[2], row[3]
        handle = WorkflowHandle(self, workflow_id)
        if status == "SUCCESS":
            return handle
        spec = self._workflows.get(name)
        if spec is None:
            raise errors.UnknownWorkflowError(
                f"workflow {workflow_id!r} runs {name!r}, which is not registered with this engine",
                workflow_id=workflow_id,
                name=name,
            )
        self._journal.submit(Record(R.WRITE, ("resume", (self.executor_id, self.app_version, workflow_id))))
        runner = self._runner
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

    def _kick_queues(self) -> None:
        """A workflow ended, or a queue entry came: a queue may have room."""
        self._queues.kick()

    # -- messages and events (runtime/messaging.py) -----------------------------------

    def send(
        self, workflow_id: str, message: Any, topic: str | None = None, idempotency_key: str | None = None
    ) -> None:
        """Deliver ``message`` to workflow ``workflow_id`` (received once, in
        order per topic). Durable before it returns; from inside a workflow it
        is journaled, so a replay does not send it again.
        WorkflowNotFoundError if no such workflow exists.

        ``idempotency_key`` (outside workflow code: a client, a step body):
        the key commits in the same transaction as the message, so a second
        send with the same key to the same workflow delivers nothing and
        returns normally, across restarts, even after the first message was
        received. Keys are global to the database file: a key already used
        for another destination raises UsageError (nothing is delivered).
        The first send wins: a retry's message and topic are not compared.
        In workflow code it raises UsageError (sends there are exactly-once
        already)."""
        return self._toolkit.drive(self._messaging.send(workflow_id, message, topic, idempotency_key), "send")

    async def send_async(
        self, workflow_id: str, message: Any, topic: str | None = None, idempotency_key: str | None = None
    ) -> None:
        return await self._toolkit.drive_async(self._messaging.send(workflow_id, message, topic, idempotency_key))

    def send_many(self, messages: Iterable[tuple[Any, ...]]) -> None:
        """Deliver every message of ``messages``, an iterable of
        ``(workflow_id, message)`` or ``(workflow_id, message, topic)``
        tuples, atomically: one transaction, all or nothing (one unknown
        workflow id raises WorkflowNotFoundError and delivers none). Each
        receiver gets its messages in the order given, per topic. Inside a
        workflow the batch is one journaled step (not sent again on replay).
        Every item is checked (names, encoding) before anything is written;
        an empty batch does nothing and records nothing."""
        return self._toolkit.drive(self._messaging.send_many(messages), "send_many")

    async def send_many_async(self, messages: Iterable[tuple[Any, ...]]) -> None:
        return await self._toolkit.drive_async(self._messaging.send_many(messages))

    def recv(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        """The next message sent to this workflow on ``topic`` (oldest first),
        waiting up to ``timeout`` seconds (None: forever); None on timeout.
        The timeout's deadline is recorded: it survives restarts. ``type``
        decodes the message into that type (a dataclass, attrs class, Pydantic
        model, msgspec Struct ...), as annotations do for step results; by
        default JSON values."""
        return self._toolkit.drive(self._messaging.recv(topic, timeout, type), "recv")

    async def recv_async(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        return await self._toolkit.drive_async(self._messaging.recv(topic, timeout, type))

    def set_event(self, key: str, value: Any) -> None:
        """Publish ``value`` under ``key`` for this workflow (latest wins)."""
        return self._toolkit.drive(self._messaging.set_event(key, value), "set_event")

    async def set_event_async(self, key: str, value: Any) -> None:
        return await self._toolkit.drive_async(self._messaging.set_event(key, value))

    def get_event(self, workflow_id: str, key: str, timeout: float | None = None, type: Any = None) -> Any:
        """The latest value workflow ``workflow_id`` published under ``key``,
        waiting up to ``timeout`` seconds for one (None: forever); None on
        timeout. Inside a workflow the value read is journaled. ``type``: as
        for ``recv``."""
        return self._toolkit.drive(self._messaging.get_event(workflow_id, key, timeout, type), "get_event")

    async def get_event_async(self, workflow_id: str, key: str, timeout: float | None = None, type: Any = None) -> Any:
        return await self._toolkit.drive_async(self._messaging.get_event(workflow_id, key, timeout, type))

    def get_all_events(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        """The latest value of every event workflow ``workflow_id`` has
        published, as a dict by key (in key order); empty when it has none
        (or does not exist yet). Does not wait. Inside a workflow the
        snapshot read is journaled: a replay returns the recorded one.
        ``type`` decodes every value into that type, as for ``recv``."""
        return self._toolkit.drive(self._messaging.get_all_events(workflow_id, type), "get_all_events")

    async def get_all_events_async(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        return await self._toolkit.drive_async(self._messaging.get_all_events(workflow_id, type))

    # -- durable time, values and patches (runtime/toolkit.py) ---------------------------

    def sleep(self, seconds: float) -> None:
        """Sleep durably: inside a workflow the wake-up time is recorded, so
        after a restart the workflow wakes at that time, not ``seconds`` after
        the restart. Cancelling the workflow interrupts the sleep."""
        return self._toolkit.drive(self._toolkit.sleep(seconds), "sleep")

    async def sleep_async(self, seconds: float) -> None:
        return await self._toolkit.drive_async(self._toolkit.sleep(seconds))

    def now(self) -> datetime:
        """The current time (UTC); inside a workflow, recorded and replayed."""
        ts = self._toolkit.drive(self._toolkit.value("now", self._clock.now, float), "now")
        return datetime.fromtimestamp(ts, UTC)

    async def now_async(self) -> datetime:
        ts = await self._toolkit.drive_async(self._toolkit.value("now", self._clock.now, float), "now")
        return datetime.fromtimestamp(ts, UTC)

    def random(self) -> float:
        """A float in [0, 1); inside a workflow, recorded and replayed."""
        return self._toolkit.drive(self._toolkit.value("random", _random.random, float), "random")

    async def random_async(self) -> float:
        return await self._toolkit.drive_async(self._toolkit.value("random", _random.random, float), "random")

    def uuid4(self) -> str:
        """A random UUID string; inside a workflow, recorded and replayed."""
        return self._toolkit.drive(self._toolkit.value("uuid4", lambda: str(_uuid.uuid4()), str), "uuid4")

    async def uuid4_async(self) -> str:
        return await self._toolkit.drive_async(self._toolkit.value("uuid4", lambda: str(_uuid.uuid4()), str), "uuid4")

    def patched(self, change: str) -> bool:
        """True if this run of the workflow takes the new code path of ``change``.

        New runs record a marker and take it; a run that recorded steps past
        this point before the patch existed replays the old path (False).
        Once no such run is left, replace the check with
        ``deprecate_patch(change)`` (runs that recorded the marker still
        replay); once none of those is left either, delete the call.
        """
        return self._toolkit.patched(change)

    def deprecate_patch(self, change: str) -> bool:
        """The second step of removing ``patched(change)`` (Temporal's and
        DBOS's ``deprecate_patch``): always True, the new code path.

        A run that recorded the ``change`` marker (it passed this point with
        ``patched`` code) replays past it: the marker is consumed here. A
        run that gets here live records nothing. The removal, in steps:
        (1) ``if engine.patched(change): new() else: old()``; once no run
        started before (1) is left (they would park: their journals hold the
        old path), (2) ``engine.deprecate_patch(change); new()``; once no run
        that recorded the marker is left, (3) plain ``new()``.
        """
        return self._toolkit.deprecate_patch(change)

    # -- queues (queues.py) ---------------------------------------------------------------

    def queue(self, name: str, *, concurrency: int | None = None, rate_limit: tuple[int, float] | None = None) -> Queue:
        """Declare (or get) the queue ``name``.

        ``concurrency``: at most this many of its workflows run at once;
        ``rate_limit=(n, seconds)``: at most n starts per sliding window. Both
        are global to the database and hold across restarts. Declaring a name
        again with other limits raises UsageError.
        """
        return self._queues.queue(name, concurrency, rate_limit)

    def enqueue(self, queue: str, workflow: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> WorkflowHandle:
        """``engine.queue(queue).enqueue(...)`` for a declared queue name."""
        declared = self._queues.declared.get(queue) if isinstance(queue, str) else None
        if declared is None:
            raise errors.UsageError(f"no queue named {queue!r} is declared; call engine.queue({queue!r}, ...) first")
        return declared.enqueue(workflow, *args, **kwargs)

    # -- cron schedules (schedules.py) ----------------------------------------------------
    def schedule(
        self, name: str, cron: str, workflow: Callable[..., Any] | str, *, missed: str = "latest", tz: str | None = None
    ) -> Schedule:
        """Start ``workflow(slot)`` once per slot of the cron expression ``cron``
        (``slot``: the slot's aware datetime in the schedule's time zone).

        ``tz``: an IANA time zone name (``"Europe/Paris"``) the expression is
        read in; None (default) is UTC. Each slot fires at most once, across
        crashes and restarts (the slot is the workflow id:
        ``schedule:<name>@<slot ISO>``). Slots missed while the engine was
        not running: ``"latest"`` fires the most recent one, ``"all"`` fires
        each in order (at most 1,000 per round), ``"skip"`` fires none.

        Called before ``open`` it declares the schedule (written at open);
        called on an open engine it creates it at once (durable before this
        returns) and it starts firing. The schedule persists: it keeps
        firing after a restart whether or not the code declares it again.
        Declaring a name that exists replaces its definition and keeps its
        progress and paused state; declaring one name twice in one process
        with different definitions raises UsageError (``delete_schedule``
        first). An invalid expression, policy or time zone raises UsageError.
        """
        return self._schedules.schedule(name, cron, workflow, missed=missed, tz=tz)

    def pause_schedule(self, name: str) -> None:
        """Pause the schedule ``name``: it fires no slot until resumed (across
        restarts too; a code declaration does not resume it). Durable before
        it returns; workflows it already started keep running. Pausing a
        paused schedule does nothing. ScheduleNotFoundError if none."""
        return self._schedules.pause_schedule(name)

    def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule. The slots that fell while it was paused
        are skipped, whatever its ``missed`` policy (which is for outages,
        not decisions): the first slot after this call fires next. Use
        ``backfill_schedule`` to run skipped slots. Resuming a schedule that
        is not paused does nothing. ScheduleNotFoundError if none."""
        return self._schedules.resume_schedule(name)

    def delete_schedule(self, name: str) -> None:
        """Delete the schedule ``name``: no further slot fires; the workflows it
        started are untouched. A schedule declared in code is created again
        (with fresh progress) the next time that code declares it.
        ScheduleNotFoundError if none."""
        return self._schedules.delete_schedule(name)

    def trigger_schedule(self, name: str, *, workflow_id: str | None = None) -> WorkflowHandle:
        """Run the schedule's workflow now, once, outside its slot sequence:
        ``workflow(now)``, ``now`` in the schedule's time zone. Its progress
        and next slot are unchanged; a paused schedule can be triggered.

        The id is ``workflow_id`` when given (an idempotency key: triggering
        again with it returns the first run's handle), else
        ``schedule:<name>@trigger:<now ISO>``, ``now`` on the engine's clock
        (so two triggers at one instant of that clock are one run).
        ScheduleNotFoundError if there is no such schedule; UsageError if its
        workflow is not registered here.
        """
        return self._schedules.trigger_schedule(name, workflow_id=workflow_id)

    def backfill_schedule(self, name: str, start: datetime, end: datetime) -> list[WorkflowHandle]:
        """Start the schedule's workflow for every slot in [start, end) (aware
        datetimes), each with its slot's usual id ``schedule:<name>@<slot>``:
        a slot that already ran (or was already backfilled) is not run again,
        its existing workflow's handle is returned. Returns one handle per
        slot, in slot order. Progress is unchanged; paused schedules can be
        backfilled. UsageError for a naive datetime, ``end`` before
        ``start``, or more than 10,000 slots (nothing is started);
        ScheduleNotFoundError if there is no such schedule.
        """
        return self._schedules.backfill_schedule(name, start, end)

    def stats(self) -> Stats:
        """A snapshot of the database (``Stats``): workflows by status, step
        rows, messages waiting, events, workflows waiting in each queue, live
        executors, schedules, and this engine's writer counters."""
        self._check_open()
        return read_stats(self._store, self._journal)

    def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the database, by name (``ScheduleInfo``)."""
        return self._schedules.list_schedules()
