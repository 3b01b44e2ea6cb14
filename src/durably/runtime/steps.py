"""Step dispatch: replay, retries, journaling (transaction steps: transactions.py).

The hot path of a live step: claim a position, run the body, encode the
outcome, submit one journal record and wait until it is durable (no
speculative progress: the workflow does not go past a step before its
outcome is on disk), then hand back the *decoded* outcome so that the live
run and a replay see identical values.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from types import MethodType
from typing import Any, Generic, ParamSpec, TypeVar

from .. import _crash, errors
from .._records import STEP as _STEP
from ..codec import _IDENTITY, DECODE_FAILURES, Codec, annotations_of, decode_error, decode_failure
from ..journal import Record
from .context import _IN_STEP, WorkflowContext, current, encode_key
from .outcomes import encode_failure, encode_value, step_record
from .retries import back_off, back_off_async, next_delay
from .tasks import GuardedTask, current_task, run_guarded

P = ParamSpec("P")
R = TypeVar("R", covariant=True)  # a Step[P, int] is a Step[P, object]
Args = tuple[Any, ...]
Kwargs = dict[str, Any]

# A step's start: the store turns it into its own clock (_records.STEP).
_now = time.monotonic


def _check_policy(
    name: str,
    retries: int,
    backoff: float,
    initial_delay: float,
    max_delay: float,
    retry_on: Any,
    should_retry: Any,
    jitter: Any,
) -> tuple[type[Exception], ...] | None:
    """Refuse a malformed retry policy (UsageError); ``retry_on`` as a tuple."""
    if retries < 0 or backoff < 1.0 or initial_delay < 0 or max_delay < 0:
        raise errors.UsageError(
            f"step {name!r}: retries must be >= 0, backoff >= 1.0, delays >= 0 "
            f"(got retries={retries}, backoff={backoff}, initial_delay={initial_delay}, max_delay={max_delay})"
        )
    classes: tuple[type[Exception], ...] | None = None
    if retry_on is not None:
        given: tuple[Any, ...] = tuple(retry_on) if isinstance(retry_on, (tuple, list)) else (retry_on,)  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]  # (checked on the next line)
        if not all(isinstance(t, type) and issubclass(t, Exception) for t in given):
            raise errors.UsageError(f"step {name!r}: retry_on must be Exception classes, not {given!r}")
        classes = given
    if should_retry is not None and not callable(should_retry):
        raise errors.UsageError(f"step {name!r}: should_retry must be callable (exception -> bool)")
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0.0 <= jitter <= 1.0:
        raise errors.UsageError(f"step {name!r}: jitter must be a fraction in [0, 1], not {jitter!r}")
    return classes


def _check_seconds(name: str, option: str, value: Any, none_ok: str) -> None:
    """Refuse an option that is not None nor a finite number of seconds > 0."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf")
    ):
        raise errors.UsageError(f"step {name!r}: {option} must be a number of seconds > 0{none_ok}, not {value!r}")


