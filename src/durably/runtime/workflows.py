"""Workflow specs and the runner that executes one workflow to an outcome.

The runner sets the context, calls the user function, and journals the
outcome: SUCCESS with the encoded result, ERROR with the encoded exception,
nothing for a cancelled one (the cancel already wrote CANCELLED), a parked
reason for a NonDeterminismError, and nothing at all when the engine is
closing or its writer failed (the workflow stays PENDING and is recovered at
the next open).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import sys
import threading
from collections.abc import Callable
from types import MethodType
from typing import Any, Generic, ParamSpec, TypeVar

from .. import _crash, _logs, errors
from .. import _records as R
from ..codec import Codec, annotations_of, encode_error, inputs_plan
from ..journal import Record
from .context import EngineShutdown, Fenced, WorkflowContext, current, settle_for

log = _logs.get("durably.workflows")

P = ParamSpec("P")
T = TypeVar("T", covariant=True)  # a Workflow[P, int] is a Workflow[P, object]


class WorkflowSpec:
    """A registered workflow function."""

    __slots__ = (
        "fn",
        "name",
        "signature",
        "hints",
        "plan",
        "decode",
        "is_async",
        "max_recovery_attempts",
        "inputs_where",
        "result_where",
    )

    def __init__(self, fn: Callable[..., Any], name: str, codec: Codec, max_recovery_attempts: int = 100) -> None:
        if (
            isinstance(max_recovery_attempts, bool)
            or not isinstance(max_recovery_attempts, int)
            or max_recovery_attempts < 0
        ):
            raise errors.UsageError(
                f"workflow {name!r}: max_recovery_attempts must be an int >= 0, not {max_recovery_attempts!r}"
            )
        self.max_recovery_attempts = max_recovery_attempts
        self.fn = fn
        self.name = name
        # Where its inputs and result come from, for error messages (made once, not at each start).
        self.inputs_where = f"inputs of workflow {name!r}"
        self.result_where = f"workflow {name!r} result"
        self.signature = inspect.signature(fn)
        self.hints = annotations_of(fn)
        self.plan = inputs_plan(self.signature, self.hints)  # decode_inputs' shortcut
        self.decode = codec.decoder(self.hints.get("return", Any))
        # (a Workflow object registered again, on another engine, is async as its function is)
        self.is_async = inspect.iscoroutinefunction(fn) or (isinstance(fn, Workflow) and fn.is_async)


class Workflow(Generic[P, T]):
    """What ``@engine.workflow`` returns: call it as the function it wraps.

    Called from outside a workflow it starts a workflow and waits for its
    result (an async workflow: the call returns an awaitable); called inside
    one it starts a child workflow and waits for it. ``run(spec, args,
    kwargs)`` is the engine's way to do that for this kind of workflow.
    """

    __slots__ = ("__durably_workflow__", "_spec", "_run", "__dict__")

    def __init__(self, spec: WorkflowSpec, run: Callable[[WorkflowSpec, tuple[Any, ...], dict[str, Any]], Any]) -> None:
        self._spec = self.__durably_workflow__ = spec  # what the engine and tests look up
        self._run = run
        functools.update_wrapper(self, spec.fn)
        if spec.is_async:  # an async workflow's call returns an awaitable, as the coroutine function did
            _mark_coroutine_function(self)

    @property
    def is_async(self) -> bool:
        return self._spec.is_async

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        """A workflow defined in a class body is a method, as its function was."""
        return self if obj is None else MethodType(self, obj)

    def __reduce__(self) -> str:
        return str(self.__dict__["__qualname__"])  # pickled by reference, as the function it replaces was

    def __repr__(self) -> str:
        return f"<durably workflow {self._spec.name!r}>"

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = self._run(self._spec, args, kwargs)
        return result


def _mark_coroutine_function(obj: Any) -> None:
    """``inspect.iscoroutinefunction(obj)`` true on Python 3.12+ (and
    ``asyncio.iscoroutinefunction`` on 3.11), as for the ``async def`` that
    ``engine.workflow`` returned before it returned a Workflow."""
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        mark(obj)
    else:
        obj._is_coroutine = getattr(asyncio.coroutines, "_is_coroutine", None)


class Outcome:
    """What the runner will journal for a finished workflow run."""

    __slots__ = ("status", "output", "error")

    def __init__(self, status: str | None, output: Any = None, error: Any = None) -> None:
        self.status = status  # None: write nothing (cancelled, abandoned)
        self.output = output
        self.error = error


def _classify(
    ctx: WorkflowContext, spec: WorkflowSpec, result: Any, exc: BaseException | None
) -> Outcome | errors.NonDeterminismError:
    if isinstance(ctx.interrupt, Fenced):
        return Outcome(None)  # another executor owns it now
    if ctx.parked is not None:
        return ctx.parked  # even if user code swallowed the NonDeterminismError
    if exc is None:
        try:
            output = ctx.codec.encode(result, spec.result_where) if result is not None else None
        except errors.SerializationError as ser:
            return Outcome("ERROR", error=encode_error(ser))
        return Outcome("SUCCESS", output=output)
    if isinstance(exc, errors.WorkflowCancelled):
        return Outcome(None)
    if isinstance(exc, (EngineShutdown, asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
        return Outcome(None)
    if not ctx.journal.running or ctx.runner.closing:
        return Outcome(None)  # cannot record anything: stays PENDING
    return Outcome("ERROR", error=encode_error(exc))


def _records_for(ctx: WorkflowContext, outcome: Outcome | errors.NonDeterminismError) -> Record | None:
    if isinstance(outcome, errors.NonDeterminismError):
        ctx.runner.counters.parked += 1
        where = getattr(outcome, "position", None)  # (DurablyError fields, set from _fields)
        called = getattr(outcome, "called", None)
        log.warning(
            "durably: workflow %r (%s) parked at step %s: the code called %r where its journal recorded %r; "
            "it stays PENDING (restore the old code path, then resume it)",
            ctx.workflow_id,
            ctx.name,
            where,
            called,
            getattr(outcome, "recorded", None),
            extra=_logs.fields("workflow.parked", ctx.workflow_id, ctx.name, called, where),
        )
        return Record(R.WRITE, ("park", (str(outcome), ctx.workflow_id)))
    if outcome.status is None:
        return None
    if outcome.status == "ERROR":
        # Once per workflow that fails (never per step): the error is its outcome.
        log.warning(
            "durably: workflow %r (%s) ended in ERROR: %s",
            ctx.workflow_id,
            ctx.name,
            _brief(outcome.error),
            extra=_logs.fields("workflow.failed", ctx.workflow_id, ctx.name, step_position=ctx.position),
        )
    return Record(R.COMPLETE, (outcome.status, outcome.output, outcome.error, ctx.workflow_id))


def _brief(error: Any) -> str:
    """``Type: message`` of an encoded error (codec.encode_error)."""
    try:
        doc = json.loads(error)
        return f"{doc['type']}: {doc['message']}"
    except Exception:
        return str(error)[:500]


def _prepare(
    ctx: WorkflowContext, spec: WorkflowSpec, inputs: Any, replay: bool
) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """(args, kwargs, what to wait for before running: a future, an Event,
    or None) of a workflow about to run; a replay's journal installed."""
    waiter = None
    if replay:
        # The journal recovery read with others' (Runner.launch), else read now;
        # either way without its large values (read as the replay gets to them,
        # by a few replays at a time: runtime/admission.py).
        runner = ctx.runner
        rows = runner.preloaded.pop(ctx.workflow_id, None) if runner.preloaded else None
        if rows is None:
            rows = runner.store.load_journal(ctx.workflow_id)
        ctx.load(rows)
        waiter = runner.large.enter(ctx.workflow_id, rows, ctx.loop if ctx.is_async else None)
    args, kwargs = ctx.codec.decode_inputs(inputs, spec.signature, spec.hints, spec.plan)
    return args, kwargs, waiter


