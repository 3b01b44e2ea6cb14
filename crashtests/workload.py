"""A crash-test workload: run as a subprocess, killed and restarted by the harness.

    python crashtests/workload.py DB LEDGER [--workflows N] [--steps K] [--synchronous full]

Starts a fixed set of workflows (sync, async, parents with a child) under
fixed ids, so a restart re-issues the same starts idempotently, waits for all
of them and prints their results as JSON. Every step body appends one fsynced
line ``E|workflow_id|position|input|pid`` to LEDGER *before* returning a
fresh random value, so the checker can tell which bodies ran, in which
process, and on which input (a step that ran on an input that was later
erased is speculative progress). After a step returns to the workflow (its
outcome is durable: acknowledged), the workflow appends
``A|workflow_id|position|output|pid``: an acknowledged outcome must survive.

``DURABLY_VFS`` arms the power-loss / disk-fault shim of ``crashtests/vfs.py``;
``DURABLY_CHECKPOINT_FRAMES`` lowers the WAL size that makes a checkpoint due.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

import durably

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ledger import write_record
from vfs import install_from_env

parser = argparse.ArgumentParser()
parser.add_argument("db")
parser.add_argument("ledger")
parser.add_argument("--workflows", type=int, default=6)
parser.add_argument("--steps", type=int, default=4)
parser.add_argument("--synchronous", default="full")
parser.add_argument("--delay", type=float, default=0.0, help="max seconds a step body sleeps")
opts = parser.parse_args()

shim = install_from_env()
if os.environ.get("DURABLY_CHECKPOINT_FRAMES"):  # many checkpoints under the cuts (test_power_loss.py)
    from durably.store import _checkpoint

    _checkpoint.FRAMES = int(os.environ["DURABLY_CHECKPOINT_FRAMES"])
    _checkpoint.LOOK_EVERY = 0.0
engine = durably.Engine(opts.db, synchronous=opts.synchronous, workers=8, vfs="shim" if shim else None)
ledger_fd = os.open(opts.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
rng = random.Random()


def log(kind: str, position: int, value: int) -> None:
    write_record(ledger_fd, kind, engine.workflow_id, position, value, os.getpid())


def effect(position: int, value: int) -> None:
    log("E", position, value)


def ack(position: int, value: int) -> int:
    log("A", position, value)
    return value


@engine.step()
def add(position: int, x: int) -> int:
    effect(position, x)
    if opts.delay:
        time.sleep(rng.uniform(0, opts.delay))
    return x + rng.randint(1, 1_000_000)


@engine.step()
async def add_async(position: int, x: int) -> int:
    effect(position, x)
    await asyncio.sleep(rng.uniform(0, opts.delay))
    return x + rng.randint(1, 1_000_000)


@engine.transaction()
def book(db: durably.Tx, position: int, x: int) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS effects (workflow_id TEXT, position INTEGER, value INTEGER)")
    db.execute("INSERT INTO effects VALUES (?, ?, ?)", (engine.workflow_id, position, x))
    return x


@engine.workflow()
def sync_flow(steps: int) -> int:
    s = 0
    for i in range(steps):
        s = ack(i, add(i, s))
    return ack(steps, book(steps, s))


@engine.workflow()
async def async_flow(steps: int) -> int:
    s = 0
    for i in range(steps):
        s = ack(i, await add_async(i, s))
    return ack(steps, await book(steps, s))


@engine.workflow()
def parent_flow(steps: int) -> int:
    child = sync_flow(steps)  # position 0: start the child, then wait for it
    return ack(1, add(1, child))


def plan() -> list[tuple[str, object]]:
    kinds = [("sync", sync_flow), ("async", async_flow), ("parent", parent_flow)]
    return [(f"{kinds[i % 3][0]}-{i}", kinds[i % 3][1]) for i in range(opts.workflows)]


async def main() -> dict[str, int]:
    handles = []
    for wid, fn in plan():
        if fn is async_flow:
            handles.append(await engine.start_async(fn, opts.steps, workflow_id=wid))
        else:
            handles.append(engine.start(fn, opts.steps, workflow_id=wid))
    return {h.workflow_id: await h.result_async(timeout=60) for h in handles}


try:
    with engine:
        results = asyncio.run(main())
except durably.StorageError as exc:  # an injected disk fault: report the typed error, exit 3
    cause = exc.__cause__
    json.dump(
        {
            "error": type(exc).__name__,
            "cause": type(cause).__name__ if cause else None,
            "io_ops": shim.shared.ops if shim else None,
        },
        sys.stdout,
    )
    sys.exit(3)
json.dump(
    {"results": results, "recovered": engine.recovery.resumed, "io_ops": shim.shared.ops if shim else None}, sys.stdout
)
