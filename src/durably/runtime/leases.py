"""Whether an executor on this host is alive, whatever the wall clock does.

Leases are written and compared on the store's clock (PostgreSQL: the
server's ``clock_timestamp()``; SQLite: this host's wall clock), so hosts
need not agree on the time. The store's clock can still jump: a forward
jump of the host's wall clock (NTP stepping it, a VM resumed) makes every
lease written before it look expired until its owner renews it, up to
``lease / 4`` later, and a claimer looking in that window would take over
live owners. A backward jump makes leases look longer.

For executors on this host and boot the claimer knows more than the
lease: whether the process is alive (pid and start time), and, as
SystemClock does for waits (clock.py), how long it has been since the
lease last moved, on its own monotonic clock. An executor whose process is
alive and whose ``lease_until`` changed within the claimer's lease (as the
claimer saw it) is *live*: never taken by lease expiry. One that stopped
renewing (SIGSTOP, a debugger, a frozen VM) is judged by its lease again
once the claimer has seen it silent for that long, so a paused owner is
still taken over. A dead process is *dead*: taken at once.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from ..store._executors import HOST, pid_alive


class HostLeases:
    """The claimer's view of the executors on its host (one per engine;
    ``lease``: its own lease, how long a silent executor stays live)."""

    __slots__ = ("lease", "_seen")

    def __init__(self, lease: float) -> None:
        self.lease = lease
        # executor_id -> (lease_until last read, monotonic time it was first read)
        self._seen: dict[str, tuple[float, float]] = {}

    def judge(self, rows: Sequence[tuple[Any, ...]], me: str) -> tuple[list[str], list[str]]:
        """(dead, live) among ``rows`` of (executor_id, host, pid,
        pid_started, lease_until): executors of this host and boot other
        than ``me`` whose process is gone, and those alive that renewed
        their lease within ``lease`` seconds on this process's monotonic
        clock. Each call is one look (the lease keeper looks every round)."""
        now = time.monotonic()
        seen, self._seen = self._seen, {}
        dead: list[str] = []
        live: list[str] = []
        for eid, host, pid, started, until in rows:
            if eid == me or host != HOST:
                continue
            if not pid_alive(pid, started):
                dead.append(eid)
                continue
            last = seen.get(eid)
            first = last[1] if last is not None and last[0] == until else now
            self._seen[eid] = (until, first)
            if now - first < self.lease:
                live.append(eid)
        return dead, live
