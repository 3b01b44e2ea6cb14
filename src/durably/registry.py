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

The engine's own ``Workflow``, ``Step`` and ``Transaction`` objects do the
work: a declared call adds one dictionary lookup in front of them
(``Runner.bound``), and nothing changes on the engine-bound path.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Iterable
from types import MethodType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from . import _registry, errors
from ._names import check_name
from ._signatures import as_enqueue, as_enqueue_async
from .codec import get_codec
from .queues import Queue
from .runtime.assembly import positive
from .runtime.context import current
from .runtime.steps import StepSpec, as_awaitable
from .runtime.transactions import Transaction
from .runtime.workflows import WorkflowSpec, _mark_coroutine_function
from .schedules import Schedule as ScheduleDefinition
from .store import Tx

if TYPE_CHECKING:
    from .handle import WorkflowHandle
    from .runtime.registration import Registrations
    from .runtime.runner import Runner
    from .schedules import Schedule

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

__all__ = ["Registry", "DeclaredWorkflow", "DeclaredStep", "DeclaredTransaction", "DeclaredQueue"]

# What a declaration's options are checked with (the engine's codec checks nothing they have).
_CHECK = get_codec("json")

# engine.workflow's default (engine.MAX_RECOVERY_ATTEMPTS; not imported: engine imports this module)
_MAX_RECOVERY_ATTEMPTS = 100


class _Declared:
    """What every declaration has: the function (or queue name), its
    options, and the engines it is bound to (weakly: a test's engine is not
    kept alive by the module that declared its workflows)."""

    __slots__ = ("_what", "_runners", "__weakref__")

    def __init__(self, what: str) -> None:
        self._what = what
        self._runners: weakref.WeakSet[Runner] = weakref.WeakSet()

    def _bound_to(self, runner: Runner) -> Any:
        """The engine object this declaration is on ``runner``'s engine, or UnboundError."""
        bound = runner.bound.get(self)
        if bound is None:
            raise errors.UnboundError(
                f"{self._what} is not bound to the engine running this workflow; bind its registry with "
                "engine.include(registry) (or Engine(..., registry=registry))",
                what=self._what,
            )
        return bound

    def _outside(self) -> Any:
        """The engine object to use outside a workflow: the one engine bound."""
        runners = [r for r in list(self._runners) if _is_open(r)]
        if not runners:
            raise errors.UnboundError(
                f"{self._what} is declared on a durably.Registry that no open engine includes; bind it with "
                "engine.include(registry) (or Engine(..., registry=registry)) and open it before calling it",
                what=self._what,
            )
        if len(runners) > 1:
            raise errors.UsageError(
                f"{self._what} is bound to {len(runners)} engines; outside a workflow say which one runs it "
                "(engine.start(workflow, ...), engine.run(...), engine.enqueue(queue, ...))"
            )
        return runners[0].bound[self]


class _DeclaredFunction(_Declared):
    """A declared workflow, step or transaction step: it looks like the
    function it wraps (name, docstring, signature), binds as a method in a
    class body and pickles by reference, as the engine's objects do."""

    __slots__ = ("fn", "name", "aliases", "__dict__")
    _kind = "function"

    def __init__(self, fn: Callable[..., Any], name: str, aliases: tuple[str, ...]) -> None:
        super().__init__(f"{self._kind} {name!r}")
        self.fn, self.name, self.aliases = fn, name, aliases
        functools.update_wrapper(cast(Any, self), fn)  # (callable: each subclass has its __call__)
        if _is_async(fn):  # its call returns an awaitable, as the coroutine function did
            _mark_coroutine_function(self)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else MethodType(cast(Any, self), obj)

    def __reduce__(self) -> str:
        return str(self.__dict__["__qualname__"])  # pickled by reference, as the function it replaces was

    def __repr__(self) -> str:
        return f"<durably declared {self._kind} {self.name!r}>"


class DeclaredWorkflow(_DeclaredFunction, Generic[P, T_co]):
    """What ``@registry.workflow`` returns: call it as the function it wraps.

    In a workflow it starts a child on the engine running that workflow and
    waits for it; outside one it runs on the engine its registry is bound
    to. ``engine.start(wf, ...)`` and ``engine.run`` accept it on any engine
    that includes its registry."""

    __slots__ = ("__durably_declared__", "max_recovery_attempts", "is_async")
    _kind = "workflow"

    def __init__(self, fn: Callable[P, T_co], name: str, aliases: tuple[str, ...], max_recovery_attempts: int) -> None:
        super().__init__(fn, name, aliases)
        self.__durably_declared__ = self  # engine.start's look-up (Starter.spec)
        self.max_recovery_attempts = max_recovery_attempts
        self.is_async = _is_async(fn)

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T_co:
        ctx = current.get()
        bound = self._outside() if ctx is None else self._bound_to(ctx.runner)
        result: T_co = bound(*args, **kwargs)
        return result


