"""Crash-harness workload for retention (crashtests/test_gc_crashes.py).

    python gc_workload.py DB setup   # finished trees, events, messages, queue entries,
                                     # send keys; pending ones and a pending parent's child
    python gc_workload.py DB gc      # a client engine: gc(older_than=0) in batches of 8,
                                     # until nothing is left (killed at random, or at a crash point)

``setup`` prints the ids that must never go (JSON); ``gc`` prints its report.
"""

from __future__ import annotations

import json
import sys
import time

import durably
from durably.runtime import retention

db, mode = sys.argv[1], sys.argv[2]
TREES = 300


def setup() -> None:
    engine = durably.Engine(db, workers=16)
    queue = engine.queue("q")

    @engine.step(name="inc")
    def inc(x: int) -> int:
        return x + 1

    @engine.workflow(name="leaf")
    def leaf(i: int) -> int:
        engine.set_event("leaf", i)
        return inc(i)

    @engine.workflow(name="tree")
    def tree(i: int) -> int:
        return leaf(i) + leaf(i + 1) + inc(i)

    @engine.workflow(name="waiter")
    def waiter() -> str:
        inc(0)
        return str(engine.recv("go"))

    @engine.workflow(name="holder")
    def holder() -> str:
        leaf(7)  # a finished child of a pending parent: stays
        return str(engine.recv("go"))

    with engine:
        handles = [engine.start(tree, i, workflow_id=f"tree-{i}") for i in range(TREES)]
        handles += [queue.enqueue(leaf, i, workflow_id=f"queued-{i}", dedup_key=f"d{i}") for i in range(20)]
        keep = [engine.start(waiter, workflow_id=f"keep-{i}") for i in range(5)]
        keep.append(engine.start(holder, workflow_id="holder"))
        for h in handles:
            h.result(timeout=60)
        while any(len(engine.steps(h.workflow_id)) < 1 for h in keep):
            time.sleep(0.01)
        for i in range(0, TREES, 3):
            engine.send(f"tree-{i}", i, topic="never-read", idempotency_key=f"k{i}")
        engine.send("keep-0", "early", topic="other")
        stay = [w.workflow_id for w in engine.list_workflows(limit=None) if w.status == "PENDING"]
        stay += [w.workflow_id for w in engine.list_workflows(parent_id="holder", limit=None)]
    print(json.dumps(sorted(stay)))


def gc() -> None:
    retention.BATCH = retention.BATCH_MIN = retention.BATCH_MAX = 8  # many small batches to kill between
    with durably.Engine(db, client=True) as engine:
        report = engine.gc(older_than=0)
    print(json.dumps({"workflows": report.workflows, "batches": report.batches}))


setup() if mode == "setup" else gc()
