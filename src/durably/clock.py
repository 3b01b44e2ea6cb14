"""Clocks: where durable time comes from.

Durable deadlines (a sleep's wake-up time, a receive timeout, a workflow
deadline, a delayed queue entry, a schedule slot) are wall-clock unix times,
recorded in the database, so they mean the same thing after a restart.

``SystemClock`` is real time. ``VirtualClock`` is for tests: time moves only
when the test calls ``advance``, so a workflow that sleeps for three days
finishes in microseconds, with no server or extra binary.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_seq = itertools.count()


class _Timer:
    __slots__ = ("when", "key", "seq", "fn", "cancelled", "loop", "fired")

    def __init__(self, when: float, fn: Callable[[], None], loop: Any = None, key: float | None = None) -> None:
        self.when = when  # the wall-clock instant (a durable time)
        self.key = when if key is None else key  # what the heap orders by (SystemClock: monotonic)
        self.seq = next(_seq)
        self.fn = fn
        self.cancelled = False
        self.fired = False  # (SystemClock: fired early by a wall-clock jump, still in the heap)
        self.loop = loop  # run fn on this event loop (batched with the loop's other due timers)

    def __lt__(self, other: _Timer) -> bool:
        return (self.key, self.seq) < (other.key, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


def _run_all(timers: list[_Timer]) -> None:
    for timer in timers:
        if not timer.cancelled:
            timer.fn()


def _fire(due: list[_Timer]) -> None:
    """Run due timers: plain ones here, loop ones in one call per loop (10,000
    sleepers waking together cost one cross-thread hand-off, not 10,000)."""
    by_loop: dict[Any, list[_Timer]] = {}
    for timer in due:
        if timer.loop is None:
            timer.fn()
        else:
            by_loop.setdefault(timer.loop, []).append(timer)
    for loop, timers in by_loop.items():
        try:
            loop.call_soon_threadsafe(_run_all, timers)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more


class Clock:
    """Time, and callbacks at a given time. Callbacks must be quick (they run
    on the clock's thread, or in ``VirtualClock.advance``'s caller)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Timer] = []
        self._inserts = 0

    def now(self) -> float:
        raise NotImplementedError

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    def call_at(self, when: float, fn: Callable[[], None], loop: Any = None) -> _Timer:
        """Call ``fn`` at ``when``: on the clock's thread, or with ``loop`` on
        that event loop (all of a loop's due timers in one hand-off)."""
        return self._push(_Timer(when, fn, loop, self._key(when)))

    def _key(self, when: float) -> float:
        return when

    def _push(self, timer: _Timer) -> _Timer:
        with self._cond:
            heapq.heappush(self._heap, timer)
            self._inserts += 1
            if self._inserts % 1024 == 0:
                self._compact()
            self._cond.notify_all()
        return timer

    def _compact(self) -> None:
        # Cancelled timers (a recv that got its message long before its
        # timeout) would otherwise stay queued until their time: drop them
        # once they are most of the heap. Amortised O(1) per timer.
        live = [t for t in self._heap if not t.cancelled and not t.fired]
        if len(live) < len(self._heap) // 2:
            heapq.heapify(live)
            self._heap = live

    def pending(self) -> int:
        """Timers registered and not yet fired or cancelled."""
        with self._cond:
            return sum(1 for t in self._heap if not t.cancelled and not t.fired)

    def _pop_due(self, now: float) -> list[_Timer]:
        due: list[_Timer] = []
        while self._heap and self._heap[0].key <= now:
            timer = heapq.heappop(self._heap)
            if not timer.cancelled and not timer.fired:
                due.append(timer)
        return due


