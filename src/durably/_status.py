"""Workflow statuses: a leaf module that the store and the runtime both
import (``durably.Status`` is re-exported by ``handle.py``)."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """Where a workflow stands. A parked workflow stays PENDING; see
    ``info().parked``. ENQUEUED: waiting in a queue, not started yet.
    MAX_RECOVERY_ATTEMPTS_EXCEEDED: a terminal state for a workflow whose
    process died at every attempt more than its ``max_recovery_attempts``
    (the dead-letter state; ``engine.resume`` takes it out)."""

    ENQUEUED = "ENQUEUED"
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"

    def __str__(self) -> str:
        return self.value


# Every status a user may filter by (``list_workflows(status=)``, the CLI).
STATUSES = tuple(s.value for s in Status)
# Statuses a workflow never leaves by itself.
TERMINAL = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})
