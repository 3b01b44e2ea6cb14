"""durably's loggers, and the structured fields every record of theirs carries.

One hierarchy under ``durably`` (configure that one logger to see them all):

* ``durably.engine``    opening and closing, the engine's background threads
* ``durably.store``     the journal writer and its database (locks, lost
  connections, records that failed, checkpoints)
* ``durably.workflows`` a workflow's end in ERROR, a park, an interruption
* ``durably.steps``     step retries
* ``durably.recovery``  workflows recovered at open and taken over from
  executors that are gone
* ``durably.leases``    this executor's lease and what fencing refused
* ``durably.queues``    the queue dispatcher
* ``durably.schedules`` the schedule runner
* ``durably.retention`` the background deletion of old workflows

Every record passes ``extra=fields(event, ...)``: ``durably_event`` names it
(the table in docs/guides/observability.md, "Logging", lists each, with its logger, level and why;
tests/test_logging.py keeps the two in step), and ``workflow_id``,
``workflow_name``, ``step`` and ``step_position`` are always set (None when
the event concerns no single workflow or step), so a formatter may use them
on any durably record. Nothing is logged per step at INFO or above.
"""

from __future__ import annotations

import logging
from typing import Any

ROOT = "durably"
LOGGERS = (
    "durably.engine",
    "durably.store",
    "durably.workflows",
    "durably.steps",
    "durably.recovery",
    "durably.leases",
    "durably.queues",
    "durably.schedules",
    "durably.retention",
)


def get(name: str) -> logging.Logger:
    """One of ``LOGGERS`` (a typo is a bug, not a new logger)."""
    if name not in LOGGERS:
        raise ValueError(f"{name!r} is not one of durably's loggers {LOGGERS}")
    return logging.getLogger(name)


def fields(
    event: str,
    workflow_id: str | None = None,
    workflow_name: str | None = None,
    step: str | None = None,
    step_position: Any = None,
    **more: Any,
) -> dict[str, Any]:
    """The ``extra`` of a durably log record (see the module docstring)."""
    return {
        "durably_event": event,
        "workflow_id": workflow_id,
        "workflow_name": workflow_name,
        "step": step,
        "step_position": step_position,
        **more,
    }


def many(event: str, workflow_ids: list[str], **more: Any) -> dict[str, Any]:
    """``fields`` of an event about several workflows: ``workflow_id`` set
    when there is one, ``workflow_ids`` the first hundred."""
    return fields(event, workflow_ids[0] if len(workflow_ids) == 1 else None, workflow_ids=workflow_ids[:100], **more)
