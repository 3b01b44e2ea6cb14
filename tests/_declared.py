"""Workflows, steps, a transaction step, a queue and a schedule declared
without an engine (tests/test_registry.py binds them to several)."""

from __future__ import annotations

from datetime import datetime

import durably

reg = durably.Registry()
bodies: list[str] = []  # step bodies run, in order (each test clears it)


@reg.step()
def double(x: int) -> int:
    bodies.append(f"double({x})")
    return 2 * x


@reg.step()
async def triple(x: int) -> int:
    bodies.append(f"triple({x})")
    return 3 * x


@reg.transaction()
def count(db: durably.Tx, x: int) -> int:
    return x + 1


@reg.workflow()
def child(x: int) -> int:
    return double(x) + count(x)


jobs = reg.queue("declared-jobs", concurrency=2)


@reg.workflow()
def parent(x: int) -> list[int]:
    """A child called directly, one enqueued on the declared queue."""
    queued = jobs.enqueue(child, x + 1)
    return [child(x), queued.result()]


@reg.workflow()
async def async_parent(x: int) -> int:
    queued = await jobs.enqueue_async(child, x)
    return await triple(x) + await queued.result_async()


# A registry of its own: bound only where the test drives a virtual clock
# (on the others, a real 5-minute boundary would fire it mid-test).
ticks = durably.Registry()


@ticks.workflow()
def tick(slot: datetime) -> str:
    return slot.isoformat()


ticks.schedule("declared-five", "*/5 * * * *", tick)
