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


# The engine's durable calls, on the registry: each resolves against the
# engine running the calling workflow (its clock, its journal).


@reg.workflow()
def nap(seconds: float) -> float:
    """A durable sleep, timed by the running engine's durable clock."""
    start = reg.now()
    reg.sleep(seconds)
    return (reg.now() - start).total_seconds()


@reg.workflow()
async def nap_async(seconds: float) -> float:
    start = await reg.now_async()
    await reg.sleep_async(seconds)
    return (await reg.now_async() - start).total_seconds()


@reg.workflow()
def patched_flow(x: int) -> str:
    """A patched path, then a step and a sleep (a restart can land in it)."""
    new = reg.patched("declared-change")
    doubled = double(x)
    reg.sleep(60)
    return f"{'new' if new else 'old'}:{doubled}"


@reg.workflow()
def listener() -> str:
    return str(reg.recv("greeting", timeout=3600))


@reg.workflow()
def greeter(to: str, text: str) -> str:
    reg.send(to, text, topic="greeting")
    reg.set_event("sent", text)
    return reg.uuid4()


@reg.workflow()
async def listener_async() -> str:
    return str(await reg.recv_async("greeting", timeout=3600))