class DeclaredStep(_DeclaredFunction, Generic[P, T_co]):
    """What ``@registry.step`` returns: in a workflow, the step of the engine
    running it; outside a workflow (or in a step body), a plain call."""

    __slots__ = ("policy",)
    _kind = "step"

    def __init__(self, fn: Callable[P, T_co], name: str, aliases: tuple[str, ...], policy: tuple[Any, ...]) -> None:
        super().__init__(fn, name, aliases)
        self.policy = policy

    def aio(self, /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T_co]:
        """The call from an async workflow, typed as awaitable (``Step.aio``)."""
        return as_awaitable(self(*args, **kwargs))

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T_co:
        ctx = current.get()
        if ctx is None:
            plain: T_co = self.fn(*args, **kwargs)  # a plain call, as an engine's step outside a workflow
            return plain
        result: T_co = self._bound_to(ctx.runner)(*args, **kwargs)
        return result


class DeclaredTransaction(_DeclaredFunction, Generic[P, T_co]):
    """What ``@registry.transaction`` returns: the transaction step of the
    engine running the calling workflow (``db`` passed first by it)."""

    __slots__ = ("budget",)
    _kind = "transaction step"

    def __init__(
        self, fn: Callable[Concatenate[Tx, P], T_co], name: str, aliases: tuple[str, ...], budget: float | None
    ) -> None:
        super().__init__(fn, name, aliases)
        self.budget = budget

    def aio(self, /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T_co]:
        """The call from an async workflow, typed as awaitable (``Step.aio``)."""
        return as_awaitable(self(*args, **kwargs))

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T_co:
        ctx = current.get()
        if ctx is None:
            raise errors.UsageError(
                f"transaction step {self.name!r} was called outside a workflow; it needs the engine's "
                "writer (call it from a workflow, or wrap it in one)"
            )
        result: T_co = self._bound_to(ctx.runner)(*args, **kwargs)
        return result


class DeclaredQueue(_Declared):
    """What ``registry.queue(name, ...)`` returns: ``enqueue`` puts a
    workflow on the queue of that name of the engine running the calling
    workflow (outside a workflow: of the one engine bound)."""

    __slots__ = ("name", "concurrency", "rate_limit")

    def __init__(self, name: str, concurrency: int | None, rate_limit: tuple[int, float] | None) -> None:
        super().__init__(f"queue {name!r}")
        self.name, self.concurrency, self.rate_limit = name, concurrency, rate_limit

    def __repr__(self) -> str:
        return f"<durably declared queue {self.name!r}>"

    def _here(self) -> Queue:
        ctx = current.get()
        bound: Queue = self._outside() if ctx is None else self._bound_to(ctx.runner)
        return bound

    @as_enqueue
    def enqueue(self, workflow: Any, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]:
        """``Queue.enqueue`` on the queue this resolves to."""
        return self._here().enqueue(workflow, *args, **kwargs)

    @as_enqueue_async
    async def enqueue_async(self, workflow: Any, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]:
        """``Queue.enqueue_async`` on the queue this resolves to."""
        return await self._here().enqueue_async(workflow, *args, **kwargs)


class _Schedule:
    """A schedule declared on a registry (written on each engine at bind)."""

    __slots__ = ("name", "cron", "workflow", "missed", "tz")

    def __init__(self, name: str, cron: str, workflow: Any, missed: str, tz: str | None) -> None:
        self.name, self.cron, self.workflow, self.missed, self.tz = name, cron, workflow, missed, tz


class Binder:
    """What a registry binds through: an engine's runner, its registrations,
    and its queue manager's ``queue`` and schedule manager's ``schedule``
    (parts, not the engine: nothing here refers back to it). The engine
    holds its binder; a registry holds it weakly, so a test's engine is not
    kept alive by the module that declared its workflows."""

    __slots__ = ("runner", "register", "queue", "schedule", "__weakref__")

    def __init__(
        self,
        runner: Runner,
        register: Registrations,
        queue: Callable[..., Queue],
        schedule: Callable[..., Schedule],
    ) -> None:
        self.runner, self.register, self.queue, self.schedule = runner, register, queue, schedule


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


def _is_open(runner: Runner) -> bool:
    try:
        runner.check_open()
    except errors.DurablyError:
        return False
    return True


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)


class Registry:
    """Workflows, steps, transaction steps, queues and schedules declared
    without an engine; bind them with ``Engine(..., registry=reg)`` or
    ``engine.include(reg)``, on as many engines as you like.

    The decorators take the options of the engine's (``Engine.workflow``,
    ``step``, ``transaction``, ``queue``, ``schedule``) and check them at
    once; names are the same (``module.qualname`` by default), so a
    workflow recorded by an engine-bound decorator is recovered by its
    declared twin and the reverse.

    Example::

        reg = durably.Registry()

        @reg.step()
        def fetch(url: str) -> str: ...

        @reg.workflow()
        def crawl(url: str) -> int:
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
        runner.bound[self] = self
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


def _step_names(fn: Callable[..., Any], name: str | None, aliases: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    if isinstance(fn, (DeclaredStep, DeclaredTransaction)) or getattr(fn, "__durably_step__", None) is not None:
        raise errors.UsageError(
            f"{fn!r} is already a durably step or transaction step; decorate the plain function once"
        )
    return _registry.names_of(fn, name, aliases, "step")
