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
from .steps import Step, StepSpec
from .transactions import Transaction
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
        # ``policy``: StepSpec's retry and timeout options, in its order.
        return Step(self._step_spec(fn, name, aliases, policy))

    def transaction(
        self, fn: Callable[..., Any], *, name: str | None, aliases: Iterable[str], budget: float | None
    ) -> Transaction[Any, Any]:
        """Register a transaction step: ``fn(db: durably.Tx, ...)``, a plain def.

        Its SQL runs in the journal's batch, in a SAVEPOINT of its own, and
        commits exactly once together with its outcome record. Keep it short:
        it holds the writer for everyone. ``timeout`` (default: the engine's
        ``transaction_timeout``, 10 s): SQLite interrupts its SQL after that
        long, and so do ``cancel()`` of its workflow and ``close()``; the
        step's outcome is then TransactionTimeoutError, its SQL undone.
        ``name`` and ``aliases``: as for ``step``.
        """
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
