"""Workflow handles and the status enum."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from . import errors
from ._status import TERMINAL
from ._status import Status as Status  # durably.Status
from .codec import DECODE_FAILURES, decode_error, decode_failure
from .runtime.context import workflow_context
from .runtime.outcomes import step_record

if TYPE_CHECKING:
    from .runtime.runner import Runner
    from .store.contract import WorkflowRow, WorkflowView


class _HasRunner(Protocol):
    """An engine, as a handle sees it: where its workflows run."""

    @property
    def _runner(self) -> Runner: ...


_NOT_DECODED: Any = None

R = TypeVar("R", covariant=True)  # a WorkflowHandle[int] is a WorkflowHandle[object]


@dataclass(frozen=True)
class WorkflowInfo:
    """One workflow, as ``engine.list_workflows`` and ``handle.info`` give it.

    ``input`` is ``(args, kwargs)`` as passed (values as stored), ``output``
    the result (SUCCESS; decoded by the workflow's return annotation when it
    is registered here) and ``error`` the exception (ERROR, CANCELLED).
    Queued workflows also carry their ``queue``, ``priority`` and when they
    left the queue (``dequeued_at``; ``created_at`` is when they were
    enqueued). ``recovery_attempts``: how many opens found it running and
    ran it again; ``executor``: the engine that last ran it."""

    workflow_id: str
    name: str
    status: Status
    parent_id: str | None
    parked: str | None  # why a PENDING workflow is not making progress
    created_at: float
    updated_at: float
    input: Any = None
    output: Any = None
    error: BaseException | None = None
    deadline: float | None = None
    queue: str | None = None
    priority: int | None = None
    dequeued_at: float | None = None
    recovery_attempts: int = 0
    executor: str | None = None

    @classmethod
    def from_row(cls, row: WorkflowRow | WorkflowView, runner: Runner | None = None) -> WorkflowInfo:
        extra: dict[str, Any] = {}
        if len(row) > 10:  # the user view (WorkflowView)
            v = cast("WorkflowView", row)
            extra = dict(
                deadline=v.deadline,
                recovery_attempts=v.recovery_attempts or 0,
                executor=v.executor,
                queue=v.queue,
                priority=v.priority,
                dequeued_at=v.dequeued_at,
            )
        wid, name, status, inputs = row.workflow_id, row.name, row.status, row.inputs
        if runner is not None:  # values decoded as the workflow's function says
            extra.update(runner.decode_row(name, inputs, row.output, row.error))
        extra_row = (row.parent_id, row.parked, row.created_at, row.updated_at)
        return cls(wid, name, Status(status), *extra_row, **extra)


@dataclass(frozen=True)
class StepInfo:
    """One recorded step, as ``engine.steps`` gives it (values left encoded).

    ``position``: the step's place in its workflow: its call index (an int)
    for calls of the workflow's own code; ``"<branch>#<index>"`` for a call
    made in a task the workflow created (``asyncio.gather``, TaskGroup ...);
    ``"join:<child id>"`` for an async workflow's wait on a child."""

    position: int | str
    name: str
    output: Any
    error: Any
    recorded_at: float  # when its outcome was recorded (the step's end)
    started_at: float | None = None  # when its body started (steps; None for toolkit calls)
    # Step arguments are not journaled (only outcomes are): a child's inputs
    # are in its own WorkflowInfo (the "start:" step's output is its id).

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StepInfo:
        position, name, output, error, recorded_at, ident, started_at = row[:7]
        if ident is not None:
            position = int(ident[1:]) if ident.startswith("#") else ident
        return cls(position, name, output, error, recorded_at, started_at)


