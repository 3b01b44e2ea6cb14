"""Tasks that never lose a running step body to an ending event loop.

When ``asyncio.run()`` returns while an async workflow started on its loop is
still running, asyncio cancels every task left on that loop. Cancelling a
task in the middle of a step body throws ``CancelledError`` into the body:
its work is half done, its outcome is never recorded, and it runs again when
the workflow continues (on the engine's own loop). The docs promise a
re-run only when the process died, so durably holds such a cancel back:

* the task running an async workflow is a :class:`GuardedTask`; while a step
  body runs in it, a cancel coming from the loop's shutdown is held, the body
  finishes, its outcome is recorded, and only then does the workflow stop
  (and continue on the engine's loop from its journal);
* a step called in a task of the user's own (``asyncio.gather`` wraps each
  branch in one) runs its body in a GuardedTask of its own.

Any other cancel (``asyncio.wait_for`` around a step, a TaskGroup cancelling
its siblings, the engine's close after its grace period) goes through at once.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

# asyncio's own map of running loop -> current task (a dict in CPython's C
# module; private, so read with getattr: None on another asyncio).
_CURRENT: dict[Any, Any] | None = getattr(asyncio.tasks, "_current_tasks", None)


def _current_task(loop: Any) -> Any:
    return asyncio.current_task(loop)


# ``asyncio.current_task()`` for a known running loop: a dict lookup (20 ns)
# instead of 230 ns; the hot async path calls it twice per step.
current_task: Callable[[Any], Any] = _CURRENT.get if type(_CURRENT) is dict else _current_task


def _from_loop_shutdown() -> bool:
    # The frame that called Task.cancel() (directly, or through the C cancel
    # of a task awaiting this one, which adds no Python frame).
    frame = sys._getframe(2)
    return frame.f_code.co_name == "_cancel_all_tasks" and frame.f_globals.get("__name__") == "asyncio.runners"


class GuardedTask(asyncio.Task[Any]):
    """A task whose running step body is not cancelled by its loop ending."""

    in_body = False  # a step body is running in this task
    held = False  # a shutdown cancel arrived meanwhile: stop after the body

    def cancel(self, msg: Any = None) -> bool:
        if self.in_body and _from_loop_shutdown():
            self.held = True
            return False
        return super().cancel(msg)


async def run_guarded(body: Awaitable[Any]) -> tuple[Any, bool]:
    """Await a step body so that a loop shutdown cannot cut it short:
    (what the body returned, whether the workflow must stop once the
    body's outcome is recorded because its loop is ending)."""
    task = asyncio.current_task()
    if type(task) is GuardedTask:
        task.in_body = True
        try:
            result = await body
        finally:
            task.in_body = False
        return result, task.held
    # In a task of the user's (a gather branch): the body gets a guarded task.
    inner = GuardedTask(_in_body(body))
    try:
        return await asyncio.shield(inner), False
    except asyncio.CancelledError:
        if not inner.held:  # an ordinary cancel: the body goes too
            inner.cancel()
            raise
    while not inner.done():  # the loop is ending: the body finishes first
        try:
            await asyncio.wait([inner])
        except asyncio.CancelledError:
            pass
    return inner.result(), True


async def _in_body(body: Awaitable[Any]) -> Any:
    task = asyncio.current_task()
    if type(task) is GuardedTask:  # always: run_guarded runs this in one
        task.in_body = True
    return await body
