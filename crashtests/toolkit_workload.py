"""Crash-harness workload for the toolkit: messages, events, durable sleep,
a queue with a concurrency limit and a per-second cron schedule, in one process that may be killed at
any moment. Writes fsynced ledger lines and, if it finishes, its results.

    python toolkit_workload.py DB LEDGER [--messages N] [--jobs K]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import threading
import time
from datetime import datetime

import durably

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ledger import write_record
from vfs import install_from_env  # the power-loss shim, when DURABLY_VFS is set

parser = argparse.ArgumentParser()
parser.add_argument("db")
parser.add_argument("ledger")
parser.add_argument("--messages", type=int, default=12)
parser.add_argument("--jobs", type=int, default=8)
opts = parser.parse_args()

shim = install_from_env()
engine = durably.Engine(opts.db, workers=8, vfs="shim" if shim else None)
queue = engine.queue("q", concurrency=2)
ledger_fd = os.open(opts.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
lock = threading.Lock()
running = [0, 0]  # now, peak in this process


def log(*fields: object) -> None:
    write_record(ledger_fd, *fields, os.getpid())


@engine.workflow(name="consumer")
def consumer(n: int) -> list:
    got = []
    for i in range(n):
        got.append(engine.recv("m"))
        engine.set_event("count", i + 1)
    return got


@engine.workflow(name="producer")
async def producer(n: int) -> int:
    for i in range(n):
        await engine.send_async("consumer", i, topic="m")
        if i % 4 == 0:
            await engine.sleep_async(0.02)
    return n


@engine.workflow(name="sleeper")
def sleeper(seconds: float) -> float:
    before = engine.now().timestamp()
    engine.sleep(seconds)
    slept = time.time() - before
    log("W", seconds, f"{slept:.4f}")
    return slept


@engine.step(name="work")
def work(i: int) -> int:
    with lock:
        running[0] += 1
        running[1] = max(running[1], running[0])
        log("Q", running[0])
    time.sleep(random.uniform(0, 0.05))
    with lock:
        running[0] -= 1
    return i


@engine.workflow(name="job")
def job(i: int) -> int:
    return work(i)


@engine.step(name="tock")
def tock(slot: str) -> str:
    log("T", slot)
    return slot


@engine.workflow(name="tick")
def tick(slot: datetime) -> str:
    return tock(slot.isoformat())


engine.schedule("tick", "* * * * * *", tick, missed="all")  # every second (croniter's 6th field)


async def main() -> dict:
    handles = [
        engine.start(consumer, opts.messages, workflow_id="consumer"),
        await engine.start_async(producer, opts.messages, workflow_id="producer"),
        engine.start(sleeper, 0.6, workflow_id="sleeper"),
    ]
    handles += [queue.enqueue(job, i, workflow_id=f"job-{i}", dedup_key=f"job-{i}") for i in range(opts.jobs)]
    results = {h.workflow_id: await h.result_async(timeout=60) for h in handles}
    results["count-event"] = engine.get_event("consumer", "count", timeout=5)
    # let the schedule fire at least one slot in this run, and that slot finish
    first = len(engine.list_workflows(name="tick", status="SUCCESS", limit=100_000))
    for _ in range(300):
        if len(engine.list_workflows(name="tick", status="SUCCESS", limit=100_000)) > first:
            break
        await asyncio.sleep(0.01)
    return results


with engine:
    out = asyncio.run(main())
json.dump(out, sys.stdout)
