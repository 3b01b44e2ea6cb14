"""Helpers of the schedule tests (test_schedule_management.py,
test_schedule_time_zones.py): an engine with a ``tick`` workflow, and
waiting for the schedule runner to settle."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import durably

T0 = datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp()
PARIS = "Europe/Paris"


def tick_engine(make_engine: Callable[..., durably.Engine], clock: durably.Clock, fired: list[Any]) -> durably.Engine:
    """An engine whose ``tick`` workflow records the slot it was given."""
    engine = make_engine(clock=clock)

    @engine.workflow(name="tick")
    def tick(slot: datetime) -> str:
        fired.append(slot)
        return slot.isoformat()

    return engine


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.01)


def settle(engine: durably.Engine, count: int) -> list[str]:
    """Wait for ``count`` finished workflows, give the runner a moment to do
    anything more it would (wrongly) do, and return all workflow ids, oldest first."""
    until(lambda: len(engine.list_workflows(status="SUCCESS", limit=None)) >= count, "schedule did not fire")
    time.sleep(0.1)
    return [w.workflow_id for w in engine.list_workflows(limit=None, newest_first=False)]
