"""What a :class:`~durably.Registry`'s decorators return: a declared
workflow, step, transaction step or queue, called as the function (or
queue) it stands for, resolved at each call against an engine.

Inside a workflow a call resolves against the engine running it (the
workflow's context names its runner, and ``Runner.bound`` maps each
declaration bound to that engine to its engine object); outside a workflow,
against the one open engine it is bound to (``one_open``).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Iterable
from types import MethodType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast

from . import errors
from ._signatures import as_enqueue, as_enqueue_async
from .queues import Queue
from .runtime.context import current
from .runtime.steps import as_awaitable
from .runtime.workflows import _mark_coroutine_function
from .store import Tx

if TYPE_CHECKING:
    from .handle import WorkflowHandle
    from .runtime.runner import Runner

P = ParamSpec("P")
T_co = TypeVar("T_co", covariant=True)

__all__ = ["DeclaredWorkflow", "DeclaredStep", "DeclaredTransaction", "DeclaredQueue"]

_BIND = "engine.include(registry) (or Engine(..., registry=registry))"


def bound_on(runner: Runner, key: object, what: str) -> Any:
    """What ``key`` (a declaration, a registry) is on ``runner``'s engine, or
    UnboundError: that engine runs the calling workflow but does not include it."""
    bound = runner.bound.get(key)
    if bound is None:
        raise errors.UnboundError(
            f"{what} is not bound to the engine running this workflow; bind its registry with {_BIND}",
            what=what,
        )
    return bound


def one_open(what: str, runners: Iterable[Runner], choose: str) -> Runner:
    """Outside a workflow, the one open engine (its runner) among those
    ``what`` is bound to: UnboundError with none, UsageError with several
    (``choose`` says how to name one)."""
    live = [r for r in list(runners) if _is_open(r)]
    if not live:
        raise errors.UnboundError(
            f"{what} is declared on a durably.Registry that no open engine includes; bind it with {_BIND} "
            "and open it before calling it",
            what=what,
        )
    if len(live) > 1:
        raise errors.UsageError(f"{what} is bound to {len(live)} engines; outside a workflow say which one: {choose}")
    return live[0]


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
        return bound_on(runner, self, self._what)

    def _outside(self) -> Any:
        """The engine object to use outside a workflow: the one engine bound."""
        runner = one_open(
            self._what, self._runners, "engine.start(workflow, ...), engine.run(...), engine.enqueue(queue, ...)"
        )
        return runner.bound[self]


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


def _is_open(runner: Runner) -> bool:
    try:
        runner.check_open()
    except errors.DurablyError:
        return False
    return True


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)