def _final(ctx: WorkflowContext, rec: Record) -> tuple[str, str, Any, Any] | None:
    """The durable outcome to hand to waiters, or None if the row must be read
    (a park, or a completion that lost to a concurrent cancel)."""
    if rec.kind != R.COMPLETE or ctx.interrupt is not None:
        return None
    status, output, error, _wid = rec.params
    return ctx.name, status, output, error


def _interrupted(ctx: WorkflowContext, exc: BaseException | None) -> errors.WorkflowInterruptedError | None:
    """KeyboardInterrupt or SystemExit raised in the workflow's code (a step,
    Ctrl-C): no outcome is recorded, it stays PENDING and resumes at the next
    open; waiters here get a typed error instead of waiting forever."""
    if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return None
    log.warning(
        "durably: workflow %r (%s) stopped by %r raised in its code; it stays PENDING and resumes at the "
        "next open (or with engine.resume)",
        ctx.workflow_id,
        ctx.name,
        exc,
        extra=_logs.fields("workflow.interrupted", ctx.workflow_id, ctx.name, step_position=ctx.position),
    )
    return errors.WorkflowInterruptedError(
        f"workflow {ctx.workflow_id!r} stopped by {type(exc).__name__} raised in its code, without an "
        "outcome; it stays PENDING and resumes at the next open (or with engine.resume)",
        workflow_id=ctx.workflow_id,
        cause=repr(exc),
    )


