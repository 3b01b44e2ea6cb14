"""The worker process of tests/test_cli.py: an executor Engine on DB running
the workflows below, until the file STOP appears (then it closes cleanly).

    python tests/_cliworker.py DB STOP
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime

import durably

db, stop = sys.argv[1], sys.argv[2]
engine = durably.Engine(db)


@engine.step(name="add")
def add(x: int, y: int) -> int:
    return x + y


@engine.workflow(name="waiter")
def waiter(x: int) -> int:
    """Records a step and an event, then waits for a message on "go"."""
    a = add(x, 1)
    engine.set_event("progress", a)
    got = engine.recv("go", timeout=600)
    return add(a, got)


@engine.workflow(name="parent")
def parent(x: int) -> int:
    return waiter(x) + 1  # its child (id parent-id/0) waits


@engine.workflow(name="quick")
def quick(x: int) -> int:
    return add(x, x)


@engine.workflow(name="tick")
def tick(now: datetime) -> str:
    return now.isoformat()


engine.queue("q", concurrency=2, rate_limit=(100, 1.0))
engine.schedule("hourly", "0 * * * *", tick)

with engine:
    print("ready", flush=True)
    while not os.path.exists(stop):
        time.sleep(0.05)
