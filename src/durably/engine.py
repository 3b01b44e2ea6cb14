"""The Engine: one database file, its registered workflows and steps, and the
client API to start, wait for, inspect, cancel and resume workflows.

No global state: everything hangs off an explicit ``Engine`` instance, so
tests can open as many ``Engine(":memory:")`` as they like. This module is
the table of contents of the API: each public method delegates to the part
that does the work (runtime/lifecycle.py opens and closes, runtime/starts.py
starts, runtime/management.py inspects and changes, runtime/toolkit.py and
runtime/messaging.py are the durable calls of workflow code, queues.py and
schedules.py the queues and cron schedules).
"""

from __future__ import annotations

import functools
import logging
import os
import random as _random
import uuid as _uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from . import errors
from ._names import check_name
from .clock import Clock, SystemClock
from .codec import get_codec
from .handle import StepInfo, WorkflowHandle, WorkflowInfo
from .journal import Journal
from .queues import Queue, QueueManager
from .runtime.context import current, in_step
from .runtime.coordination import POLL, Coordinator, RecoveryReport
from .runtime.deadlines import Deadlines
from .runtime.identity import Identity
from .runtime.lifecycle import CLOSE_GRACE, Lifecycle
from .runtime.management import Management
from .runtime.messaging import Messaging
from .runtime.registration import Registrations
from .runtime.runner import Runner
from .runtime.starts import Starter
from .runtime.steps import ATTEMPT, Step, StepSpec, Transaction
from .runtime.toolkit import Toolkit
from .runtime.waits import Waits
from .runtime.workflows import Workflow, WorkflowSpec
from .schedules import Schedule, ScheduleInfo, ScheduleManager
from .store import Tx, _executors, make_store
from .store._inspect import Stats, read_stats
from .store.contract import StoreContract

log = logging.getLogger("durably")
P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["Engine", "RecoveryReport", "CLOSE_GRACE", "MAX_RECOVERY_ATTEMPTS"]

