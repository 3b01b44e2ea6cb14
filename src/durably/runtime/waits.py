"""Waiting without polling: a workflow (or a client) waiting for a message,
an event, a wake-up time or a queue slot parks on a :class:`Waiter` that is
fired by whichever comes first: the commit that makes what it waits for
visible (``Waits.notify``), its deadline (a clock timer), or an interrupt
(cancel, deadline expiry, engine close).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from .. import _logs, errors
from .context import WorkflowContext

if TYPE_CHECKING:
    from ..clock import Clock
    from ..journal import Journal

log = _logs.get("durably.engine")


def _set(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Waiter:
    """One wait: a threading.Event, or a future on the waiter's event loop."""

    __slots__ = ("event", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None

    def fire(self) -> None:
        event = self.event
        if event is not None:
            event.set()
            return
        loop, future = self.loop, self.future
        if loop is not None and future is not None:  # (a loop's waiter has both)
            try:
                loop.call_soon_threadsafe(_set, future)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

    def fire_here(self) -> None:
        """``fire`` from the waiter's own event loop (no cross-thread call)."""
        if self.future is not None and not self.future.done():
            self.future.set_result(None)

    @property
    def fired(self) -> bool:
        if self.event is not None:
            return self.event.is_set()
        return self.future is not None and self.future.done()

    def thread_event(self) -> threading.Event:
        """The event a thread waits on (InternalError for a loop's waiter)."""
        if self.event is None:
            raise errors.InternalError("a thread blocked on an event loop's waiter")
        return self.event

    def loop_future(self) -> asyncio.Future[None]:
        """The future a coroutine awaits (InternalError for a thread's waiter)."""
        if self.future is None:
            raise errors.InternalError("a coroutine awaited a thread's waiter")
        return self.future


class Waits:
    """Waiters by key, e.g. ("msg", workflow_id, topic); fired on notify."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[Hashable, set[Waiter]] = {}

    def add(self, key: Hashable, waiter: Waiter) -> None:
        with self._lock:
            self._by_key.setdefault(key, set()).add(waiter)

    def remove(self, key: Hashable, waiter: Waiter) -> None:
        with self._lock:
            group = self._by_key.get(key)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._by_key[key]

    def notify(self, key: Hashable) -> None:
        with self._lock:
            group = list(self._by_key.get(key, ()))
        for waiter in group:
            waiter.fire()

    def fire_all(self) -> None:
        with self._lock:
            groups = [w for g in self._by_key.values() for w in g]
        for waiter in groups:
            waiter.fire()


def block(clock: Any, waiter: Waiter, deadline: float | None, ctx: WorkflowContext | None) -> bool:
    """Wait in this thread until ``waiter`` fires or ``deadline`` passes;
    raise the workflow's interrupt (cancel, shutdown) if it was set. True if
    the deadline's timer fired (it may fire before the wall clock reaches
    the deadline: see SystemClock)."""
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        waiter.fire()

    timer = clock.call_at(deadline, expire) if deadline is not None else None
    if ctx is not None:
        ctx.waiter = waiter
    try:
        if ctx is None or ctx.interrupt is None:
            waiter.thread_event().wait()
    finally:
        if ctx is not None:
            ctx.waiter = None
        if timer is not None:
            timer.cancel()
    if ctx is not None and ctx.interrupt is not None:
        raise ctx.interrupt
    return bool(expired)


async def block_async(clock: Any, waiter: Waiter, deadline: float | None, ctx: WorkflowContext | None) -> bool:
    """``block`` on the running event loop."""
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        waiter.fire_here()

    timer = clock.call_at(deadline, expire, waiter.loop) if deadline is not None else None
    if ctx is not None:
        ctx.waiter = waiter
    try:
        if ctx is None or ctx.interrupt is None:
            await asyncio.shield(waiter.loop_future())
    finally:
        if ctx is not None:
            ctx.waiter = None
        if timer is not None:
            timer.cancel()
    if ctx is not None and ctx.interrupt is not None:
        raise ctx.interrupt
    return bool(expired)


RETRY_FIRST = 0.5  # seconds before a failed background round runs again,
RETRY_MAX = 30.0  # doubling up to this


class BackgroundLoop:
    """One engine thread that runs ``run_round()`` again whenever it is
    kicked or the time that round returned comes (on the engine's clock),
    until stopped. The queue dispatcher and the schedule runner are two."""

    thread_name = "durably-loop"

    def __init__(self, clock: Clock, journal: Journal) -> None:
        self.clock = clock
        self.journal = journal  # the open engine's writer
        self._lock = threading.Lock()
        self._waiter = Waiter()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def _stopped(self) -> bool:
        """``stop`` was called (read anew: another thread sets it)."""
        return self._stopping

    def run_round(self) -> float | None:
        """Do what is due; return when to run again (None: on a kick)."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def kick(self) -> None:
        with self._lock:
            self._waiter.fire()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._waiter.fire()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        clock = self.clock
        retry = RETRY_FIRST
        while True:
            with self._lock:
                if self._stopping:
                    return
                waiter = self._waiter = Waiter()  # a kick from now on ends this round's wait
            try:
                wake = self.run_round()
            except Exception as exc:
                if self._stopped():
                    return
                if not self.journal.running:
                    # The writer stopped: every caller already sees its typed
                    # error; this thread has nothing left to do.
                    log.error(
                        "durably: %s stopped: %s",
                        self.thread_name,
                        exc,
                        extra=_logs.fields("engine.thread_stopped", durably_thread=self.thread_name),
                    )
                    return
                # Never die silently: log it and try the round again later
                # (in real time, so a virtual clock cannot hold it back).
                log.error(
                    "durably: %s failed a round (%r); trying again in %.1f s",
                    self.thread_name,
                    exc,
                    retry,
                    exc_info=True,
                    extra=_logs.fields("engine.thread_round_failed", durably_thread=self.thread_name),
                )
                waiter.thread_event().wait(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            retry = RETRY_FIRST
            if wake is not None and wake <= clock.now():
                continue  # more is due right away
            block(clock, waiter, wake, None)