class StepSpec:
    """A registered step: body, name, retry policy and typed decoder."""

    __slots__ = (
        "fn",
        "name",
        "retries",
        "backoff",
        "initial_delay",
        "max_delay",
        "decode",
        "identity",
        "is_async",
        "retry_on",
        "should_retry",
        "timeout",
        "plain",
        "jitter",
        "retry_deadline",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        codec: Codec,
        retries: int,
        backoff: float,
        initial_delay: float,
        max_delay: float,
        retry_on: Any = None,
        should_retry: Callable[[Exception], bool] | None = None,
        timeout: float | None = None,
        jitter: float = 0.0,
        retry_deadline: float | None = None,
    ) -> None:
        retry_on = _check_policy(name, retries, backoff, initial_delay, max_delay, retry_on, should_retry, jitter)
        _check_seconds(name, "retry_deadline", retry_deadline, " or None")
        self.is_async = inspect.iscoroutinefunction(fn)
        _check_seconds(name, "timeout", timeout, "")
        if timeout is not None and not self.is_async:
            raise errors.UsageError(
                f"step {name!r}: timeout= needs an async step (a thread running a sync body cannot be "
                "stopped); bound the sync body itself (e.g. the timeout of the call it makes)"
            )
        self.retry_on = retry_on
        self.should_retry = should_retry
        self.timeout = timeout
        self.fn = fn
        self.name = name
        self.retries = retries
        self.backoff = backoff
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.jitter = float(jitter)
        self.retry_deadline = retry_deadline
        ret = annotations_of(fn).get("return", Any)
        self.decode = codec.decoder(ret)
        self.identity = codec.name == "json"
        # The inlined hot path: no retries, no timeout, no predicate.
        self.plain = retries == 0 and timeout is None

    def delay(self, attempt: int) -> float:
        return min(self.initial_delay * self.backoff**attempt, self.max_delay)

    def retry(self, exc: Exception, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (0: the first) failing with
        ``exc`` is tried again. A ``should_retry`` that raises means no."""
        if attempt >= self.retries:
            return False
        if self.retry_on is not None and not isinstance(exc, self.retry_on):
            return False
        if self.should_retry is not None:
            try:
                return bool(self.should_retry(exc))
            except Exception:
                return False
        return True

    async def call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One attempt of an async body, bounded by ``timeout``."""
        if self.timeout is None:
            return await self.fn(*args, **kwargs)
        try:
            return await asyncio.wait_for(self.fn(*args, **kwargs), self.timeout)
        except TimeoutError:
            raise errors.StepTimeoutError(
                f"step {self.name!r} ran past its timeout of {self.timeout} s and was cancelled",
                step=self.name,
                timeout=self.timeout,
            ) from None


# The attempt number (0: the first) of the step body running in this context.
ATTEMPT: contextvars.ContextVar[int] = contextvars.ContextVar("durably_attempt", default=0)


def as_awaitable(value: Any) -> Awaitable[Any]:
    """``value`` if it is awaitable (a durable call in an async workflow),
    else an awaitable of it (a plain call: outside a workflow, in a step body)."""
    if inspect.isawaitable(value):
        return value
    return _ready(value)


async def _ready(value: Any) -> Any:
    return value


def _replay(ctx: WorkflowContext, spec: StepSpec, recorded: tuple[Any, Any], key: Any) -> Any:
    output, error = recorded
    if error is not None:
        raise decode_error(error)
    if output is None:
        return None
    try:
        return spec.decode(output)
    except DECODE_FAILURES as exc:  # the type changed since: typed error, the journal keeps the value
        raise decode_failure(("step", spec.name, ctx.workflow_id, key), spec.decode, exc) from exc


def _run_sync(
    ctx: WorkflowContext, spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any], key: Any = None
) -> tuple[Any, BaseException | None]:
    attempt = 0
    first = ctx.runner.clock.now() if spec.retry_deadline is not None else 0.0
    ctx.in_step = True  # durable calls inside the body are plain calls
    try:
        while True:
            token = ATTEMPT.set(attempt)
            try:
                return spec.fn(*args, **kwargs), None
            except Exception as exc:
                delay = next_delay(ctx, spec, exc, attempt, first, key)
                if delay is None:
                    return None, exc
            finally:
                ATTEMPT.reset(token)
            back_off(ctx, delay)  # on the engine's clock; cancel, a deadline and close end it
            attempt += 1
    finally:
        ctx.in_step = False


async def _run_async(
    ctx: WorkflowContext, spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any], key: Any = None
) -> tuple[Any, BaseException | None]:
    attempt = 0
    first = ctx.runner.clock.now() if spec.retry_deadline is not None else 0.0
    while True:
        token = ATTEMPT.set(attempt)  # to_thread copies it into the thread
        try:
            if spec.is_async:
                return await spec.call_async(args, kwargs), None
            return await asyncio.to_thread(spec.fn, *args, **kwargs), None
        except Exception as exc:
            delay = next_delay(ctx, spec, exc, attempt, first, key)
            if delay is None:
                return None, exc
        finally:
            ATTEMPT.reset(token)
        await back_off_async(ctx, delay)  # on this loop, between attempts (never in a thread)
        attempt += 1


