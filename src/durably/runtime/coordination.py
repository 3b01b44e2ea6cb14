"""Several processes on one file: the lease keeper and the watcher.

One thread per open engine (``durably-coord``):

* every ``lease / 4`` seconds it renews this executor's lease; every
  ``CLAIM_EVERY`` seconds it claims workflows whose owner is gone
  (store/_executors.py: a stopped executor, an expired lease, a dead process
  on this host), then runs them here;
* every ``poll`` seconds it reads ``PRAGMA data_version``; when another
  connection committed, it reads the new *notices* (a message, an event, a
  cancel, a queue entry, a workflow waiting for an owner, committed by any
  process) and wakes what waits for them here, and checks whether a
  workflow some caller here waits for, running in another process, ended.

Polling ``data_version`` is one cheap pragma on the read connection (no
disk I/O while nothing changed); the bench measures the wake-up latency it
gives (``bench/scenarios/processes.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .. import errors

if TYPE_CHECKING:
    from ..journal import Journal
    from ..store import Store
    from .runner import Runner
    from .waits import Waits

log = logging.getLogger("durably")

# Seconds between two looks at data_version (the cross-process wake-up delay).
POLL = 0.01
# Seconds between two looks for workflows whose owner is gone (a dead
# process on this host is taken over within this; an expired lease too).
CLAIM_EVERY = 0.5


class Coordinator:
    """The lease keeper and cross-process watcher of one engine (a part of
    ``Engine``, made at each open).

    ``heartbeat`` renews this executor's lease; ``claim_orphans`` (None for a
    client, which runs nothing) takes over what dead executors left and runs
    it; both are the engine's. What the notices concern is woken through
    ``waits`` (messages, events), ``runner`` (cancels, remote waiters) and
    ``kick_queues``."""

    def __init__(self, store: Store, journal: Journal, waits: Waits, runner: Runner,
                 kick_queues: Callable[[], None], heartbeat: Callable[[], None],
                 claim_orphans: Callable[[], None] | None, lease: float, poll: float) -> None:
        self.store = store
        self.journal = journal
        self.waits = waits
        self.runner = runner
        self.kick_queues = kick_queues
        self.heartbeat = heartbeat
        self.claim_orphans = claim_orphans
        self.lease = lease
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._version: Any = None
        self._last_notice = 0

    def start(self, last_notice: int) -> None:
        self._last_notice = last_notice
        self._thread = threading.Thread(target=self._run, name="durably-coord", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _run(self) -> None:
        next_beat = time.monotonic() + self.lease / 4
        next_claim = time.monotonic() + CLAIM_EVERY
        failures = 0
        while not self._stop.wait(self.poll if failures == 0 else min(1.0, self.poll * 2 ** failures)):
            if self.journal.failure is not None:
                return  # the writer stopped: nothing more can be recorded
            try:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.lease / 4
                    self.heartbeat()
                if now >= next_claim:
                    next_claim = now + min(CLAIM_EVERY, self.lease / 4)
                    if self.claim_orphans is not None:
                        self.claim_orphans()
                version = self.store.data_version()
                if version != self._version:
                    self._version = version
                    self._react()
                failures = 0
            except errors.NotOpenError:
                return
            except Exception:  # logged and retried: a lock held elsewhere, a full disk ...
                failures += 1
                log.exception("durably: the coordination round failed (attempt %d); retrying", failures)

    def _react(self) -> None:
        """Another connection committed: wake what its notices concern."""
        notices = self.store.notices_since(self._last_notice)
        claim = False
        kick = False
        for nid, kind, wid, detail in notices:
            self._last_notice = nid
            if kind == "msg":
                self.waits.notify(("msg", wid, detail))
            elif kind == "event":
                self.waits.notify(("event", wid, detail))
            elif kind == "cancel":
                self.runner.cancelled_elsewhere(wid)
            elif kind == "queue":
                kick = True
            elif kind == "start":
                claim = True
        if kick:
            self.kick_queues()
        if claim and self.claim_orphans is not None:
            self.claim_orphans()
        self.runner.wake_remote_waiters()
