"""Step and transaction-step dispatch: replay, retries, journaling.

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
from collections.abc import Callable
from typing import Any

from .. import _crash, errors
from .. import _records as R
from ..codec import _IDENTITY, DECODE_FAILURES, Codec, annotations_of, decode_error, decode_failure, encode_error
from ..journal import Record
from .context import _IN_STEP, WorkflowContext, current, encode_key, workflow_context
from .retries import back_off, back_off_async, next_delay
from .tasks import GuardedTask, current_task, run_guarded


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
        if retries < 0 or backoff < 1.0 or initial_delay < 0 or max_delay < 0:
            raise errors.UsageError(
                f"step {name!r}: retries must be >= 0, backoff >= 1.0, delays >= 0 "
                f"(got retries={retries}, backoff={backoff}, initial_delay={initial_delay}, max_delay={max_delay})"
            )
        if retry_on is not None:
            retry_on = tuple(retry_on) if isinstance(retry_on, (tuple, list)) else (retry_on,)
            if not all(isinstance(t, type) and issubclass(t, Exception) for t in retry_on):
                raise errors.UsageError(f"step {name!r}: retry_on must be Exception classes, not {retry_on!r}")
        if should_retry is not None and not callable(should_retry):
            raise errors.UsageError(f"step {name!r}: should_retry must be callable (exception -> bool)")
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0.0 <= jitter <= 1.0:
            raise errors.UsageError(f"step {name!r}: jitter must be a fraction in [0, 1], not {jitter!r}")
        if retry_deadline is not None and (
            isinstance(retry_deadline, bool)
            or not isinstance(retry_deadline, (int, float))
            or not 0 < retry_deadline < float("inf")
        ):
            raise errors.UsageError(
                f"step {name!r}: retry_deadline must be a number of seconds > 0 or None, not {retry_deadline!r}"
            )
        self.is_async = inspect.iscoroutinefunction(fn)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
                raise errors.UsageError(f"step {name!r}: timeout must be a number of seconds > 0, not {timeout!r}")
            if not self.is_async:
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


def _outcome(
    ctx: WorkflowContext, spec: StepSpec, key: Any, value: Any, exc: BaseException | None, started: float | None
) -> tuple[Record, Any, BaseException | None]:
    """The journal record for an outcome, and what the workflow then sees."""
    if exc is not None:
        err = encode_error(exc)
        seen = decode_error(err)
        seen.__cause__ = exc
        raw, decoded = None, None
    elif value is None:
        err = raw = decoded = seen = None
    else:
        err = seen = None
        raw, decoded = ctx.codec.roundtrip(value, ("step", spec.name, ctx.workflow_id, key), spec.decode, spec.identity)
    pos, ident = ctx.row(key)
    return Record(R.STEP, (ctx.workflow_id, pos, spec.name, raw, err, ident, started)), decoded, seen


def _run_sync(
    ctx: WorkflowContext, spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
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
                delay = next_delay(ctx, spec, exc, attempt, first)
                if delay is None:
                    return None, exc
            finally:
                ATTEMPT.reset(token)
            back_off(ctx, delay)  # on the engine's clock; cancel, a deadline and close end it
            attempt += 1
    finally:
        ctx.in_step = False


async def _run_async(
    ctx: WorkflowContext, spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
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
            delay = next_delay(ctx, spec, exc, attempt, first)
            if delay is None:
                return None, exc
        finally:
            ATTEMPT.reset(token)
        await back_off_async(ctx, delay)  # on this loop, between attempts (never in a thread)
        attempt += 1


def make_step(spec: StepSpec) -> Callable[..., Any]:
    """The callable users get from ``@engine.step``."""

    fn, name, decode, identity = spec.fn, spec.name, spec.decode, spec.identity
    _now = time.monotonic  # a step's start: the store turns it into its own clock (_records.STEP)
    inline_async = spec.plain and spec.is_async

    def step_sync(ctx: WorkflowContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pos = ctx.take_position()
        recorded = ctx.replayed(pos, spec.name)
        if recorded is not None:
            return _replay(ctx, spec, recorded, pos)
        if _crash.ARMED:
            _crash.hit("step.before_body")
        started = time.monotonic()
        if spec.is_async:
            ctx.in_step = True
            try:
                value, exc = asyncio.run(_run_async(ctx, spec, args, kwargs))
            finally:
                ctx.in_step = False
        else:
            value, exc = _run_sync(ctx, spec, args, kwargs)
        if _crash.ARMED:
            _crash.hit("step.after_body")
        rec, seen, err = _outcome(ctx, spec, pos, value, exc, started)
        ctx.journal.submit(rec)
        if err is not None:
            raise err
        return seen

    async def step_async(ctx: WorkflowContext, key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if ctx.recorded:
            recorded = ctx.replayed(key, spec.name)
            if recorded is not None:
                if not ctx.deliver_now():  # in the order it was delivered live
                    await ctx.turn(key)
                return _replay(ctx, spec, recorded, key)
        if _crash.ARMED:
            _crash.hit("step.before_body")
        started = _now()
        task = current_task(ctx.loop)
        if inline_async and type(task) is GuardedTask:
            # The common case: the body runs right in the workflow's task,
            # which holds back a cancel from its loop's shutdown meanwhile;
            # its in_body flag also makes durable calls in the body plain.
            exc = None
            task.in_body = True
            try:
                value = await fn(*args, **kwargs)
            except Exception as e:
                value, exc = None, e
            finally:
                task.in_body = False
            stop = task.held
            if exc is None and not stop and not _crash.ARMED:
                # The hot path, inlined (what _outcome does for a value).
                if value is None:
                    raw = seen = None
                else:
                    raw = ctx.codec.encode(value, ("step", name, ctx.workflow_id, key))
                    if identity and type(value) in _IDENTITY:
                        seen = value
                    else:
                        try:
                            seen = decode(raw)
                        except DECODE_FAILURES as bad:  # it would not replay: refused, as an unencodable one
                            raise decode_failure(("step", name, ctx.workflow_id, key), decode, bad) from bad
                pos = ctx.position
                ctx.position = pos + 1
                await ctx.journal.submit_async(
                    Record(
                        R.STEP,
                        (ctx.workflow_id, pos, name, raw, None, None if key == pos else encode_key(key), started),
                    )
                )
                if not ctx.deliver_now():
                    await ctx.turn(key)
                return seen
        else:
            token = _IN_STEP.set(True)  # durable calls inside the body are plain calls
            try:
                (value, exc), stop = await run_guarded(_run_async(ctx, spec, args, kwargs))
            finally:
                _IN_STEP.reset(token)
        if _crash.ARMED:
            _crash.hit("step.after_body")
        rec, seen, err = _outcome(ctx, spec, key, value, exc, started)
        await ctx.journal.submit_async(rec)
        if not ctx.deliver_now():
            await ctx.turn(key)
        if stop:
            # The event loop is ending (asyncio.run returned): the body ran
            # once and its outcome is durable; the workflow continues from
            # its journal on the engine's own loop.
            raise asyncio.CancelledError()
        if err is not None:
            raise err
        return seen

    plain = spec.plain and not spec.is_async

    @functools.wraps(spec.fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        ctx = current.get()
        if ctx is None:
            # Outside a workflow a step is a plain call: nothing is journaled.
            return fn(*args, **kwargs)
        if ctx.is_async:
            # Claim the key now, in call order, so asyncio.gather is deterministic.
            task = current_task(ctx.loop)
            br = ctx.root
            if br is not None and br.task is task:  # the workflow's own task
                if task.in_body:
                    return fn(*args, **kwargs)  # inside a step body: the outer step covers it
                if ctx.interrupt is None and ctx.parked is None and not ctx.pending:
                    key = br.seq
                    br.seq = key + 1
                    return step_async(ctx, key, args, kwargs)
            elif _IN_STEP.get() or getattr(task, "in_body", False):
                return fn(*args, **kwargs)  # inside a step body: the outer step covers it
            if ctx.interrupt is not None or ctx.parked is not None:
                ctx.take_position()  # raises the interrupt or the park
            return step_async(ctx, ctx.claim(task), args, kwargs)
        if ctx.in_step:
            return fn(*args, **kwargs)  # inside a step body: the outer step covers it
        pos = ctx.position
        if not (plain and pos >= ctx.replay_len and ctx.interrupt is None and ctx.parked is None and not _crash.ARMED):
            return step_sync(ctx, args, kwargs)
        # The hot path, inlined: a live sync step without retries (what
        # step_sync does, minus the replay lookup and the helper calls).
        ctx.position = pos + 1
        failure: Exception | None = None
        started = _now()
        ctx.in_step = True
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            failure = exc
        finally:
            ctx.in_step = False
        if failure is not None:
            rec, _, err = _outcome(ctx, spec, pos, None, failure, started)
            ctx.journal.submit(rec)
            raise err  # type: ignore[misc]
        if value is None:
            raw = seen = None
        else:
            raw = ctx.codec.encode(value, ("step", name, ctx.workflow_id, pos))
            if identity and type(value) in _IDENTITY:
                seen = value
            else:
                try:
                    seen = decode(raw)
                except DECODE_FAILURES as bad:  # it would not replay: refused, as an unencodable one
                    raise decode_failure(("step", name, ctx.workflow_id, pos), decode, bad) from bad
        ctx.journal.submit(Record(R.STEP, (ctx.workflow_id, pos, name, raw, None, None, started)))
        return seen

    call.__durably_step__ = spec  # type: ignore[attr-defined]
    return call


# -- transaction steps ------------------------------------------------------------


def make_transaction(spec: StepSpec, timeout: float | None = None) -> Callable[..., Any]:
    """The callable users get from ``@engine.transaction``.

    The body runs on the journal's writer thread inside the batch transaction,
    in its own SAVEPOINT: its SQL commits in the same fsync as its outcome
    record, exactly once. A body that raises is rolled back and its error is
    the recorded outcome.
    """
    if spec.is_async:
        raise errors.UsageError(f"transaction step {spec.name!r} must be a plain def (it runs on the writer thread)")

    def body_for(
        ctx: WorkflowContext, pos: Any, args: tuple[Any, ...], kwargs: dict[str, Any], box: list[Any]
    ) -> Callable[[Any], tuple[Any, Any]]:
        where = f"transaction {spec.name!r} (workflow {ctx.workflow_id!r}, position {pos})"
        # On the writer thread the body sees its workflow (engine.workflow_id
        # works) but may not start steps: they would wait on this very writer.
        inner = WorkflowContext(ctx.runner, ctx.workflow_id, ctx.name, {}, False)
        inner.interrupt = errors.UsageError(f"{where} may not call steps or start workflows")

        def body(tx: Any) -> tuple[Any, Any]:
            box.clear()  # the store may run a body again after rolling back a batch (busy, isolation)
            token = current.set(inner)
            try:
                value = spec.fn(tx, *args, **kwargs)
            except Exception as exc:
                box.append(exc)
                return None, encode_error(exc)
            finally:
                current.reset(token)
            if value is None:
                box.append(None)
                return None, None
            raw, decoded = ctx.codec.roundtrip(value, where, spec.decode, spec.identity)
            box.append(decoded)
            return raw, None

        body.timeout = timeout  # type: ignore[attr-defined]  # None: the engine's budget
        return body

    def finish(rec: Record, box: list[Any]) -> Any:
        output, error = rec.result
        if error is not None:
            seen = decode_error(error)
            # (the body may have returned a value: on PostgreSQL an SQL error it
            # caught, or the store's sandbox check, is still its outcome)
            seen.__cause__ = box[0] if box and isinstance(box[0], BaseException) else None
            raise seen
        return box[0] if box else None

    def tx_sync(ctx: WorkflowContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pos = ctx.take_position()
        recorded = ctx.replayed(pos, spec.name)
        if recorded is not None:
            return _replay(ctx, spec, recorded, pos)
        box: list[Any] = []
        rec = Record(R.TX, (ctx.workflow_id, ctx.row(pos), spec.name, body_for(ctx, pos, args, kwargs, box)))
        ctx.journal.submit(rec)
        return finish(rec, box)

    async def tx_async(ctx: WorkflowContext, key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        recorded = ctx.replayed(key, spec.name)
        if recorded is not None:
            if not ctx.deliver_now():
                await ctx.turn(key)
            return _replay(ctx, spec, recorded, key)
        box: list[Any] = []
        rec = Record(R.TX, (ctx.workflow_id, ctx.row(key), spec.name, body_for(ctx, key, args, kwargs, box)))
        await ctx.journal.submit_async(rec)
        if not ctx.deliver_now():
            await ctx.turn(key)
        return finish(rec, box)

    @functools.wraps(spec.fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        ctx = workflow_context()
        if ctx is None and current.get() is not None:
            raise errors.UsageError(
                f"transaction step {spec.name!r} was called inside a step body; call it from the "
                "workflow (a step's outcome cannot cover a transaction's SQL)"
            )
        if ctx is None:
            raise errors.UsageError(
                f"transaction step {spec.name!r} was called outside a workflow; it needs the "
                "engine's writer (call it from a workflow, or wrap it in one)"
            )
        if ctx.is_async:
            return tx_async(ctx, ctx.take_position(), args, kwargs)
        return tx_sync(ctx, args, kwargs)

    call.__durably_step__ = spec  # type: ignore[attr-defined]
    return call