# -- steps --------------------------------------------------------------------------


class Step(Generic[P, R]):
    """What ``@engine.step`` returns: call it as the function it wraps.

    Outside a workflow, and inside a step body (the outer step's outcome
    covers it), a call is a plain call. In a workflow the outcome is
    journaled once, durable before the call returns, and replayed after. In
    an async workflow a call returns an awaitable: its key is claimed at the
    call, in call order, so that ``asyncio.gather`` is deterministic.
    """

    __slots__ = (
        "__durably_step__",
        "_spec",
        "_fn",
        "_name",
        "_decode",
        "_identity",
        "_plain_sync",
        "_inline_async",
        "__dict__",
    )

    def __init__(self, spec: StepSpec) -> None:
        self._spec = self.__durably_step__ = spec  # what the engine and tests look up
        self._fn: Callable[P, R] = spec.fn
        self._name = spec.name
        self._decode = spec.decode
        self._identity = spec.identity
        # The hot paths: a body without retries or timeout, run right here.
        self._plain_sync = spec.plain and not spec.is_async
        self._inline_async = spec.plain and spec.is_async
        functools.update_wrapper(self, spec.fn)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        """A step defined in a class body is a method, as its function was."""
        return self if obj is None else MethodType(self, obj)

    def __reduce__(self) -> str:
        return str(self.__dict__["__qualname__"])  # pickled by reference, as the function it replaces was

    def __repr__(self) -> str:
        return f"<durably step {self._name!r}>"

    def aio(self, /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """The call of a *sync* step from an async workflow, typed as what it
        is there: ``await fetch.aio(url)`` is ``await fetch(url)`` (an
        awaitable at run time), which type checkers see as the step's own
        return type. Outside a workflow the value comes back as an awaitable too."""
        return as_awaitable(self(*args, **kwargs))

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        ctx = current.get()
        if ctx is None:
            return self._fn(*args, **kwargs)  # outside a workflow: nothing is journaled
        if ctx.is_async:
            task = current_task(ctx.loop)
            br = ctx.root
            if br is not None and br.task is task:  # the workflow's own task: the hot path
                if task.in_body:  # pyright: ignore[reportOptionalMemberAccess]  (task is br.task: not None)
                    return self._fn(*args, **kwargs)  # inside a step body: the outer step covers it
                if ctx.interrupt is None and ctx.parked is None and not ctx.pending:
                    key = br.seq
                    br.seq = key + 1
                    awaitable: R = _step_async(self, ctx, key, args, kwargs)
                    return awaitable
            return self._claim(ctx, task, args, kwargs)
        if ctx.in_step:
            return self._fn(*args, **kwargs)  # inside a step body: the outer step covers it
        tel = ctx.runner.telemetry
        if tel is not None:  # OpenTelemetry configured at open (_otel.py): the step in its span
            traced: R = tel.step_sync(self, ctx, args, kwargs)
            return traced
        pos = ctx.position
        if self._plain_sync and pos >= ctx.replay_len and ctx.interrupt is None and ctx.parked is None:
            if not _crash.ARMED:
                ctx.position = pos + 1
                return self._live_sync(ctx, pos, args, kwargs)
        return self._step_sync(ctx, args, kwargs)

    def _claim(self, ctx: WorkflowContext, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """An async call off the hot path: in a branch task (gather), a step
        body, or a workflow interrupted, parked or with replay pending."""
        br = ctx.root
        if (br is None or br.task is not task) and (_IN_STEP.get() or getattr(task, "in_body", False)):
            return self._fn(*args, **kwargs)  # inside a step body: the outer step covers it
        if ctx.interrupt is not None or ctx.parked is not None:
            ctx.take_position()  # raises the interrupt or the park
        awaitable: R = _step_async(self, ctx, ctx.claim(task), args, kwargs)
        return awaitable

    def _live_sync(self, ctx: WorkflowContext, pos: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """A live sync step without retries at ``pos`` (already taken): what
        ``_step_sync`` does, minus the replay lookup and the retry loop."""
        failure: Exception | None = None
        value: Any = None
        started = _now()
        ctx.in_step = True
        try:
            value = self._fn(*args, **kwargs)
        except Exception as exc:
            failure = exc
        finally:
            ctx.in_step = False
        if failure is not None:
            return self._finish_sync(ctx, pos, None, failure, started)
        # A value: _finish_sync's (encode_value and step_record, outcomes.py,
        # the reference) inlined, as this runs once per step;
        # tests/test_inlined_paths.py pins that both give the same row and value.
        raw: Any = None
        seen: Any = None  # (a None outcome is the value None)
        if value is not None:
            raw, seen = _encode_inline(self, ctx, pos, value)
        ctx.journal.submit(Record(_STEP, (ctx.workflow_id, pos, self._name, raw, None, None, started)))
        result: R = seen  # what the body returned, encoded and decoded back
        return result

    def _step_sync(self, ctx: WorkflowContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """A step in a sync workflow: replayed, or run (with its retries; an
        async body on an event loop of its own) and journaled."""
        spec = self._spec
        pos = ctx.take_position()
        recorded = ctx.replayed(pos, spec.name)
        if recorded is not None:
            replayed: R = _replay(ctx, spec, recorded, pos)
            return replayed
        if _crash.ARMED:
            _crash.hit("step.before_body", ctx.workflow_id, pos, spec.name)
        started = _now()
        if spec.is_async:
            ctx.in_step = True
            try:
                value, exc = asyncio.run(_run_async(ctx, spec, args, kwargs, pos))
            finally:
                ctx.in_step = False
        else:
            value, exc = _run_sync(ctx, spec, args, kwargs, pos)
        if _crash.ARMED:
            _crash.hit("step.after_body", ctx.workflow_id, pos, spec.name)
        return self._finish_sync(ctx, pos, value, exc, started)

    def _finish_sync(self, ctx: WorkflowContext, pos: int, value: Any, exc: BaseException | None, started: float) -> R:
        """A sync step's outcome: its record submitted (durable when this
        returns), then the value the workflow sees returned or its error raised."""
        name = self._name
        if exc is None:
            raw, seen = encode_value(
                ctx.codec, value, ("step", name, ctx.workflow_id, pos), self._decode, self._identity
            )
            failure = None
            rec = step_record(ctx, pos, name, raw, None, started)
        else:
            err, failure = encode_failure(exc)
            seen = None
            rec = step_record(ctx, pos, name, None, err, started)
        ctx.journal.submit(rec)
        if failure is not None:
            raise failure
        result: R = seen  # pyright: ignore[reportAssignmentType]  (a None outcome is the value None)
        return result


async def _run_step_async(
    step: Step[Any, Any], ctx: WorkflowContext, key: Any, args: Args, kwargs: Kwargs, traced: bool = False
) -> Any:
    """A step in an async workflow, at ``key`` (claimed at the call);
    ``traced``: called by the telemetry, inside the step's span."""
    if not traced:
        tel = ctx.runner.telemetry
        if tel is not None:  # OpenTelemetry configured at open (_otel.py): the step in its span
            return await tel.step_async(_run_step_async, step, ctx, key, args, kwargs)
    if ctx.recorded:
        recorded = ctx.replayed(key, step._name)
        if recorded is not None:
            if not ctx.deliver_now():  # in the order it was delivered live
                await ctx.turn(key)
            return _replay(ctx, step._spec, recorded, key)
    if _crash.ARMED:
        _crash.hit("step.before_body", ctx.workflow_id, key, step._name)
    started = _now()
    task = current_task(ctx.loop)  # not the caller's when gather wrapped the awaitable in a task
    if step._inline_async and type(task) is GuardedTask:
        # The common case: the body runs in the workflow's task, which holds back a cancel
        # from its loop's shutdown meanwhile (its in_body flag makes durable calls plain).
        exc = None
        task.in_body = True
        try:
            value = await step._fn(*args, **kwargs)
        except Exception as e:
            value, exc = None, e
        finally:
            task.in_body = False
        stop = task.held
        if exc is None and not _crash.ARMED:
            # A value: step_record (outcomes.py, the reference) inlined, as
            # this runs once per step; tests/test_inlined_paths.py pins that
            # both give the same row and the same value.
            raw, seen = (None, None) if value is None else _encode_inline(step, ctx, key, value)
            pos = ctx.position
            ctx.position = pos + 1
            ident = None if key == pos else encode_key(key)
            row = (ctx.workflow_id, pos, step._name, raw, None, ident, started)
            await ctx.journal.submit_async(Record(_STEP, row), ctx.loop)  # (task is ctx.loop's current task)
            # ctx.deliver_now() and ctx.turn(key), inlined: without recorded
            # outcomes pending, turn would take the gate again (failing as
            # here: nothing ran since) and wait at it.
            settle = ctx.settle
            if ctx.pending:
                await ctx.turn(key)
            elif settle is not None and not settle.take(ctx):
                await settle.wait(ctx)
            if stop:
                raise asyncio.CancelledError()  # (as in _record_async)
            return seen
    else:
        token = _IN_STEP.set(True)  # durable calls inside the body are plain calls
        try:
            (value, exc), stop = await run_guarded(_run_async(ctx, step._spec, args, kwargs, key))
        finally:
            _IN_STEP.reset(token)
    return await _record_async(step, ctx, key, value, exc, stop, started)


def _encode_inline(step: Step[Any, Any], ctx: WorkflowContext, key: Any, value: Any) -> tuple[Any, Any]:
    """``encode_value`` (outcomes.py, the reference) for the inlined path:
    (stored, seen) of a step's value that is not None."""
    where = ("step", step._name, ctx.workflow_id, key)
    raw = ctx.codec.encode(value, where)
    if step._identity and type(value) in _IDENTITY:
        return raw, value
    try:
        return raw, step._decode(raw)
    except DECODE_FAILURES as e:
        raise decode_failure(where, step._decode, e) from e


async def _record_async(
    step: Step[Any, Any],
    ctx: WorkflowContext,
    key: Any,
    value: Any,
    exc: Exception | None,
    stop: bool,
    started: float,
) -> Any:
    """A step body's outcome (a value or an error), recorded through the
    reference path (outcomes.py), delivered in order; what the call returns."""
    if _crash.ARMED:
        _crash.hit("step.after_body", ctx.workflow_id, key, step._name)
    name = step._name
    if exc is None:
        raw, seen = encode_value(ctx.codec, value, ("step", name, ctx.workflow_id, key), step._decode, step._identity)
        failure = None
        rec = step_record(ctx, key, name, raw, None, started)
    else:
        err, failure = encode_failure(exc)
        seen = None
        rec = step_record(ctx, key, name, None, err, started)
    await ctx.journal.submit_async(rec)
    if not ctx.deliver_now():
        await ctx.turn(key)
    if stop:
        # The event loop is ending (asyncio.run returned): the body ran once
        # and its outcome is durable; the workflow continues from its
        # journal on the engine's own loop.
        raise asyncio.CancelledError()
    if failure is not None:
        raise failure
    return seen


# Typed loosely: Step.__call__ hands its awaitable back as the body's own type.
_step_async: Callable[..., Any] = _run_step_async
