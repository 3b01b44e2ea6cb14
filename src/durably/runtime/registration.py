"""Registering workflow and step functions: what ``Engine.workflow``, ``step``
and ``transaction`` do once the decorator's options are read.

A registration names the function (durably/_names.py), records its spec under
the name and its aliases (durably/_registry.py), tells replay which recorded
names the new one accepts, and wraps the function in the object the decorator
returns (``Workflow``, ``Step``, ``Transaction``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import _registry, errors
from ..codec import Codec
from .steps import Step, StepSpec, Transaction
from .workflows import Workflow, WorkflowSpec

Run = Callable[[WorkflowSpec, tuple[Any, ...], dict[str, Any]], Any]
StartAsync = Callable[..., Any]


def _not_a_step_yet(fn: Callable[..., Any]) -> None:
    """``@step`` over ``@transaction`` (or the reverse, or twice) would journal
    one call as two steps: refused."""
    inner = getattr(fn, "__durably_step__", None)
    if inner is not None:
        raise errors.UsageError(
            f"{inner.name!r} is already a durably step or transaction step; decorate the plain function once"
        )


class Registrations:
    """The engine's workflow and step specs (each table its own namespace of
    names and aliases) and the replay's table of accepted step names."""

    __slots__ = ("workflows", "steps", "_codec", "_accepted", "_run_inline", "_start_async")

    def __init__(
        self,
        codec: Codec,
        workflows: dict[str, WorkflowSpec],
        steps: dict[str, StepSpec],
        accepted: dict[str, frozenset[str]],
        run_inline: Run,
        start_async: StartAsync,
    ) -> None:
        self.workflows, self.steps, self._codec = workflows, steps, codec
        self._accepted, self._run_inline, self._start_async = accepted, run_inline, start_async

    def workflow(
        self, fn: Callable[..., Any], *, name: str | None, aliases: Iterable[str], max_recovery_attempts: int
    ) -> Workflow[Any, Any]:
        wname, more = _registry.names_of(fn, name, aliases, "workflow")
        spec = WorkflowSpec(fn, wname, self._codec, max_recovery_attempts)
        old = _registry.register(self.workflows, spec, more, "workflow")
        # A parent's journal records the child starts under the child's name.
        self._accept(old, spec.name, more, ("start:", "enqueue:"))
        if not spec.is_async:
            return Workflow(spec, self._run_inline)  # called directly: runs in the caller's thread
        start_async = self._start_async

        async def start_and_wait(spec: WorkflowSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            handle = await start_async(spec.fn, *args, **kwargs)
            return await handle.result_async()

        return Workflow(spec, start_and_wait)

    def step(
        self, fn: Callable[..., Any], *, name: str | None, aliases: Iterable[str], policy: tuple[Any, ...]
    ) -> Step[Any, Any]:
        """``policy``: StepSpec's retry and timeout options, in its order."""
        return Step(self._step_spec(fn, name, aliases, policy))

    def transaction(
        self, fn: Callable[..., Any], *, name: str | None, aliases: Iterable[str], budget: float | None
    ) -> Transaction[Any, Any]:
        return Transaction(self._step_spec(fn, name, aliases, (0, 2.0, 0.0, 0.0)), budget)

    def _step_spec(
        self, fn: Callable[..., Any], name: str | None, aliases: Iterable[str], policy: tuple[Any, ...]
    ) -> StepSpec:
        _not_a_step_yet(fn)
        sname, more = _registry.names_of(fn, name, aliases, "step")
        spec = StepSpec(fn, sname, self._codec, *policy)
        self._accept(_registry.register(self.steps, spec, more, "step"), sname, more, ("",))
        return spec

    def _accept(self, old: Any, name: str, aliases: tuple[str, ...], prefixes: tuple[str, ...]) -> None:
        """Tell replay which recorded step names the step ``name`` accepts."""
        for prefix in prefixes:
            if old is not None:
                self._accepted.pop(prefix + old.name, None)
            if aliases:
                self._accepted[prefix + name] = frozenset(prefix + a for a in aliases)