def run_sync(ctx: WorkflowContext, spec: WorkflowSpec, inputs: Any, replay: bool) -> None:
    """Run a sync workflow in this thread to an outcome and journal it."""
    token = current.set(ctx)
    tel = ctx.runner.telemetry
    span, span_token = tel.attempt(ctx, replay) if tel is not None else (None, None)
    result: Any = None
    exc: BaseException | None = None
    try:
        args, kwargs, waiter = _prepare(ctx, spec, inputs, replay)
        while waiter is not None and not waiter.wait(0.1):
            if ctx.interrupt is not None:  # closing, cancelled: stop waiting for a slot
                raise ctx.interrupt
        result = spec.fn(*args, **kwargs)
    except BaseException as e:  # classified below; nothing escapes the runner
        exc = e
    finally:
        current.reset(token)
    rec = _records_for(ctx, _classify(ctx, spec, result, exc))
    final = None
    try:
        if rec is not None:
            if _crash.ARMED:
                _crash.hit("workflow.before_complete")
            ctx.journal.submit(rec)
            final = _final(ctx, rec)
            if _crash.ARMED:
                _crash.hit("workflow.after_complete")
    except errors.DurablyError:
        pass  # writer stopped: the workflow stays PENDING for the next open
    finally:
        stopped = _interrupted(ctx, exc or sys.exc_info()[1])
        if tel is not None:
            tel.attempt_end(ctx, span, span_token, rec, exc)
        ctx.runner.finished(ctx, stopped or final)
    if stopped is not None and exc is not None and not threading.current_thread().name.startswith("durably-"):
        # The caller's own thread (a workflow called directly, Ctrl-C in the
        # main thread): the signal goes on as Python intends. An engine
        # thread logs it and carries on serving other workflows.
        raise exc


async def run_async(ctx: WorkflowContext, spec: WorkflowSpec, inputs: Any, replay: bool) -> None:
    """Run an async workflow on this event loop to an outcome and journal it."""
    current.set(ctx)  # this task's own context copy
    ctx.loop = asyncio.get_running_loop()
    ctx.settle = settle_for(ctx.loop)
    ctx.enter_root()
    tel = ctx.runner.telemetry
    span, span_token = tel.attempt(ctx, replay) if tel is not None else (None, None)
    result: Any = None
    exc: BaseException | None = None
    try:
        args, kwargs, waiter = _prepare(ctx, spec, inputs, replay)
        while waiter is not None and not waiter.done():
            await asyncio.wait([waiter], timeout=0.1)
            if ctx.interrupt is not None:  # closing, cancelled: stop waiting for a slot
                raise ctx.interrupt
        result = await spec.fn(*args, **kwargs)
    except BaseException as e:
        exc = e
    rec = _records_for(ctx, _classify(ctx, spec, result, exc))
    final = None
    try:
        if rec is not None:
            if _crash.ARMED:
                _crash.hit("workflow.before_complete")
            await ctx.journal.submit_async(rec, ctx.loop)
            final = _final(ctx, rec)
            if _crash.ARMED:
                _crash.hit("workflow.after_complete")
    except errors.DurablyError:
        pass
    finally:
        current.set(None)
        ctx.leave_root()
        stopped = _interrupted(ctx, exc or sys.exc_info()[1])
        if tel is not None:
            tel.attempt_end(ctx, span, span_token, rec, exc)
        ctx.runner.finished(ctx, stopped or final)
    if stopped is not None and exc is not None and ctx.loop is not ctx.runner.loop:
        raise exc  # the caller's loop: asyncio stops it, as Python intends
    if isinstance(exc, asyncio.CancelledError) and ctx.interrupt is None and not ctx.runner.closing:
        # The task was cancelled from outside (typically the caller's event
        # loop ending under it) while the engine stays open: carry on, from
        # the journal, on the engine's own loop.
        ctx.runner.hand_over(ctx)
