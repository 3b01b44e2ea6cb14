"""Workflow deadlines (``start(..., timeout=)``): one clock timer per
workflow that has one; when it fires, the workflow and its children are
cancelled. The deadline itself is in the database (re-armed at each open);
the timers are this process's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import errors

if TYPE_CHECKING:
    from ..clock import Clock


class Deadlines:
    """The deadline timers of one engine (a part of ``Engine``).

    ``cancel(workflow_id, reason)`` is the engine's cancel with a reason (it
    cascades to children and is a no-op once the workflow finished)."""

    __slots__ = ("_clock", "_cancel", "_lock", "_timers")

    def __init__(self, clock: Clock, cancel: Callable[[str, str], None]) -> None:
        self._clock = clock
        self._cancel = cancel
        self._lock = threading.Lock()
        self._timers: dict[str, Any] = {}

    def arm(self, workflow_id: str, deadline: float) -> None:
        # Outside the lock: a deadline already past fires at once, in this
        # thread with a VirtualClock, and _expired takes the lock.
        timer = self._clock.call_at(deadline, lambda: self._expired(workflow_id))
        with self._lock:
            old = self._timers.pop(workflow_id, None)
            if old is not None:
                old.cancel()
            self._timers[workflow_id] = timer

    def disarm(self, workflow_id: str) -> None:
        """The workflow ended: its deadline timer goes (no leak, no late cancel)."""
        if self._timers:
            with self._lock:
                timer = self._timers.pop(workflow_id, None)
            if timer is not None:
                timer.cancel()

    def disarm_all(self) -> None:
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    def _expired(self, workflow_id: str) -> None:
        # On the clock's thread: the cancel waits for a commit, so hand it off.
        with self._lock:
            self._timers.pop(workflow_id, None)
        threading.Thread(target=self._expire, args=(workflow_id,), name="durably-deadline", daemon=True).start()

    def _expire(self, workflow_id: str) -> None:
        try:  # cascades to children; a no-op once finished
            self._cancel(workflow_id, f"workflow {workflow_id!r} was cancelled: its deadline (start timeout) passed")
        except errors.DurablyError:
            pass  # engine closed meanwhile: re-armed at the next open
