"""A step's retries: whether a failed attempt is tried again, and the backoff.

The backoff is a wait on the engine's clock (a ``VirtualClock`` skips it like
a durable sleep) that ends early, raising the workflow's interrupt, when the
workflow is cancelled, its deadline passes or the engine closes: ``stop()``
fires every waiter in ``ctx.backoffs``. Nothing is journaled for a step
interrupted in its backoff: when the workflow runs again, the step starts
again from attempt 0. An async workflow's backoffs wait on its event loop
(a sync body awaited from it runs each attempt in a thread, not the wait).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

from .. import _logs
from .context import WorkflowContext, encode_key
from .waits import Waiter, block, block_async

if TYPE_CHECKING:
    from .steps import StepSpec

log = _logs.get("durably.steps")


def next_delay(
    ctx: WorkflowContext, spec: StepSpec, exc: Exception, attempt: int, first: float, key: Any = None
) -> float | None:
    """Seconds to wait before the attempt after ``attempt`` (0: the first),
    which failed with ``exc``; None if ``exc`` is the step's outcome (the
    policy says no, or the backoff would end past ``retry_deadline`` seconds
    after ``first``, when the first attempt started on the engine's clock).
    Logs the retry at WARNING (``key``: the step's position, for the log)."""
    if not spec.retry(exc, attempt):
        return None
    delay = spec.delay(attempt)
    if spec.jitter:
        delay = random.uniform(delay * (1.0 - spec.jitter), delay)
    if spec.retry_deadline is not None and ctx.runner.clock.now() + delay > first + spec.retry_deadline:
        return None
    where = key if key is None or isinstance(key, int) else encode_key(key)
    log.warning(
        "durably: step %r (position %s) of workflow %r (%s) failed on attempt %d with %r; retrying in %.3f s",
        spec.name,
        where,
        ctx.workflow_id,
        ctx.name,
        attempt,
        exc,
        delay,
        extra=_logs.fields("step.retry", ctx.workflow_id, ctx.name, spec.name, where, attempt=attempt, delay=delay),
    )
    if ctx.runner.telemetry is not None:
        ctx.runner.telemetry.retried(attempt, exc, delay)
    return delay


def back_off(ctx: WorkflowContext, delay: float) -> None:
    """Wait ``delay`` seconds on the engine's clock in this thread; raise the
    workflow's interrupt if it has one (before or during the wait)."""
    if delay > 0 and ctx.interrupt is None:
        clock = ctx.runner.clock
        waiter = Waiter()
        backoffs = _backoffs(ctx)
        backoffs.add(waiter)
        try:
            if ctx.interrupt is None:  # stop() set it before it could see this waiter
                block(clock, waiter, clock.now() + delay, None)
        finally:
            backoffs.discard(waiter)
    if ctx.interrupt is not None:
        raise ctx.interrupt


async def back_off_async(ctx: WorkflowContext, delay: float) -> None:
    """``back_off`` on the running event loop.

    A step body's task holds back a cancel from its loop's shutdown while the
    body runs (runtime/tasks.py); no body runs during a backoff, so the wait
    lets it through, as a durable sleep does, and the workflow continues on
    the engine's loop (the step from attempt 0). A cancel held during the
    attempt that just failed stops the workflow now, for the same reason."""
    task: Any = asyncio.current_task()  # a GuardedTask when a body runs in it (runtime/tasks.py)
    in_body = getattr(task, "in_body", False)
    if in_body and task.held:
        raise asyncio.CancelledError()
    if delay > 0 and ctx.interrupt is None:
        clock = ctx.runner.clock
        waiter = Waiter(asyncio.get_running_loop())
        backoffs = _backoffs(ctx)
        backoffs.add(waiter)
        if in_body:
            task.in_body = False
        try:
            if ctx.interrupt is None:
                await block_async(clock, waiter, clock.now() + delay, None)
        finally:
            backoffs.discard(waiter)
            if in_body:
                task.in_body = True
    elif ctx.interrupt is None:
        await asyncio.sleep(0)  # no delay: still let the loop run between attempts
    if ctx.interrupt is not None:
        raise ctx.interrupt


def _backoffs(ctx: WorkflowContext) -> set[Waiter]:
    backoffs = ctx.backoffs
    if backoffs is None:
        backoffs = ctx.backoffs = set()
    return backoffs
