"""Retention: deleting finished workflows, on demand (``Engine.gc``) and in
the background (``Engine(retention=...)``).

A pass walks the workflows that ended before a cut-off in creation order,
in small batches. Each batch is one journal record (an ``OP``, store/_ops.gc)
committed on its own, in the writer's turn like any other record: it never
runs beside a journal batch, it holds the writer for a few milliseconds
(the batch size adapts to keep it so), and on PostgreSQL it locks only the
rows it deletes (``SKIP LOCKED``: a row another process holds is left for
the next pass). After a pass that deleted something, SQLite hands the
freed pages back to the file system in small steps (store/_ops.vacuum).

The cut-off is read on the engine's clock (``durably.VirtualClock`` in
tests moves it); the end times it is compared with are the database's
(``updated_at``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import _logs, errors
from .. import _records as R
from ..journal import Journal, Record
from .context import current
from .waits import BackgroundLoop

if TYPE_CHECKING:
    from ..clock import Clock

log = _logs.get("durably.retention")

# The statuses a workflow ends with (what gc may delete).
FINISHED = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
# Workflows per batch: starts here, halves when a batch held the writer
# longer than HOLD seconds, doubles (up to BATCH_MAX) when under a quarter
# of it (measured: a workflow of 10 steps costs 15-35 us to delete).
BATCH = 100
BATCH_MIN = 10
BATCH_MAX = 500
HOLD = 0.005
# Free pages handed back to the file system per step (SQLite: 1 MiB of 4 KiB pages).
VACUUM_PAGES = 256
# Background passes: every retention / 10, at most this many seconds apart;
# the first one this long after open. A background pass pauses after each
# batch so that its batches take at most DUTY of the writer's time (a
# backlog is worked off without slowing the workflows much); gc() on demand
# does not pause.
INTERVAL_MAX = 60.0
FIRST_PASS = 1.0
DUTY = 0.1


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one ``Engine.gc`` call (or one background pass) removed.

    Attributes:
        workflows: workflow rows deleted.
        steps: their recorded steps.
        messages: messages that were waiting for them.
        events: their events.
        queue_entries: their queue entries (with their dedup keys).
        send_keys: idempotency keys of client sends to them.
        notices: cross-process wake-ups about them.
        batches: transactions the deletion took (each committed on its own).
        longest_batch: seconds the longest of them spent deleting (the
            writer's hold, before its commit).
        pages_freed: SQLite pages handed back to the file system (0 on
            PostgreSQL, and on a file created before auto_vacuum: docs/operations/retention.md).
    """

    workflows: int = 0
    steps: int = 0
    messages: int = 0
    events: int = 0
    queue_entries: int = 0
    send_keys: int = 0
    notices: int = 0
    batches: int = 0
    longest_batch: float = 0.0
    pages_freed: int = 0

    def __add__(self, other: GcReport) -> GcReport:
        return GcReport(
            **{
                f.name: (max if f.name == "longest_batch" else _sum)(getattr(self, f.name), getattr(other, f.name))
                for f in fields(self)
            }
        )


def _sum(a: Any, b: Any) -> Any:
    return a + b


