"""Replays of large values, a few at a time.

A replay reads its journal without the values larger than
``store.LARGE_VALUE`` (``store.load_journal``) and reads each of those
alone when the replay reaches it (``WorkflowContext.replayed``), so one
workflow holds at most one of them at a time. Recovery starts every
pending workflow at once, though: twenty workflows replaying 25 MB values
would still hold twenty of them (an async replay keeps an outcome while it
waits for its turn). So a workflow whose journal holds large values replays
them only while it holds one of ``SLOTS`` slots: from its start until it
has read the last of them (or it ends). Memory at recovery is then bounded
by the largest values in flight, not their sum; workflows without large
values never wait here.

A holder never waits for a workflow that waits for a slot: a replay
hands over recorded outcomes only (live ones come after every recorded
one, runtime/context.py), and a replay that cannot go on parks its
workflow, which ends its hold.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

# Workflows replaying large values at once.
SLOTS = 2


def _open(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class LargeReplays:
    """The slots, and how many large values each holder has left to read."""

    def __init__(self, slots: int = SLOTS) -> None:
        self._lock = threading.Lock()
        self._free = slots
        self._left: dict[str, int] = {}  # holder -> large values it has not read yet
        self._waiting: deque[tuple[str, int, Any]] = deque()  # (id, count, Future or Event)

    def enter(self, wid: str, rows: list[tuple[Any, ...]], loop: asyncio.AbstractEventLoop | None) -> Any:
        """Called as a workflow starts its replay with the journal ``rows``.
        None: go on (no large values, or a slot was free); else wait for
        the returned future (``loop`` given) or Event."""
        count = sum(1 for row in rows if len(row) > 5 and row[5])
        if not count:
            return None
        with self._lock:
            if self._free > 0:
                self._free -= 1
                self._left[wid] = count
                return None
            waiter: Any = loop.create_future() if loop is not None else threading.Event()
            self._waiting.append((wid, count, waiter))
            return waiter

    def read(self, wid: str) -> None:
        """The holder ``wid`` read one of its large values."""
        with self._lock:
            left = self._left.get(wid)
            if left is None:
                return
            if left > 1:
                self._left[wid] = left - 1
                return
        self.leave(wid)

    def ended(self, wid: str) -> None:
        """A workflow ended (every one does: without a lock unless it holds
        or waits for a slot)."""
        if wid in self._left or self._waiting:
            self.leave(wid)

    def leave(self, wid: str) -> None:
        """``wid`` read its last large value, or ended (holding a slot,
        or waiting for one): the slot goes to the next in line."""
        with self._lock:
            if self._left.pop(wid, None) is None:
                self._waiting = deque(w for w in self._waiting if w[0] != wid)
                return
            while self._waiting:
                nxt, count, waiter = self._waiting.popleft()
                if isinstance(waiter, threading.Event):
                    self._left[nxt] = count
                    waiter.set()
                    return
                if waiter.done():
                    continue  # its workflow was cancelled meanwhile
                try:
                    waiter.get_loop().call_soon_threadsafe(_open, waiter)
                except RuntimeError:
                    continue  # its loop is closed
                self._left[nxt] = count
                return
            self._free += 1
