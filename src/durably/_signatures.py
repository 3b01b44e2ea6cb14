"""The typed signatures of the calls that start a workflow.

``engine.start(wf, *args, **kwargs)`` checks ``args`` and ``kwargs``
against ``wf``'s parameters (PEP 612 ``ParamSpec``) and returns a
``WorkflowHandle[R]`` whose ``result()`` is ``wf``'s return type (the
awaited one for an async workflow); a start by name returns
``WorkflowHandle[Any]``. PEP 612 forbids keyword parameters between
``*args: P.args`` and ``**kwargs: P.kwargs``, so a start that passes an
option (``workflow_id=``, ``timeout=``; a queue's ``priority=`` ...) matches
an overload that still types the result but no longer checks the
workflow's own arguments; ``engine.options(workflow_id=..., timeout=...)
.start(wf, *args, **kwargs)`` takes the options apart and checks them all.

Each signature is a callback Protocol the engine's method is declared as
(``@as_start`` and the like): nothing changes at run time, the method stays
the plain function it is. mypy reports the option overloads as never
matched (it takes ``*args: P.args`` as broader than any keyword); they are
matched, as tests/typing/check_types.py pins, hence pyproject.toml's
``disable_error_code`` for this module (that one code, here only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

if TYPE_CHECKING:
    from .handle import WorkflowHandle

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


# One overload a line: a table of signatures, easier to compare than formatted.
# fmt: off
class Start(Protocol):
    """``Engine.start``: the workflow's arguments checked, its result type carried by the handle."""

    @overload
    def __call__(self, workflow: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, timeout: float | None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, timeout: float | None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: str, /, *args: Any, workflow_id: str | None = None, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[Any]: ...


class StartAsync(Protocol):
    """``Engine.start_async``."""

    @overload
    def __call__(self, workflow: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, timeout: float | None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, timeout: float | None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: str, /, *args: Any, workflow_id: str | None = None, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[Any]]: ...


class Run(Protocol):
    """``Engine.run``: the workflow's result."""

    @overload
    def __call__(self, workflow: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, workflow: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None, timeout: float | None = None, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None, timeout: float | None = None, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, timeout: float | None, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, timeout: float | None, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, workflow: str, /, *args: Any, workflow_id: str | None = None, timeout: float | None = None, **kwargs: Any) -> Any: ...


class Enqueue(Protocol):
    """``Queue.enqueue``."""

    @overload
    def __call__(self, workflow: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: str, /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[Any]: ...


class EnqueueAsync(Protocol):
    """``Queue.enqueue_async``."""

    @overload
    def __call__(self, workflow: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: str, /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[Any]]: ...


class EngineEnqueue(Protocol):
    """``Engine.enqueue(queue_name, workflow, ...)``."""

    @overload
    def __call__(self, queue: str, workflow: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., Awaitable[R]], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: Callable[..., R], /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None, **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, queue: str, workflow: str, /, *args: Any, workflow_id: str | None = None, priority: int = 0, dedup_key: str | None = None, delay: float = 0.0, timeout: float | None = None, **kwargs: Any) -> WorkflowHandle[Any]: ...


class Checked(Protocol):
    """``engine.options(...).start``: the workflow's arguments checked (no option keyword left in the call)."""

    @overload
    def __call__(self, workflow: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]: ...
    @overload
    def __call__(self, workflow: str, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]: ...


class CheckedAsync(Protocol):
    """``engine.options(...).start_async``."""

    @overload
    def __call__(self, workflow: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...
    @overload
    def __call__(self, workflow: str, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, WorkflowHandle[Any]]: ...


class CheckedRun(Protocol):
    """``engine.options(...).run``."""

    @overload
    def __call__(self, workflow: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, workflow: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, workflow: str, /, *args: Any, **kwargs: Any) -> Any: ...

# fmt: on


def documented(by: Callable[..., Any]) -> Callable[[F], F]:
    """The method's reference doc is the one of the part doing the work
    (written once, beside the code it describes): ``help()`` shows it here."""

    def copy(method: F) -> F:
        method.__doc__ = by.__doc__
        return method

    return copy


def as_start(method: Callable[..., Any]) -> Start:
    """Declare ``method`` as a ``Start`` (for type checkers only)."""
    return cast(Start, method)


def as_start_async(method: Callable[..., Any]) -> StartAsync:
    return cast(StartAsync, method)


def as_run(method: Callable[..., Any]) -> Run:
    return cast(Run, method)


def as_enqueue(method: Callable[..., Any]) -> Enqueue:
    return cast(Enqueue, method)


def as_enqueue_async(method: Callable[..., Any]) -> EnqueueAsync:
    return cast(EnqueueAsync, method)


def as_engine_enqueue(method: Callable[..., Any]) -> EngineEnqueue:
    return cast(EngineEnqueue, method)


def as_checked(method: Callable[..., Any]) -> Checked:
    return cast(Checked, method)


def as_checked_async(method: Callable[..., Any]) -> CheckedAsync:
    return cast(CheckedAsync, method)


def as_checked_run(method: Callable[..., Any]) -> CheckedRun:
    return cast(CheckedRun, method)
