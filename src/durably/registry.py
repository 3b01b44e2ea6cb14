"""Declare once, bind anywhere: workflows, steps, transaction steps, queues
and schedules declared without an engine, bound to any number of engines.

A :class:`Registry` has the engine's decorators (``@reg.workflow``,
``@reg.step``, ``@reg.transaction``, ``reg.queue``, ``reg.schedule``); it
only records what was declared. ``Engine(..., registry=reg)`` or
``engine.include(reg)`` registers every declaration on that engine, as its
own decorators would have (and any declared later, while the engine lives).

A declared object is called as the function it wraps. Inside a workflow a
call resolves against the engine *running that workflow* (the workflow's
context names it), never against one captured at import: the application's
engine in production, a test's ``:memory:`` engine with a ``VirtualClock``
in its tests, both in one process without conflict. Outside a workflow a
declared workflow (or queue) runs on the one live engine it is bound to;
bound to none it raises :class:`~durably.errors.UnboundError`, and bound to
several it asks for ``engine.start(wf, ...)`` (which picks the engine).

The durable calls of workflow code are on the registry too
(``reg.sleep``, ``reg.now``, ``reg.patched``, ``reg.send``, ``reg.recv``,
the events, and their ``_async`` forms): each resolves the same way, to the
engine running the calling workflow (outside one: the one open engine
bound), and is that engine's call (``runtime/calls.py``, written once).
What the decorators return is in ``declared.py``.

The engine's own ``Workflow``, ``Step`` and ``Transaction`` objects do the
work: a declared call adds one dictionary lookup in front of them
(``Runner.bound``), and nothing changes on the engine-bound path.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast, overload

from . import _registry, errors
from ._names import check_name
from ._signatures import documented
from .codec import get_codec
from .declared import DeclaredQueue, DeclaredStep, DeclaredTransaction, DeclaredWorkflow, bound_on, one_open
from .queues import Queue
from .runtime.assembly import positive
from .runtime.calls import DurableCalls
from .runtime.context import current
from .runtime.steps import StepSpec
from .runtime.transactions import Transaction
from .runtime.workflows import WorkflowSpec
from .schedules import Schedule as ScheduleDefinition
from .store import Tx

if TYPE_CHECKING:
    from .runtime.registration import Registrations
    from .runtime.runner import Runner
    from .schedules import Schedule

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["Registry", "DeclaredWorkflow", "DeclaredStep", "DeclaredTransaction", "DeclaredQueue"]

# What a declaration's options are checked with (the engine's codec checks nothing they have).
_CHECK = get_codec("json")

# engine.workflow's default (engine.MAX_RECOVERY_ATTEMPTS; not imported: engine imports this module)
_MAX_RECOVERY_ATTEMPTS = 100


class _Schedule:
    """A schedule declared on a registry (written on each engine at bind)."""

    __slots__ = ("name", "cron", "workflow", "missed", "tz")

    def __init__(self, name: str, cron: str, workflow: Any, missed: str, tz: str | None) -> None:
        self.name, self.cron, self.workflow, self.missed, self.tz = name, cron, workflow, missed, tz


class Binder:
    """What a registry binds through: an engine's runner, its registrations,
    its queue manager's ``queue`` and schedule manager's ``schedule``, and
    its durable calls (parts, not the engine: nothing here refers back to
    it). The engine holds its binder; a registry holds it weakly, so a
    test's engine is not kept alive by the module that declared its workflows."""

    __slots__ = ("runner", "register", "queue", "schedule", "calls", "__weakref__")

    def __init__(
        self,
        runner: Runner,
        register: Registrations,
        queue: Callable[..., Queue],
        schedule: Callable[..., Schedule],
        calls: DurableCalls,
    ) -> None:
        self.runner, self.register, self.queue, self.schedule = runner, register, queue, schedule
        self.calls = calls


Declaration = (
    DeclaredWorkflow[..., Any] | DeclaredStep[..., Any] | DeclaredTransaction[..., Any] | DeclaredQueue | _Schedule
)


