"""Whether an executor on this host is alive, whatever the wall clock does.

Leases are written and compared on the store's clock (PostgreSQL: the
server's ``clock_timestamp()``; SQLite: this host's wall clock), so hosts
need not agree on the time. The store's clock can still jump: a forward
jump (NTP stepping it, a VM resumed) makes every lease written before it
look expired until its owner renews it, up to ``lease / 4`` later, and a
claimer looking in that window would take over live owners; a backward
jump makes leases look longer.

For executors on its own host and boot a claimer knows more than the
lease: whether the process is alive (pid and start time), and when it
last saw the lease move. As SystemClock arms a wait (clock.py), it arms
each lease it reads on its monotonic clock with the time that lease had
left when first read: an executor whose process is alive is *live* (never
taken by lease expiry) until that time has passed here with no renewal.
A forward jump then takes nothing from a live owner, which renews within
a quarter of its lease; an owner that stopped renewing (SIGSTOP, a
debugger, a frozen VM) is judged by its lease again once it has been
silent that long, so it is still taken over. A lease first read just after
a forward jump seems to have less time left than it has, so it is armed
with at least what the owner's previous lease had left when read (an
owner's leases are all the same length), or, for the first lease read of
an owner, at least the claimer's own lease. A dead process is *dead*:
taken at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..store._executors import HOST, pid_alive
from ..store.contract import ExecutorRow


class HostLeases:
    """The claimer's view of the executors on its host (one per engine;
    ``lease``: its own lease, the arming of the first lease it reads)."""

    __slots__ = ("lease", "_seen")

    def __init__(self, lease: float) -> None:
        self.lease = lease
        # executor_id -> (lease_until read, monotonic time it was first read,
        # seconds it had left then, seconds the value before had left or None,
        # pid, pid_started)
        self._seen: dict[str, tuple[float, float, float, float | None, int, Any]] = {}

    def judge(self, rows: Sequence[ExecutorRow], me: str) -> tuple[list[str], list[str]]:
        """(dead, live) among ``rows`` of (executor_id, host, pid,
        pid_started, lease_until, seconds left): executors of this host and
        boot other than ``me`` whose process is gone, and those alive whose
        lease, armed here when first read, has not run out. Each call is one
        look (the lease keeper looks at every claim round)."""
        now = time.monotonic()
        seen, self._seen = self._seen, {}
        dead: list[str] = []
        live: list[str] = []
        for eid, host, pid, started, until, left in rows:
            if eid == me or host != HOST:
                continue
            if not pid_alive(pid, started):
                dead.append(eid)
                continue
            last = seen.get(eid)
            if last is not None and last[0] == until:
                entry = last
            else:  # renewed (or first read): arm it
                entry = (until, now, float(left), None if last is None else last[2], pid, started)
            self._seen[eid] = entry
            if self._armed(entry, now):
                live.append(eid)
        # An executor seen live before and not listed now: the store lists
        # only leases not long run out (_executors.LISTED), and a forward jump
        # of its clock makes a live owner's lease look long run out. Its
        # process and its lease armed here still say whether it lives.
        listed = {row.executor_id for row in rows}
        for eid, entry in seen.items():
            if eid in listed or eid in self._seen:
                continue
            if pid_alive(entry[4], entry[5]) and self._armed(entry, now):
                self._seen[eid] = entry
                live.append(eid)
        return dead, live

    def _armed(self, entry: tuple[float, float, float, float | None, int, Any], now: float) -> bool:
        """Whether the lease of ``entry`` still runs, armed on the monotonic clock."""
        _until, first, had, before, _pid, _started = entry
        return now - first < max(had, self.lease if before is None else before)