class SystemClock(Clock):
    """Real time; a daemon thread fires the timers while any are waiting
    (started on demand, ended by ``close``).

    Durable times are wall-clock instants (they must mean the same after a
    restart), but a wait armed in this process is also bounded by the
    monotonic clock: a timer fires when the wall clock reaches its instant
    *or* when the time that remained at arming has passed, whichever comes
    first. So a backward jump of the wall clock never stretches a wait (a
    2 s sleep is not held for an hour), and a forward jump ends the waits
    whose instant it passed, as a restart at that moment would."""

    def __init__(self) -> None:
        super().__init__()
        self._thread: threading.Thread | None = None
        self._closed = False

    def now(self) -> float:
        return time.time()

    def _key(self, when: float) -> float:
        return time.monotonic() + (when - time.time())  # the remaining time, on the monotonic clock

    def call_at(self, when: float, fn: Callable[[], None], loop: Any = None) -> _Timer:
        with self._cond:
            self._closed = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="durably-clock", daemon=True)
                self._thread.start()
        return super().call_at(when, fn, loop)

    def close(self) -> None:
        """Stop the timer thread (pending timers are dropped; a later
        ``call_at`` starts a new thread)."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        offset = time.time() - time.monotonic()
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    due = self._pop_due(time.monotonic())
                    now_offset = time.time() - time.monotonic()
                    if now_offset - offset > 0.5:  # the wall clock jumped forward
                        wall = time.time()
                        for timer in self._heap:  # waits whose wall-clock instant it passed
                            if not timer.cancelled and not timer.fired and timer.when <= wall:
                                timer.fired = True  # skipped when it reaches the top
                                due.append(timer)
                    offset = now_offset
                    if due:
                        break
                    # Re-read the wall clock at least every second: it may jump.
                    wait = min(1.0, self._heap[0].key - time.monotonic()) if self._heap else 1.0
                    self._cond.wait(max(wait, 0.0))
            _fire(due)


class VirtualClock(Clock):
    """Test time that moves only when told to.

    ``Engine(":memory:", clock=VirtualClock())``; in the test, start a
    workflow that sleeps, then ``clock.wait_for_timers(1)`` (the workflow
    reached its sleep) and ``clock.advance(3 * 86400)``: the sleep ends at
    once, and ``engine.now()`` inside the workflow says three days passed.
    Or let ``clock.finish(handle)`` skip from timer to timer until the
    workflow ends.
    """

    def __init__(self, start: float | datetime | None = None) -> None:
        super().__init__()
        if isinstance(start, datetime):
            start = start.timestamp()
        self._now = float(time.time() if start is None else start)

    def now(self) -> float:
        with self._cond:
            return self._now

    def call_at(self, when: float, fn: Callable[[], None], loop: Any = None) -> _Timer:
        with self._cond:
            due = when <= self._now
        if due:  # already due: nothing would fire it until the next advance()
            timer = _Timer(when, fn, loop)
            _fire([timer])
            return timer
        return super().call_at(when, fn, loop)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and fire every timer now due."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward (got {seconds!r})")
        with self._cond:
            self._now += seconds
            due = self._pop_due(self._now)
        _fire(due)

    def next_timer(self) -> float | None:
        """When the next waiting timer is due (a durable time), or None."""
        with self._cond:
            live = [t.when for t in self._heap if not t.cancelled]
        return min(live) if live else None

    def advance_to_next(self) -> bool:
        """Jump to the next timer and fire it; False if there is none."""
        with self._cond:
            live = [t for t in self._heap if not t.cancelled]
            if not live:
                return False
            step = max(0.0, min(t.when for t in live) - self._now)
        self.advance(step)
        return True

    def finish(self, handle: Any, timeout: float = 30.0, settle: float = 0.005) -> Any:
        """Run a workflow to its end in virtual time and return its result:
        whenever it has not finished after ``settle`` real seconds, jump to
        the next timer (a sleep, a timeout, a deadline, a delayed queue entry)
        and fire it. Gives up with ResultTimeoutError after ``timeout`` real
        seconds. Time-skipping for tests, with no server."""
        from . import errors  # (clock.py is imported by the engine, not the reverse)

        deadline = time.monotonic() + timeout
        while True:
            try:
                return handle.result(timeout=settle)
            except errors.ResultTimeoutError:
                if time.monotonic() > deadline:
                    raise
                self.advance_to_next()

    def wait_for_timers(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block (in real time) until at least ``count`` timers are waiting:
        the workflows under test have reached their sleeps or timeouts."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for t in self._heap if not t.cancelled) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} timers after {timeout} s")
                self._cond.wait(left)
