"""The Engine: one database file, its registered workflows and steps, and the
client API to start, wait for, inspect, cancel and resume workflows.

No global state: everything hangs off an explicit ``Engine`` instance, so
tests can open as many ``Engine(":memory:")`` as they like. This module is
the table of contents of the API: each public method delegates to the part
that does the work (runtime/lifecycle.py opens and closes, runtime/starts.py
starts, runtime/management.py inspects and changes, runtime/calls.py runs
the durable calls of workflow code (runtime/toolkit.py and
runtime/messaging.py are their primitives; a Registry has the same calls),
queues.py and schedules.py the queues and cron schedules).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from . import errors
from ._signatures import as_engine_enqueue, as_run, as_start, as_start_async, documented
from .clock import Clock
from .handle import StepInfo, WorkflowHandle, WorkflowInfo
from .journal import Journal
from .operations.backup import BackupReport, backup_store
from .queues import Queue, QueueManager
from .registry import Binder, Registry
from .runtime.assembly import assemble, positive
from .runtime.calls import DurableCalls
from .runtime.context import current, in_step
from .runtime.coordination import POLL, Coordinator, RecoveryReport
from .runtime.lifecycle import CLOSE_GRACE, Lifecycle
from .runtime.management import Management
from .runtime.registration import Registrations
from .runtime.retention import GcReport, Retention
from .runtime.starts import Starter, StartOptions
from .runtime.steps import ATTEMPT, Step
from .runtime.transactions import Transaction
from .runtime.workflows import Workflow
from .schedules import Schedule, ScheduleInfo, ScheduleManager
from .store import Tx, _executors
from .store._inspect import Stats, read_stats
from .store.contract import MessageRow, QueueRow

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["Engine", "RecoveryReport", "CLOSE_GRACE", "MAX_RECOVERY_ATTEMPTS"]

# Opens that may find a workflow running and run it again (per workflow).
MAX_RECOVERY_ATTEMPTS = 100


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
            takes over workflows started by the same version (docs/guides/processes.md).
        lease: seconds this process's lease lasts without a heartbeat; past
            it, another process on the file takes its workflows over.
        client: start, enqueue, send, cancel and read only (by workflow
            name, without the workflow code); never runs a workflow.
        schema: with a ``postgresql://`` URL as ``path``, the PostgreSQL
            schema holding durably's tables (default ``"durably"``).
        retention: delete workflows that ended longer ago than this (a
            ``datetime.timedelta`` or seconds), with everything that belongs
            to them, in the background (see ``gc``); None (the default)
            keeps everything. Not on a client engine.
        checkpoints: who copies the SQLite WAL into the main file:
            ``"engine"`` (default) or ``"external"``, for a file another
            program checkpoints (Litestream): a copy it restores then opens
            as it is (docs/operations/backup.md).
        registry: a ``durably.Registry`` (or several) whose declarations this
            engine registers, as ``include`` does (docs/guides/workflows.md,
            "Declare once, bind anywhere").

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
        retention: timedelta | float | None = None,
        checkpoints: str = "engine",
        registry: Registry | Iterable[Registry] = (),
    ) -> None:
        p = assemble(
            path,
            synchronous=synchronous,
            codec=codec,
            workers=workers,
            vfs=vfs,
            check=check,
            clock=clock,
            transaction_timeout=transaction_timeout,
            app_version=app_version,
            lease=lease,
            client=client,
            poll=poll,
            schema=schema,
            retention=retention,
            checkpoints=checkpoints,
        )
        self.path = path
        self._store, self._identity, self._codec, self._clock = p.store, p.identity, p.codec, p.clock
        self._workflows, self._steps, self._waits, self._deadlines = p.workflows, p.steps, p.waits, p.deadlines
        self._runner, self._toolkit, self._messaging, self._starts = p.runner, p.toolkit, p.messaging, p.starts
        self._queues, self._schedules, self._manage, self._life = p.queues, p.schedules, p.manage, p.life
        self._register, self._retention = p.register, p.retention
        # (its parts' methods, not the engine's: no reference cycle through the engine)
        self._calls = DurableCalls(p.toolkit, p.messaging)
        self._binder = Binder(p.runner, p.register, p.queues.queue, p.schedules.schedule, self._calls)
        for each in (registry,) if isinstance(registry, Registry) else registry:
            self.include(each)

    def include(self, registry: Registry) -> Engine:
        """Register ``registry``'s workflows, steps, transaction steps, queues
        and schedules on this engine (and those it declares later); the
        same registry may be bound to other engines too. Calls from workflow
        code resolve against the engine running the workflow. Including a
        registry again does nothing. Returns the engine."""
        if not isinstance(registry, Registry):
            raise errors.UsageError(f"engine.include takes a durably.Registry, not {registry!r}")
        registry.bind(self._binder)
        return self

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

    @documented(Registrations.workflow)
    def workflow(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        max_recovery_attempts: int = MAX_RECOVERY_ATTEMPTS,
        aliases: Iterable[str] = (),
    ) -> Any:
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

    @documented(Registrations.step)
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

    @documented(Registrations.transaction)
    def transaction(
        self, name: str | Callable[..., Any] | None = None, *, timeout: float | None = None, aliases: Iterable[str] = ()
    ) -> Any:
        if callable(name):
            return self.transaction()(name)
        budget = None if timeout is None else positive(timeout, "transaction timeout")
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

    @documented(Lifecycle.close)
    def close(self, timeout: float | None = CLOSE_GRACE) -> list[str]:
        return self._life.close(timeout)

    @documented(Lifecycle.close_async)
    async def close_async(self, timeout: float | None = CLOSE_GRACE) -> list[str]:
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

    @as_start
    @documented(Starter.start)
    def start(
        self, workflow: Any, /, *args: Any, workflow_id: str | None = None, timeout: float | None = None, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        return self._starts.start(workflow, *args, workflow_id=workflow_id, timeout=timeout, **kwargs)

    @as_start_async
    async def start_async(
        self, workflow: Any, /, *args: Any, workflow_id: str | None = None, timeout: float | None = None, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """``start`` for asyncio code. An async workflow runs on the calling loop."""
        return await self._starts.start_async(workflow, *args, workflow_id=workflow_id, timeout=timeout, **kwargs)

    @documented(Starter.start_many)
    def start_many(
        self, workflow: Callable[..., Any] | str, args: Iterable[tuple[Any, ...]], **options: Any
    ) -> list[WorkflowHandle[Any]]:  # options: workflow_ids (Iterable[str] | None), timeout (float | None)
        return self._starts.start_many(workflow, args, **options)

    async def start_many_async(
        self, workflow: Callable[..., Any] | str, args: Iterable[tuple[Any, ...]], **options: Any
    ) -> list[WorkflowHandle[Any]]:
        """``start_many`` for asyncio code (its starts: one commit). Async workflows run on the calling loop."""
        return await self._starts.start_many_async(workflow, args, **options)

    @as_run
    def run(
        self, workflow: Any, /, *args: Any, workflow_id: str | None = None, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Start a workflow and wait for its result (``timeout``: as in ``start``,
        a durable deadline after which it is cancelled)."""
        return self._starts.start(workflow, *args, workflow_id=workflow_id, timeout=timeout, **kwargs).result()

    def options(self, *, workflow_id: str | None = None, timeout: float | None = None) -> StartOptions:
        """``start``, ``start_async`` and ``run`` with these options, as in
        ``engine.options(workflow_id="o-1").start(checkout, "o-1")``: type
        checkers check every argument against the workflow (beside option
        keywords in ``start`` itself, PEP 612 lets them check none)."""
        return StartOptions(self._starts, workflow_id, timeout)

    # -- inspecting and managing (runtime/management.py) ----------------------------

    def handle(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle for an existing workflow (WorkflowNotFoundError if none)."""
        return self._manage.handle(workflow_id)

    @documented(Management.list_workflows)
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

    @documented(Management.waiting_messages)
    def waiting_messages(self, workflow_id: str) -> list[MessageRow]:
        return self._manage.waiting_messages(workflow_id)

    @documented(Management.queue_stats)
    def queue_stats(self) -> list[QueueRow]:
        return self._manage.queue_stats()

    @documented(Management.cancel)
    def cancel(self, workflow_id: str, *, children: bool = True) -> None:
        self._manage.cancel(workflow_id, None, children)

    @documented(Management.fork)
    def fork(self, workflow_id: str, start_step: int = 0, *, new_workflow_id: str | None = None) -> WorkflowHandle[Any]:
        return self._manage.fork(workflow_id, start_step, new_workflow_id)

    @documented(Management.resume)
    def resume(self, workflow_id: str) -> WorkflowHandle[Any]:
        return self._manage.resume(workflow_id)

    # -- durable calls: messages, events, time, values, patches (runtime/calls.py) ----------

    @documented(DurableCalls.send)
    def send(
        self, workflow_id: str, message: Any, topic: str | None = None, idempotency_key: str | None = None
    ) -> None:
        self._calls.send(workflow_id, message, topic, idempotency_key)

    @documented(DurableCalls.send_async)
    async def send_async(
        self, workflow_id: str, message: Any, topic: str | None = None, idempotency_key: str | None = None
    ) -> None:
        await self._calls.send_async(workflow_id, message, topic, idempotency_key)

    @documented(DurableCalls.send_many)
    def send_many(self, messages: Iterable[tuple[Any, ...]]) -> None:
        self._calls.send_many(messages)

    @documented(DurableCalls.send_many_async)
    async def send_many_async(self, messages: Iterable[tuple[Any, ...]]) -> None:
        await self._calls.send_many_async(messages)

    @documented(DurableCalls.recv)
    def recv(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        return self._calls.recv(topic, timeout, type)

    @documented(DurableCalls.recv_async)
    async def recv_async(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        return await self._calls.recv_async(topic, timeout, type)

    @documented(DurableCalls.set_event)
    def set_event(self, key: str, value: Any) -> None:
        self._calls.set_event(key, value)

    @documented(DurableCalls.set_event_async)
    async def set_event_async(self, key: str, value: Any) -> None:
        await self._calls.set_event_async(key, value)

    @documented(DurableCalls.get_event)
    def get_event(self, workflow_id: str, key: str, timeout: float | None = None, type: Any = None) -> Any:
        return self._calls.get_event(workflow_id, key, timeout, type)

    @documented(DurableCalls.get_event_async)
    async def get_event_async(self, workflow_id: str, key: str, timeout: float | None = None, type: Any = None) -> Any:
        return await self._calls.get_event_async(workflow_id, key, timeout, type)

    @documented(DurableCalls.get_all_events)
    def get_all_events(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        return self._calls.get_all_events(workflow_id, type)

    @documented(DurableCalls.get_all_events_async)
    async def get_all_events_async(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        return await self._calls.get_all_events_async(workflow_id, type)

    @documented(DurableCalls.sleep)
    def sleep(self, seconds: float) -> None:
        self._calls.sleep(seconds)

    @documented(DurableCalls.sleep_async)
    async def sleep_async(self, seconds: float) -> None:
        await self._calls.sleep_async(seconds)

    @documented(DurableCalls.now)
    def now(self) -> datetime:
        return self._calls.now()

    @documented(DurableCalls.now_async)
    async def now_async(self) -> datetime:
        return await self._calls.now_async()

    @documented(DurableCalls.random)
    def random(self) -> float:
        return self._calls.random()

    @documented(DurableCalls.random_async)
    async def random_async(self) -> float:
        return await self._calls.random_async()

    @documented(DurableCalls.uuid4)
    def uuid4(self) -> str:
        return self._calls.uuid4()

    @documented(DurableCalls.uuid4_async)
    async def uuid4_async(self) -> str:
        return await self._calls.uuid4_async()

    @documented(DurableCalls.patched)
    def patched(self, change: str) -> bool:
        return self._calls.patched(change)

    @documented(DurableCalls.deprecate_patch)
    def deprecate_patch(self, change: str) -> bool:
        return self._calls.deprecate_patch(change)

    # -- queues (queues.py) ---------------------------------------------------------------

    @documented(QueueManager.queue)
    def queue(self, name: str, *, concurrency: int | None = None, rate_limit: tuple[int, float] | None = None) -> Queue:
        return self._queues.queue(name, concurrency, rate_limit)

    @as_engine_enqueue
    def enqueue(self, queue: str, workflow: Any, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]:
        """``engine.queue(queue).enqueue(...)`` for a declared queue name."""
        declared = self._queues.declared.get(queue) if isinstance(queue, str) else None
        if declared is None:
            raise errors.UsageError(f"no queue named {queue!r} is declared; call engine.queue({queue!r}, ...) first")
        return declared.enqueue(workflow, *args, **kwargs)

    # -- cron schedules (schedules.py) ----------------------------------------------------
    @documented(ScheduleManager.schedule)
    def schedule(
        self, name: str, cron: str, workflow: Callable[..., Any] | str, *, missed: str = "latest", tz: str | None = None
    ) -> Schedule:
        return self._schedules.schedule(name, cron, workflow, missed=missed, tz=tz)

    @documented(ScheduleManager.pause_schedule)
    def pause_schedule(self, name: str) -> None:
        self._schedules.pause_schedule(name)

    @documented(ScheduleManager.resume_schedule)
    def resume_schedule(self, name: str) -> None:
        self._schedules.resume_schedule(name)

    @documented(ScheduleManager.delete_schedule)
    def delete_schedule(self, name: str) -> None:
        self._schedules.delete_schedule(name)

    @documented(ScheduleManager.trigger_schedule)
    def trigger_schedule(self, name: str, *, workflow_id: str | None = None) -> WorkflowHandle[Any]:
        return self._schedules.trigger_schedule(name, workflow_id=workflow_id)

    @documented(ScheduleManager.backfill_schedule)
    def backfill_schedule(self, name: str, start: datetime, end: datetime) -> list[WorkflowHandle[Any]]:
        return self._schedules.backfill_schedule(name, start, end)

    @documented(Retention.gc)
    def gc(self, older_than: timedelta | float, statuses: Iterable[str] | None = None) -> GcReport:
        return self._retention.gc(older_than, statuses)

    @documented(backup_store)
    def backup(self, dest: str) -> BackupReport:
        self._life.check_open()
        return backup_store(self._store, dest)

    def stats(self) -> Stats:
        """A snapshot of the database (``Stats``): workflows by status, step
        rows, messages waiting, events, workflows waiting in each queue, live
        executors, schedules, and this engine's writer counters."""
        self._life.check_open()
        return read_stats(self._store, self._journal)

    @documented(ScheduleManager.list_schedules)
    def list_schedules(self) -> list[ScheduleInfo]:
        return self._schedules.list_schedules()