def seconds_of(value: Any, what: str, *, zero: bool) -> float:
    """``value`` (a ``timedelta`` or a number of seconds) as seconds;
    UsageError unless finite and > 0 (or >= 0 with ``zero``)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise errors.UsageError(f"{what} must be a datetime.timedelta or a number of seconds, not {value!r}")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise errors.UsageError(f"{what} must be {'>= 0' if zero else '> 0'} seconds, not {value!r}")
    return seconds


def check_statuses(statuses: Iterable[str] | None) -> list[str]:
    """The finished statuses gc may delete (None: all of them)."""
    if statuses is None:
        return list(FINISHED)
    if isinstance(statuses, str) or not isinstance(statuses, Iterable):
        raise errors.UsageError(f"statuses must be a list of statuses, e.g. ['SUCCESS', 'CANCELLED'], not {statuses!r}")
    chosen = list(dict.fromkeys(statuses))
    wrong = [s for s in chosen if s not in FINISHED]
    if wrong or not chosen:
        raise errors.UsageError(
            f"statuses must be finished statuses among {', '.join(FINISHED)} (a PENDING or ENQUEUED "
            f"workflow is never deleted), not {wrong[0] if wrong else 'an empty list'!r}"
        )
    return chosen


class Retention:
    """Deleting finished workflows (a part of ``Engine``): ``gc`` on demand,
    and the background passes of ``Engine(retention=...)`` (``start`` and
    ``stop``, by the lifecycle, on an executor engine)."""

    def __init__(self, clock: Clock, retention: float | None, check_open: Callable[[], None], journal: Journal) -> None:
        self.clock = clock
        self.retention = retention  # seconds; None: keep everything
        self.check_open = check_open
        self.journal = journal  # the open engine's writer (open())
        self.batch = BATCH
        self.loop: RetentionLoop | None = None

    def open(self, journal: Journal) -> None:
        self.journal = journal

    def gc(self, older_than: timedelta | float, statuses: Iterable[str] | None = None) -> GcReport:
        """Delete the workflows that ended longer ago than ``older_than`` (a
        ``datetime.timedelta`` or seconds, >= 0; 0: every finished one),
        with everything that belongs to them: steps, messages waiting for
        them, events, queue entries and their dedup keys, send keys,
        notices. Returns a ``durably.GcReport`` of what went.

        ``statuses`` narrows which finished workflows go (default: SUCCESS,
        ERROR, CANCELLED and MAX_RECOVERY_ATTEMPTS_EXCEEDED). Never deleted:
        a PENDING workflow (running, parked, waiting in a queue), nor a
        child whose parent stays (its parent's replay needs its outcome).
        A workflow id whose row is gone starts anew if used again.

        Works on a client engine too, and while other processes run
        workflows on the database: batches of a few hundred workflows, each
        committed on its own (docs/operations/retention.md). Bad input (a negative
        or non-numeric age, an unknown status): UsageError, nothing deleted.

        Example::

            report = engine.gc(older_than=timedelta(days=7))
            print(report.workflows, "workflows deleted")
        """
        seconds = seconds_of(older_than, "older_than", zero=True)
        chosen = check_statuses(statuses)
        if current.get() is not None:
            raise errors.UsageError(
                "engine.gc() was called inside a workflow or step; call it from outside workflow code"
            )
        self.check_open()
        return self.run_pass(seconds, chosen, lambda: False)

    def run_pass(
        self,
        older_than: float,
        statuses: list[str],
        stopping: Callable[[], bool],
        pause: Callable[[float], object] | None = None,
    ) -> GcReport:
        """One pass: batches until none is left (or ``stopping()``), then
        the freed pages handed back; ``pause(seconds)`` after each batch
        (the background passes' pacing, see DUTY)."""
        cutoff = math.inf if older_than == 0 else self.clock.now() - older_than
        report = GcReport()
        after: tuple[float, int] = (-math.inf, -1)
        while not stopping():
            counts, cursor, took = self._op("gc", cutoff, statuses, after, self.batch)
            if cursor is None:
                break
            after = cursor
            report += GcReport(**counts, batches=1, longest_batch=took)
            self._adapt(took)
            if pause is not None:
                pause(took * (1 / DUTY - 1))
        if report.workflows:
            report += GcReport(pages_freed=self.vacuum(stopping))
        return report

    def vacuum(self, stopping: Callable[[], bool]) -> int:
        freed = 0
        while not stopping():
            pages = int(self._op("vacuum", VACUUM_PAGES))
            freed += pages
            if pages < VACUUM_PAGES:
                break
        return freed

    def _op(self, op: str, *args: Any) -> Any:
        rec = Record(R.OP, (None, None, op, op, args))
        self.journal.submit(rec)
        if rec.error is not None:
            raise rec.error
        return rec.result[0]

    def _adapt(self, took: float) -> None:
        if took > HOLD:
            self.batch = max(BATCH_MIN, self.batch // 2)
        elif took < HOLD / 4:
            self.batch = min(BATCH_MAX, self.batch * 2)

    # -- the background passes ---------------------------------------------------------------

    def start(self) -> None:
        """At open (an executor with a retention): start the passes."""
        if self.retention is not None:
            self.loop = RetentionLoop(self, self.retention, self.journal)
            self.loop.start()

    def stop(self) -> None:
        """At close: a pass under way stops after its current batch."""
        if self.loop is not None:
            self.loop.stop()
            self.loop = None


class RetentionLoop(BackgroundLoop):
    """One thread running a retention pass every ``min(retention / 10,
    INTERVAL_MAX)`` seconds on the engine's clock, the first FIRST_PASS
    seconds after open."""

    thread_name = "durably-retention"

    def __init__(self, retention: Retention, seconds: float, journal: Journal) -> None:
        super().__init__(retention.clock, journal)
        self.retention = retention
        self.seconds = seconds
        self.interval = min(seconds / 10, INTERVAL_MAX)
        self.due = retention.clock.now() + min(FIRST_PASS, self.interval)

    def run_round(self) -> float | None:
        began = self.clock.now()
        if began < self.due:
            return self.due  # (woken early: a kick)
        report = self.retention.run_pass(self.seconds, list(FINISHED), self._stopped, self._pause)
        if report.workflows:
            log.info(
                "durably: retention deleted %d workflow(s) that ended more than %.0f s ago (%d batches, "
                "longest %.1f ms)",
                report.workflows,
                self.seconds,
                report.batches,
                report.longest_batch * 1000,
                extra=_logs.fields("retention.deleted"),
            )
        # From the pass's start: if the clock moved past the next pass meanwhile
        # (a long pass; a VirtualClock advanced), that pass runs at once.
        self.due = began + self.interval
        return self.due

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` of real time (a virtual clock cannot hold it
        back), or until the loop is stopped."""
        with self._lock:
            if self._stopping:
                return
            waiter = self._waiter
        waiter.thread_event().wait(seconds)
