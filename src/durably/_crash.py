"""Named crash points for the crash-injection harness (``crashtests/``).

Off by default at the cost of one module-attribute check per call site::

    if _crash.ARMED:
        _crash.hit("step.after_body")

``DURABLY_CRASH_AT=point:n`` makes the process SIGKILL itself on the n-th hit
of ``point`` (no cleanup, no flush: exactly like ``kill -9``).
``DURABLY_CRASH_LOG=path`` appends every hit's name to a file, so a sweep can
check that each registered point was reached.
"""

from __future__ import annotations

import os
import signal
from typing import Any

# Every crash point in the engine, in the order a step crosses them.
POINTS: tuple[str, ...] = (
    "workflow.before_start_record",
    "workflow.after_start_record",
    "step.before_body",
    "step.after_body",
    "journal.batch_built",
    "store.before_commit",
    "journal.after_commit",
    "journal.after_wake",
    "workflow.before_complete",
    "workflow.after_complete",
    "recovery.scan",
    "recovery.launched",
)

# The online backup's points (store/_backup.py; crashtests/test_backup_crashes.py):
# mid-copy, the copy fsynced but not yet in place, in place but its temporary name not removed.
BACKUP_POINTS: tuple[str, ...] = ("backup.step", "backup.before_place", "backup.after_place")

_spec = os.environ.get("DURABLY_CRASH_AT", "")
_log_path = os.environ.get("DURABLY_CRASH_LOG", "")
ARMED = bool(_spec or _log_path)
_target, _, _nth = _spec.partition(":")
_n = int(_nth or "1") if _spec else 0
_count = 0


def hit(point: str, *where: Any) -> None:
    """Record a hit of ``point``; die here if it is the armed one. ``where``:
    what the point is about (a step's points: workflow id, key, step name),
    for a hook that replaces this function (durably.testing's crash check)."""
    global _count
    if _log_path:
        with open(_log_path, "a") as f:  # the harness's log, never a database file
            f.write(point + "\n")
    if point == _target:
        _count += 1
        if _count == _n:
            os.kill(os.getpid(), signal.SIGKILL)