def _bind_one(engine: Binder, item: Declaration) -> None:
    """Register ``item`` on ``engine`` as its own decorator would."""
    register, runner = engine.register, engine.runner
    bound: Any
    if isinstance(item, DeclaredWorkflow):
        bound = register.workflow(
            item.fn, name=item.name, aliases=item.aliases, max_recovery_attempts=item.max_recovery_attempts
        )
    elif isinstance(item, DeclaredStep):
        bound = register.step(item.fn, name=item.name, aliases=item.aliases, policy=item.policy)
    elif isinstance(item, DeclaredTransaction):
        bound = register.transaction(item.fn, name=item.name, aliases=item.aliases, budget=item.budget)
    elif isinstance(item, DeclaredQueue):
        bound = engine.queue(item.name, item.concurrency, item.rate_limit)
    else:
        engine.schedule(item.name, item.cron, item.workflow, missed=item.missed, tz=item.tz)
        return
    runner.bound[item] = bound
    item._runners.add(runner)


class Registry:
    """Workflows, steps, transaction steps, queues and schedules declared
    without an engine; bind them with ``Engine(..., registry=reg)`` or
    ``engine.include(reg)``, on as many engines as you like.

    The decorators take the options of the engine's (``Engine.workflow``,
    ``step``, ``transaction``, ``queue``, ``schedule``) and check them at
    once; names are the same (``module.qualname`` by default), so a
    workflow recorded by an engine-bound decorator is recovered by its
    declared twin and the reverse.

    The engine's durable calls are here too, for declared workflow code
    (``sleep``, ``now``, ``random``, ``uuid4``, ``patched``,
    ``deprecate_patch``, ``send``, ``send_many``, ``recv``, ``set_event``,
    ``get_event``, ``get_all_events``, and their ``_async`` forms): each is
    the call of the engine running the calling workflow; outside a workflow,
    of the one open engine this registry is bound to (UnboundError with
    none, UsageError with several: call that engine's method instead).

    Example::

        reg = durably.Registry()

        @reg.step()
        def fetch(url: str) -> str: ...

        @reg.workflow()
        def crawl(url: str) -> int:
            reg.sleep(60)  # durable: on the engine running crawl
            return len(fetch(url))

        engine = durably.Engine("app.db", registry=reg)
    """

    __slots__ = ("_declared", "_engines")

    def __init__(self) -> None:
        self._declared: list[Declaration] = []
        self._engines: weakref.WeakSet[Binder] = (
            weakref.WeakSet()
        )  # bound engines (a later declaration binds there too)

    def __repr__(self) -> str:
        return f"<durably.Registry of {len(self._declared)} declarations>"

    def _add(self, item: Declaration) -> None:
        self._declared.append(item)
        for engine in list(self._engines):
            _bind_one(engine, item)

    def bind(self, engine: Binder) -> None:
        """Register every declaration on ``engine`` (``engine.include`` calls
        this with the engine's binder). Binding again to one engine does nothing."""
        runner = engine.runner
        if runner.bound.get(self) is not None:
            return
        for item in self._declared:
            _bind_one(engine, item)
        runner.bound[self] = engine.calls  # what the registry's durable calls resolve to there
        self._engines.add(engine)

    @overload
    def workflow(self, name: Callable[P, T]) -> DeclaredWorkflow[P, T]: ...

    @overload
    def workflow(
        self,
        name: str | None = None,
        *,
        max_recovery_attempts: int = _MAX_RECOVERY_ATTEMPTS,
        aliases: Iterable[str] = (),
    ) -> Callable[[Callable[P, T]], DeclaredWorkflow[P, T]]: ...

    def workflow(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        max_recovery_attempts: int = _MAX_RECOVERY_ATTEMPTS,
        aliases: Iterable[str] = (),
    ) -> Any:
        """Declare a workflow (``Engine.workflow``'s options)."""
        if callable(name):
            return self.workflow()(name)

        def declare(fn: Callable[P, T]) -> DeclaredWorkflow[P, T]:
            wname, more = _registry.names_of(fn, name, aliases, "workflow")
            WorkflowSpec(fn, wname, _CHECK, max_recovery_attempts)  # the options checked now
            item = DeclaredWorkflow(fn, wname, more, max_recovery_attempts)
            self._add(item)
            return item

        return declare

    @overload
    def step(self, name: Callable[P, T]) -> DeclaredStep[P, T]: ...

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
    ) -> Callable[[Callable[P, T]], DeclaredStep[P, T]]: ...

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
        """Declare a step (``Engine.step``'s options)."""
        if callable(name):
            return self.step()(name)
        policy = (retries, backoff, initial_delay, max_delay, retry_on, should_retry, timeout, jitter, retry_deadline)

        def declare(fn: Callable[P, T]) -> DeclaredStep[P, T]:
            sname, more = _step_names(fn, name, aliases)
            StepSpec(fn, sname, _CHECK, *policy)  # the policy checked now
            item = DeclaredStep(fn, sname, more, policy)
            self._add(item)
            return item

        return declare

    @overload
    def transaction(self, name: Callable[Concatenate[Tx, P], T]) -> DeclaredTransaction[P, T]: ...

    @overload
    def transaction(
        self, name: str | None = None, *, timeout: float | None = None, aliases: Iterable[str] = ()
    ) -> Callable[[Callable[Concatenate[Tx, P], T]], DeclaredTransaction[P, T]]: ...

    def transaction(
        self, name: str | Callable[..., Any] | None = None, *, timeout: float | None = None, aliases: Iterable[str] = ()
    ) -> Any:
        """Declare a transaction step (``Engine.transaction``'s options)."""
        if callable(name):
            return self.transaction()(name)
        budget = None if timeout is None else positive(timeout, "transaction timeout")

        def declare(fn: Callable[Concatenate[Tx, P], T]) -> DeclaredTransaction[P, T]:
            sname, more = _step_names(fn, name, aliases)
            Transaction(StepSpec(fn, sname, _CHECK, 0, 2.0, 0.0, 0.0))  # a plain def, or UsageError now
            item = DeclaredTransaction(fn, sname, more, budget)
            self._add(item)
            return item

        return declare

    def queue(
        self, name: str, *, concurrency: int | None = None, rate_limit: tuple[int, float] | None = None
    ) -> DeclaredQueue:
        """Declare a queue (``Engine.queue``'s options); its ``enqueue`` puts a
        workflow on the queue of that name of the engine it resolves to."""
        Queue(cast(Any, None), name, concurrency, rate_limit)  # the options checked now
        item = DeclaredQueue(name, concurrency, rate_limit)
        self._add(item)
        return item

    def schedule(
        self,
        name: str,
        cron: str,
        workflow: DeclaredWorkflow[..., Any],
        *,
        missed: str = "latest",
        tz: str | None = None,
    ) -> None:
        """Declare a cron schedule of a declared workflow (``Engine.schedule``'s
        options), written on each engine this registry is bound to."""
        if not isinstance(workflow, DeclaredWorkflow) or workflow not in self._declared:
            raise errors.UsageError(
                f"schedule {name!r}: {workflow!r} is not a workflow declared on this registry (@registry.workflow)"
            )
        check_name(name, "schedule name")
        ScheduleDefinition(name, cron, "", missed, tz)  # the definition checked now
        self._add(_Schedule(name, cron, workflow, missed, tz))

    # -- the durable calls of workflow code (runtime/calls.py), on the engine they resolve to --

    def _calls(self, call: str) -> DurableCalls:
        """The durable calls of the engine running the calling workflow (or
        step body); outside a workflow, of the one open engine bound."""
        what = f"registry.{call}()"
        ctx = current.get()
        if ctx is not None:
            calls: DurableCalls = bound_on(ctx.runner, self, what)
            return calls
        runner = one_open(what, (e.runner for e in list(self._engines)), f"call engine.{call}() on it")
        return cast(DurableCalls, runner.bound[self])

    @documented(DurableCalls.send)
    def send(
        self, workflow_id: str, message: Any, topic: str | None = None, idempotency_key: str | None = None
    ) -> None:
        self._calls("send").send(workflow_id, message, topic, idempotency_key)

    @documented(DurableCalls.send_async)
    async def send_async(
        self, workflow_id: str, message: Any, topic: str | None = None, idempotency_key: str | None = None
    ) -> None:
        await self._calls("send_async").send_async(workflow_id, message, topic, idempotency_key)

    @documented(DurableCalls.send_many)
    def send_many(self, messages: Iterable[tuple[Any, ...]]) -> None:
        self._calls("send_many").send_many(messages)

    @documented(DurableCalls.send_many_async)
    async def send_many_async(self, messages: Iterable[tuple[Any, ...]]) -> None:
        await self._calls("send_many_async").send_many_async(messages)

    @documented(DurableCalls.recv)
    def recv(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        return self._calls("recv").recv(topic, timeout, type)

    @documented(DurableCalls.recv_async)
    async def recv_async(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        return await self._calls("recv_async").recv_async(topic, timeout, type)

    @documented(DurableCalls.set_event)
    def set_event(self, key: str, value: Any) -> None:
        self._calls("set_event").set_event(key, value)

    @documented(DurableCalls.set_event_async)
    async def set_event_async(self, key: str, value: Any) -> None:
        await self._calls("set_event_async").set_event_async(key, value)

    @documented(DurableCalls.get_event)
    def get_event(self, workflow_id: str, key: str, timeout: float | None = None, type: Any = None) -> Any:
        return self._calls("get_event").get_event(workflow_id, key, timeout, type)

    @documented(DurableCalls.get_event_async)
    async def get_event_async(self, workflow_id: str, key: str, timeout: float | None = None, type: Any = None) -> Any:
        return await self._calls("get_event_async").get_event_async(workflow_id, key, timeout, type)

    @documented(DurableCalls.get_all_events)
    def get_all_events(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        return self._calls("get_all_events").get_all_events(workflow_id, type)

    @documented(DurableCalls.get_all_events_async)
    async def get_all_events_async(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        return await self._calls("get_all_events_async").get_all_events_async(workflow_id, type)

    @documented(DurableCalls.sleep)
    def sleep(self, seconds: float) -> None:
        self._calls("sleep").sleep(seconds)

    @documented(DurableCalls.sleep_async)
    async def sleep_async(self, seconds: float) -> None:
        await self._calls("sleep_async").sleep_async(seconds)

    @documented(DurableCalls.now)
    def now(self) -> datetime:
        return self._calls("now").now()

    @documented(DurableCalls.now_async)
    async def now_async(self) -> datetime:
        return await self._calls("now_async").now_async()

    @documented(DurableCalls.random)
    def random(self) -> float:
        return self._calls("random").random()

    @documented(DurableCalls.random_async)
    async def random_async(self) -> float:
        return await self._calls("random_async").random_async()

    @documented(DurableCalls.uuid4)
    def uuid4(self) -> str:
        return self._calls("uuid4").uuid4()

    @documented(DurableCalls.uuid4_async)
    async def uuid4_async(self) -> str:
        return await self._calls("uuid4_async").uuid4_async()

    @documented(DurableCalls.patched)
    def patched(self, change: str) -> bool:
        return self._calls("patched").patched(change)

    @documented(DurableCalls.deprecate_patch)
    def deprecate_patch(self, change: str) -> bool:
        return self._calls("deprecate_patch").deprecate_patch(change)


def _step_names(fn: Callable[..., Any], name: str | None, aliases: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    if isinstance(fn, (DeclaredStep, DeclaredTransaction)) or getattr(fn, "__durably_step__", None) is not None:
        raise errors.UsageError(
            f"{fn!r} is already a durably step or transaction step; decorate the plain function once"
        )
    return _registry.names_of(fn, name, aliases, "step")
