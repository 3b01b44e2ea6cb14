"""A crash-test workload of concurrent async workflows, killed and restarted
by ``test_gather_crashes.py``.

    python crashtests/gather_workload.py DB LEDGER [--workflows N]

Each workflow runs branches under ``asyncio.gather`` (each branch two
sequential steps), an ``as_completed`` race whose arrival order picks which
step runs next, a ``wait(FIRST_COMPLETED)`` between a durable sleep and a
child workflow, and a receive of a message it sent itself. Step bodies sleep
random times, so the interleaving differs from run to run. Every step body
appends ``E|workflow|key|pid`` to LEDGER before returning; after the step
returns to the workflow (its outcome is durable), ``A|workflow|key|pid``. The
result of each workflow is a function of its id, whatever the interleaving.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys

import durably

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ledger import write_record

parser = argparse.ArgumentParser()
parser.add_argument("db")
parser.add_argument("ledger")
parser.add_argument("--workflows", type=int, default=6)
opts = parser.parse_args()

engine = durably.Engine(opts.db)
ledger_fd = os.open(opts.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
rng = random.Random()


def log(kind: str, key: str) -> None:
    write_record(ledger_fd, kind, engine.workflow_id, key, os.getpid())


@engine.step(name="work")
async def work(key: str, value: int) -> int:
    log("E", key)
    await asyncio.sleep(rng.uniform(0, 0.15))
    return value


marks = []
for i in range(3):

    @engine.step(name=f"arrived{i}")
    async def arrived(key: str, i: int = i) -> int:
        log("E", key)
        return i

    marks.append(arrived)


async def step(key: str, value: int) -> int:
    out = await work(key, value)
    log("A", key)
    return out


async def branch(b: int) -> int:
    first = await step(f"b{b}.0", b)
    return await step(f"b{b}.1", first * 10)


@engine.workflow(name="kid")
async def kid(n: int) -> int:
    return await step("kid", n)


@engine.workflow(name="flow")
async def flow(n: int) -> int:
    total = sum(await asyncio.gather(*[branch(b) for b in range(3)]))  # 0 + 10 + 20
    order = []
    for fut in asyncio.as_completed([asyncio.ensure_future(step(f"r{i}", i)) for i in range(3)]):
        i = await fut
        order.append(await marks[i](f"m{i}"))  # the step called depends on the arrival order
        log("A", f"m{i}")
    sleeper = asyncio.ensure_future(engine.sleep_async(rng.uniform(0, 0.3)))
    child = asyncio.ensure_future(kid(n))
    await asyncio.wait({sleeper, child}, return_when=asyncio.FIRST_COMPLETED)
    total += await child + sorted(order)[2]
    await sleeper
    await engine.send_async(engine.workflow_id, n, topic="self")
    return total + int(await engine.recv_async("self"))  # 30 + n + 2 + n


async def main() -> dict[str, int]:
    handles = [await engine.start_async(flow, i, workflow_id=f"g-{i}") for i in range(opts.workflows)]
    return {h.workflow_id: await h.result_async(timeout=120) for h in handles}


with engine:
    results = asyncio.run(main())
    parked = [i.workflow_id for i in engine.list_workflows(limit=None) if i.parked]
json.dump({"results": results, "parked": parked}, sys.stdout)