# Opens that may find a workflow running and run it again (per workflow).
MAX_RECOVERY_ATTEMPTS = 100


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise errors.UsageError(f"{what} must be a number of seconds > 0, not {value!r}")
    return float(value)


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
        # The one place the store enters the runtime: typed as the contract
        # from here on (store/contract.py), whichever backend it is.
        store = self._store = make_store(path, synchronous, vfs, check, schema)
        store.tx_budget = _positive(transaction_timeout, "transaction_timeout")
        version = check_name(
            app_version if app_version is not None else os.environ.get("DURABLY_APP_VERSION", "0"), "app_version"
        )
        store.app_version = version
        # This engine, as recorded on the workflows it runs (introspection).
        identity = self._identity = Identity(version, bool(client))
        identity.renew(store)
        lease, poll = _positive(lease, "lease"), _positive(poll, "poll")
        self._codec = get_codec(codec)
        # Registered names and aliases (each its own namespace) -> spec.
        self._workflows: dict[str, WorkflowSpec] = {}
        self._steps: dict[str, StepSpec] = {}
        if clock is not None and not isinstance(clock, Clock):
            raise errors.UsageError(f"clock must be a durably clock (e.g. durably.VirtualClock()), not {clock!r}")
        # An engine closes the clock it made (its timer thread), never a given one.
        own_clock: SystemClock | None = None
        if clock is None:
            clock = own_clock = SystemClock()
        self._clock = clock
        self._build(workers, identity, store, lease, poll, own_clock)

    def _build(
        self, workers: int, identity: Identity, store: StoreContract, lease: float, poll: float, own: SystemClock | None
    ) -> None:
        """The parts. Each is given what it uses (the store as its contract,
        the clock, the identity, another part or one of its methods), never
        the engine; the public methods below delegate to them. Until the
        first open they hold a journal never started (its submit raises
        NotOpenError); each open starts a writer of its own and hands it to
        them (runtime/lifecycle.py)."""
        codec, clock, workflows = self._codec, self._clock, self._workflows
        journal = Journal(store.flush)
        waits = self._waits = Waits()
        deadlines = self._deadlines = Deadlines(clock, lambda wid, why: manage.cancel(wid, why))
        runner = self._runner = Runner(
            workers,
            store,
            workflows,
            codec,
            clock,
            deadlines,
            lambda: queues.kick(),
            lambda: life.check_open(),
            journal,
        )
        kit = self._toolkit = Toolkit(store, codec, clock, waits, runner.check_open, journal)
        self._messaging = Messaging(kit)
        starts = self._starts = Starter(
            identity, store, codec, clock, workflows, runner, deadlines, kit, runner.check_open
        )
        queues = self._queues = QueueManager(
            identity,
            store,
            clock,
            codec,
            runner,
            deadlines,
            starts.vet,
            lambda: life.is_open and not runner.closing,
            journal,
        )
        self._schedules = ScheduleManager(
            store, clock, workflows, starts.spec, starts.start, runner.check_open, lambda: life.is_open, journal
        )
        manage = self._manage = Management(
            identity, store, codec, workflows, runner, deadlines, starts.spec, queues.kick
        )
        life = self._life = Lifecycle(
            identity, store, codec.name, own, runner, kit, queues, self._schedules, deadlines, waits, lease, poll
        )
        self._register = Registrations(
            codec, workflows, self._steps, runner.accepted, starts.run_inline, self.start_async
        )

    # -- who this engine is ---------------------------------------------------------------

    @property
    def executor_id(self) -> str:
        """This process's executor, as recorded on the workflows it runs (a
        new one at each open after the first)."""
        return self._identity.executor_id

    @property
    def app_version(self) -> str:
        """This application's release: an executor only takes over workflows
        started by the same version."""
        return self._identity.app_version

    @property
    def client(self) -> bool:
        """Whether this engine only starts, sends and reads (never runs a workflow)."""
        return self._identity.client

    @property
    def recovery(self) -> RecoveryReport:
        """What the last ``open()`` found pending and did with it."""
        return self._life.recovery

    # -- registration ---------------------------------------------------------

    @overload
    def workflow(self, name: Callable[P, T]) -> Workflow[P, T]: ...

    @overload
    def workflow(
        self,
        name: str | None = None,
        *,
        max_recovery_attempts: int = MAX_RECOVERY_ATTEMPTS,
        aliases: Iterable[str] = (),
    ) -> Callable[[Callable[P, T]], Workflow[P, T]]: ...

    def workflow(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        max_recovery_attempts: int = MAX_RECOVERY_ATTEMPTS,
        aliases: Iterable[str] = (),
    ) -> Any:
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
        return functools.partial(
            self._register.workflow, name=name, aliases=aliases, max_recovery_attempts=max_recovery_attempts
        )

    @overload
    def step(self, name: Callable[P, T]) -> Step[P, T]: ...

    @overload
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
    ) -> Callable[[Callable[P, T]], Step[P, T]]: ...

    def step(
        self,
        name: str | Callable[..., Any] | None = None,
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
    ) -> Any:
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
        policy = (retries, backoff, initial_delay, max_delay, retry_on, should_retry, timeout, jitter, retry_deadline)
        return functools.partial(self._register.step, name=name, aliases=aliases, policy=policy)

    @overload
    def transaction(self, name: Callable[Concatenate[Tx, P], T]) -> Transaction[P, T]: ...

    @overload
    def transaction(
        self, name: str | None = None, *, timeout: float | None = None, aliases: Iterable[str] = ()
    ) -> Callable[[Callable[Concatenate[Tx, P], T]], Transaction[P, T]]: ...

    def transaction(
        self, name: str | Callable[..., Any] | None = None, *, timeout: float | None = None, aliases: Iterable[str] = ()
    ) -> Any:
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
        return functools.partial(self._register.transaction, name=name, aliases=aliases, budget=budget)

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

    # -- lifecycle (runtime/lifecycle.py) --------------------------------------------

    def open(self) -> Engine:
        """Open the database, start the writer and workers, recover pending workflows."""
        self._life.open()
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
        return self._life.close(timeout)

    async def close_async(self, timeout: float | None = CLOSE_GRACE) -> list[str]:
        """``close()`` for asyncio code (a web app's lifespan, ``async with
        engine:``): the same steps, waiting without blocking the calling
        loop, so the workflows running on it finish their step bodies and
        record them as workflows in threads do. Returns the ids left behind."""
        return await self._life.close_async(timeout)

    def __repr__(self) -> str:
        state = "open" if self._life.is_open else "closed"
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
        return self._life.is_open and not self._runner.closing

    @property
    def _closing(self) -> bool:
        """``close()`` has begun (running workflows record nothing more)."""
        return self._runner.closing

    @property
    def _journal(self) -> Journal:
        """The current open's journal writer (tests and benchmarks read its counters)."""
        return self._life.journal

    @property
    def _lease_keeper(self) -> Coordinator | None:
        """The current open's lease keeper (None while closed)."""
        return self._life.keeper

    # -- starting (runtime/starts.py) ------------------------------------------------

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
        return self._starts.start(workflow, *args, workflow_id=workflow_id, timeout=timeout, **kwargs)

    async def start_async(
        self,
        workflow: Callable[..., Any] | str,
        *args: Any,
        workflow_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle:
        """``start`` for asyncio code. An async workflow runs on the calling loop."""
        return await self._starts.start_async(workflow, *args, workflow_id=workflow_id, timeout=timeout, **kwargs)

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

    # -- inspecting and managing (runtime/management.py) ----------------------------

    def handle(self, workflow_id: str) -> WorkflowHandle:
        """A handle for an existing workflow (WorkflowNotFoundError if none)."""
        return self._manage.handle(workflow_id)

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
        return self._manage.list_workflows(
            status,
            name,
            limit,
            id_prefix=id_prefix,
            start_time=start_time,
            end_time=end_time,
            queue=queue,
            parent_id=parent_id,
            offset=offset,
            newest_first=newest_first,
        )

    def steps(self, workflow_id: str) -> list[StepInfo]:
        """The recorded steps of a workflow, in the order they were recorded
        (call order in sync workflows; values encoded)."""
        return self._manage.steps(workflow_id)

    def cancel(self, workflow_id: str, *, children: bool = True) -> None:
        """Cancel a PENDING workflow and (unless ``children=False``) its
        pending descendants.

        Durable before it returns; a running workflow stops at its next
        durable point (a step boundary, a sleep, a recv). Finished workflows
        are left alone. A cancelled queued workflow frees its queue slot now.
        """
        self._manage.cancel(workflow_id, None, children)

    def fork(self, workflow_id: str, start_step: int = 0, *, new_workflow_id: str | None = None) -> WorkflowHandle:
        """Start a new workflow from a recorded one: the same function and
        inputs, the first ``start_step`` recorded steps kept (in the order of
        ``engine.steps(id)``; they replay, child workflows they started
        included), the rest run again with the current code. ``start_step=0``
        restarts it from the beginning. The original is untouched; returns
        the new workflow's handle (its id: ``new_workflow_id`` or a new one).
        Like DBOS ``fork_workflow``."""
        return self._manage.fork(workflow_id, start_step, new_workflow_id)

    def resume(self, workflow_id: str) -> WorkflowHandle:
        """Run a CANCELLED, ERROR, parked, interrupted or
        MAX_RECOVERY_ATTEMPTS_EXCEEDED workflow again from its last recorded step."""
        return self._manage.resume(workflow_id)

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
        self._toolkit.drive(self._messaging.send(workflow_id, message, topic, idempotency_key), "send")

    async def send_async(
        self, workflow_id: str, message: Any, topic: str | None = None, idempotency_key: str | None = None
    ) -> None:
        await self._toolkit.drive_async(self._messaging.send(workflow_id, message, topic, idempotency_key))

    def send_many(self, messages: Iterable[tuple[Any, ...]]) -> None:
        """Deliver every message of ``messages``, an iterable of
        ``(workflow_id, message)`` or ``(workflow_id, message, topic)``
        tuples, atomically: one transaction, all or nothing (one unknown
        workflow id raises WorkflowNotFoundError and delivers none). Each
        receiver gets its messages in the order given, per topic. Inside a
        workflow the batch is one journaled step (not sent again on replay).
        Every item is checked (names, encoding) before anything is written;
        an empty batch does nothing and records nothing."""
        self._toolkit.drive(self._messaging.send_many(messages), "send_many")

    async def send_many_async(self, messages: Iterable[tuple[Any, ...]]) -> None:
        await self._toolkit.drive_async(self._messaging.send_many(messages))

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
        self._toolkit.drive(self._messaging.set_event(key, value), "set_event")

    async def set_event_async(self, key: str, value: Any) -> None:
        await self._toolkit.drive_async(self._messaging.set_event(key, value))

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
        events: dict[str, Any] = self._toolkit.drive(
            self._messaging.get_all_events(workflow_id, type), "get_all_events"
        )
        return events

    async def get_all_events_async(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        events: dict[str, Any] = await self._toolkit.drive_async(self._messaging.get_all_events(workflow_id, type))
        return events

    # -- durable time, values and patches (runtime/toolkit.py) ---------------------------

    def sleep(self, seconds: float) -> None:
        """Sleep durably: inside a workflow the wake-up time is recorded, so
        after a restart the workflow wakes at that time, not ``seconds`` after
        the restart. Cancelling the workflow interrupts the sleep."""
        self._toolkit.drive(self._toolkit.sleep(seconds), "sleep")

    async def sleep_async(self, seconds: float) -> None:
        await self._toolkit.drive_async(self._toolkit.sleep(seconds))

    def now(self) -> datetime:
        """The current time (UTC); inside a workflow, recorded and replayed."""
        ts = self._toolkit.drive(self._toolkit.value("now", self._clock.now, float), "now")
        return datetime.fromtimestamp(ts, UTC)

    async def now_async(self) -> datetime:
        ts = await self._toolkit.drive_async(self._toolkit.value("now", self._clock.now, float), "now")
        return datetime.fromtimestamp(ts, UTC)

    def random(self) -> float:
        """A float in [0, 1); inside a workflow, recorded and replayed."""
        value: float = self._toolkit.drive(self._toolkit.value("random", _random.random, float), "random")
        return value

    async def random_async(self) -> float:
        value: float = await self._toolkit.drive_async(self._toolkit.value("random", _random.random, float), "random")
        return value

    def uuid4(self) -> str:
        """A random UUID string; inside a workflow, recorded and replayed."""
        value: str = self._toolkit.drive(self._toolkit.value("uuid4", lambda: str(_uuid.uuid4()), str), "uuid4")
        return value

    async def uuid4_async(self) -> str:
        value: str = await self._toolkit.drive_async(
            self._toolkit.value("uuid4", lambda: str(_uuid.uuid4()), str), "uuid4"
        )
        return value

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
        self._schedules.pause_schedule(name)

    def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule. The slots that fell while it was paused
        are skipped, whatever its ``missed`` policy (which is for outages,
        not decisions): the first slot after this call fires next. Use
        ``backfill_schedule`` to run skipped slots. Resuming a schedule that
        is not paused does nothing. ScheduleNotFoundError if none."""
        self._schedules.resume_schedule(name)

    def delete_schedule(self, name: str) -> None:
        """Delete the schedule ``name``: no further slot fires; the workflows it
        started are untouched. A schedule declared in code is created again
        (with fresh progress) the next time that code declares it.
        ScheduleNotFoundError if none."""
        self._schedules.delete_schedule(name)

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
        self._life.check_open()
        return read_stats(self._store, self._journal)

    def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the database, by name (``ScheduleInfo``)."""
        return self._schedules.list_schedules()
