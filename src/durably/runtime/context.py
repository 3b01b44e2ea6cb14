"""The workflow context: which workflow is running here and where its replay is.

One :class:`WorkflowContext` per running workflow, reachable through a
contextvar, so it follows asyncio tasks and threads without a global registry.
Steps are identified by call order: each step call takes the next position;
positions below ``replay_len`` come from the journal loaded at resume time,
so a live step never queries the database.
"""

from __future__ import annotations

import contextvars
from typing import Any

from .. import errors

current: contextvars.ContextVar["WorkflowContext | None"] = contextvars.ContextVar(
    "durably_workflow", default=None
)


class EngineShutdown(BaseException):
    """Unwinds a running workflow when its engine closes; it stays PENDING."""


class WorkflowContext:
    """State of one running workflow."""

    __slots__ = (
        "workflow_id",
        "name",
        "engine",
        "journal",
        "codec",
        "recorded",
        "replay_len",
        "position",
        "interrupt",
        "parked",
        "is_async",
        "waiter",
        "loop",
    )

    def __init__(self, engine: Any, workflow_id: str, name: str, recorded: dict[int, tuple[Any, ...]], is_async: bool) -> None:
        self.workflow_id = workflow_id
        self.name = name
        self.engine = engine
        self.journal = engine._journal
        self.codec = engine._codec
        self.recorded = recorded
        # Positions at or above this are live (the journal has nothing there).
        self.replay_len = (max(recorded) + 1) if recorded else 0
        self.position = 0
        # Set from another thread to stop the workflow at its next durable
        # point: a WorkflowCancelled or EngineShutdown instance.
        self.interrupt: BaseException | None = None
        self.parked: errors.NonDeterminismError | None = None
        self.is_async = is_async
        # What the workflow is blocked on (sleep, recv ...), fired on interrupt.
        self.waiter: Any = None
        self.loop: Any = None  # the event loop running an async workflow

    def load(self, rows: list[tuple[Any, ...]]) -> None:
        """Install the journal loaded from the store (one ordered SELECT)."""
        self.recorded = {row[0]: row for row in rows}
        self.replay_len = (max(self.recorded) + 1) if self.recorded else 0

    def take_position(self) -> int:
        """Claim the next step position; raise if the workflow must stop."""
        if self.interrupt is not None:
            raise self.interrupt
        if self.parked is not None:
            raise self.parked  # once parked, nothing more may run
        pos = self.position
        self.position = pos + 1
        return pos

    def replayed(self, pos: int, name: str) -> tuple[Any, Any] | None:
        """The recorded (output, error) at ``pos``, or None if it is live.

        Raises NonDeterminismError, parking the workflow, when the recorded
        step has another name.
        """
        if pos >= self.replay_len:
            return None
        # Each position is replayed once: drop the row, so a long replay
        # does not hold every recorded value (one may be 25 MB) to the end.
        row = self.recorded.pop(pos, None)
        if row is None:
            return None
        if row[1] != name:
            self.parked = errors.NonDeterminismError(
                f"workflow {self.workflow_id!r} called {name!r} at step {pos}, but its journal "
                f"recorded {row[1]!r} there; the code changed under a running workflow. It is "
                "parked (PENDING); restore the old code path (or use a new workflow id) and "
                "resume it",
                workflow_id=self.workflow_id, position=pos, recorded=row[1], called=name,
            )
            raise self.parked
        return row[2], row[3]


def stop(ctx: WorkflowContext, interrupt: BaseException) -> None:
    """Interrupt ``ctx`` at its next durable point, waking it if it waits."""
    ctx.interrupt = interrupt
    waiter = ctx.waiter
    if waiter is not None:
        waiter.fire()


def require() -> WorkflowContext:
    ctx = current.get()
    if ctx is None:
        raise errors.UsageError("this call is only valid inside a workflow")
    return ctx