class WorkflowHandle(Generic[R]):
    """A reference to one workflow by id; cheap to create, safe to share.

    ``R`` is the workflow's result type (``Any`` for a handle made from an
    id or a start by name): what ``result()`` and ``result_async()`` return."""

    __slots__ = ("_runner", "workflow_id")

    def __init__(self, engine: _HasRunner, workflow_id: str) -> None:
        self._runner = engine._runner  # rows, and who waits for which workflow
        self.workflow_id = workflow_id

    @classmethod
    def of(cls, runner: Runner, workflow_id: str) -> WorkflowHandle[Any]:
        """The handle of ``workflow_id`` on the engine whose runner is ``runner``."""
        handle = cls.__new__(cls)
        handle._runner = runner
        handle.workflow_id = workflow_id
        return handle

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    def info(self) -> WorkflowInfo:
        runner = self._runner
        return WorkflowInfo.from_row(runner.row(self.workflow_id, user_view=True), runner)

    def status(self) -> Status:
        """ENQUEUED, PENDING, SUCCESS, ERROR or CANCELLED."""
        return self.info().status

    def result(self, timeout: float | None = None) -> R:
        """Wait for the workflow to end; return its result.

        Raises WorkflowFailedError (``.error`` is the workflow's exception),
        WorkflowCancelledError, ResultTimeoutError after ``timeout`` seconds
        (the workflow keeps running), WorkflowParkedError for a parked
        workflow, WorkflowInterruptedError for one whose code raised
        KeyboardInterrupt/SystemExit in this process (both stay PENDING).
        """
        runner = self._runner
        wid = self.workflow_id
        deadline = None if timeout is None else time.monotonic() + timeout
        runner.steal_for(wid, timeout)  # a child queued behind its waiting parent
        while True:
            waiter, _, running = runner.completion(wid)
            try:
                if not running:
                    row = runner.row(wid)
                    if row.status in TERMINAL:
                        value: R = _outcome(runner, wid, row.name, row.status, row.output, row.error)
                        return value
                    _raise_stuck(runner, wid, row)
                remaining = None if deadline is None else deadline - time.monotonic()
                event = waiter.event
                assert event is not None  # (completion without a loop makes it)
                if (remaining is not None and remaining <= 0) or not event.wait(remaining):
                    raise errors.ResultTimeoutError(
                        f"workflow {wid!r} did not finish within {timeout}s", workflow_id=wid, timeout=timeout
                    )
                runner.check_open()
                if waiter.final is not None:
                    final: R = _final(runner, wid, waiter.final)
                    return final
            finally:
                runner.release(wid, waiter)

    async def result_async(self, timeout: float | None = None) -> R:
        """``result`` for asyncio code: waits without blocking the event loop.

        Inside an async workflow, the moment a child's outcome arrives is
        journaled (a ``join`` record), so a replay hands it to the code in
        the same order relative to the workflow's other outcomes
        (``asyncio.wait``, ``as_completed`` over children)."""
        ctx = workflow_context()
        if ctx is None or not ctx.is_async or ctx.interrupt is not None:
            return await self._wait_async(timeout)
        key = ("join", self.workflow_id)
        if ctx.replayed(key, "join") is not None:
            if not ctx.deliver_now():
                await ctx.turn(key)
            return await self._wait_async(timeout)
        try:
            value = await self._wait_async(timeout)
        except (errors.WorkflowFailedError, errors.WorkflowCancelledError):
            await _joined(ctx, key)
            raise
        await _joined(ctx, key)
        return value

    async def _wait_async(self, timeout: float | None) -> R:
        runner = self._runner
        wid = self.workflow_id
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            waiter, fut, running = runner.completion(wid, loop)
            assert fut is not None
            try:
                if not running:
                    row = runner.row(wid)
                    if row.status in TERMINAL:
                        value: R = _outcome(runner, wid, row.name, row.status, row.output, row.error)
                        return value
                    _raise_stuck(runner, wid, row)
                remaining = None if deadline is None else deadline - loop.time()
                try:
                    if remaining is None:
                        await fut  # (as wait_for does without a timeout, minus its coroutine)
                    else:
                        await asyncio.wait_for(fut, remaining)
                except TimeoutError:
                    raise errors.ResultTimeoutError(
                        f"workflow {wid!r} did not finish within {timeout}s",
                        workflow_id=wid,
                        timeout=timeout,
                    ) from None
                runner.check_open()
                if waiter.final is not None:
                    final: R = _final(runner, wid, waiter.final)
                    return final
            finally:
                runner.release(wid, waiter, fut)


async def _joined(ctx: Any, key: Any) -> None:
    """Journal that the child's outcome reached the workflow, then deliver it."""
    await ctx.journal.submit_async(step_record(ctx, key, "join", None, None, None))
    if not ctx.deliver_now():
        await ctx.turn(key)


def _raise_stuck(runner: Runner, wid: str, row: WorkflowRow | WorkflowView) -> None:
    stuck = runner.stuck(wid, row)
    if stuck is not None:
        raise stuck


def _final(runner: Runner, wid: str, final: Any) -> Any:
    if isinstance(final, BaseException):
        raise final
    return _outcome(runner, wid, *final)


def _outcome(runner: Runner, wid: str, name: str, status: str, output: Any, error: Any) -> Any:
    if status == "SUCCESS":
        if output is None:
            return None
        decode = runner.result_decoder(name)
        try:
            return decode(output)
        except DECODE_FAILURES as exc:  # the return type changed since: typed, the row keeps the value
            raise decode_failure(f"result of workflow {wid!r}", decode, exc) from exc
    if status == "CANCELLED":
        why = str(decode_error(error)) if error is not None else f"workflow {wid!r} was cancelled"
        raise errors.WorkflowCancelledError(why, workflow_id=wid)
    if status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED":
        cause = decode_error(error) if error is not None else None
        if isinstance(cause, errors.MaxRecoveryAttemptsExceededError):
            raise cause
        raise errors.MaxRecoveryAttemptsExceededError(
            f"workflow {wid!r} exceeded its recovery attempts", workflow_id=wid
        )
    cause = decode_error(error)
    raise errors.WorkflowFailedError(
        f"workflow {wid!r} failed: {type(cause).__name__}: {cause}", workflow_id=wid, error=cause
    ) from cause
