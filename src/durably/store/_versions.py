"""SQLite's ``data_version`` for the lease keeper, read without waiting for
the writer (``Store.data_version``).

SQLite moves a connection's ``data_version`` for the commits of every
*other* connection, never for its own. Read on the writer's connection, this
process's own batches (which wake what they concern here directly) do not
wake the keeper; read on the reader, every batch did, and a lone busy
process polled its notices 100 times a second for nothing.

The keeper never waits for the writer's lock. Free: read now. Held (a batch,
or a transaction step running its SQL inside one, up to its budget): ask the
writer to read it after its batch (``after_batch``) and answer with what it
read after the last request, if not handed out yet; else "changed" (a value
never returned before, negative), so the keeper reads the notices as it would
at every commit, and a close() never waits for it.
"""

from __future__ import annotations

import threading
from typing import Any


class DataVersion:
    """The hand-off between the keeper's polls and the writer's batches."""

    __slots__ = ("wanted", "fresh", "read", "busy")

    def __init__(self) -> None:
        self.wanted = False  # the keeper found the writer busy: read it after the batch
        self.fresh = False  # ``read`` was read since and not handed out yet
        self.read = 0
        self.busy = 0  # the last "changed" answered (data_version itself is never negative)

    def poll(self, conn: Any, write_lock: threading.Lock) -> int:
        """The keeper's read, on the writer's connection ``conn``."""
        if write_lock.acquire(blocking=False):
            try:
                return int(conn.pragma("data_version"))
            finally:
                write_lock.release()
        self.wanted = True
        if self.fresh:
            self.fresh = False
            return self.read
        self.busy -= 1
        return self.busy

    def after_batch(self, conn: Any) -> None:
        """The writer, between batches (its lock held): read it if asked."""
        if self.wanted:
            self.wanted = False
            self.read = int(conn.pragma("data_version"))
            self.fresh = True
