"""Workflows for tests/test_copy.py, and a worker process that leaves them
in flight: ``python tests/_copyworker.py DB LEDGER READY`` runs them on DB
until every one reached its waiting point, writes the file READY, and
blocks until killed. Every step body appends ``<workflow id> <label>`` to
the text file LEDGER, so a test sees which bodies ran where.

In flight when READY appears: ``steps`` (three steps recorded, the fourth's
body blocked: HOLD), ``sleeper`` (sleeping), ``waiter`` (waiting on recv,
an event set, a message on another topic waiting for it), ``parent``
(waiting on ``child``, which waits on recv), ``queued`` (enqueued on the
queue ``serial``, of concurrency 1, behind ``steps``). Finished: ``ok`` (SUCCESS), ``bad``
(ERROR), ``stopped`` (CANCELLED). A schedule, and a send with an
idempotency key.
"""

from __future__ import annotations

import os
import sys
import time

import durably

SLEEP = 5.0  # the sleeper's durable sleep (seconds)
IN_FLIGHT = ("steps", "sleeper", "waiter", "parent", "queued")  # and the parent's child


def build(engine: durably.Engine, ledger: str, hold: bool) -> None:
    """Register the workflows on ``engine``; ``hold``: the ``hold`` step body
    blocks for ever (the worker), else it returns (a destination)."""

    def note(label: str) -> None:
        with open(ledger, "a") as f:  # the ledger is a text file, not a database
            f.write(f"{engine.workflow_id} {label}\n")

    @engine.step(name="work")
    def work(label: str) -> str:
        note(label)
        if label == "hold" and hold:
            while True:
                time.sleep(1)
        return label.upper()

    @engine.workflow(name="steps")
    def steps() -> str:
        done = [work(f"s{i}") for i in range(3)]
        return "".join(done) + work("hold") + work("s3")

    @engine.workflow(name="sleeper")
    def sleeper() -> str:
        work("before")
        engine.sleep(SLEEP)
        return work("after")

    @engine.workflow(name="waiter")
    def waiter() -> str:
        work("before")
        engine.set_event("stage", "waiting")
        got = engine.recv("go")
        return work(f"after-{got}")

    @engine.workflow(name="child")
    def child() -> str:
        work("c0")
        got = engine.recv("go")
        return work(f"c1-{got}")

    @engine.workflow(name="parent")
    def parent() -> str:
        work("p0")
        handle = engine.start(child)  # a child: its id derives from the parent's
        return work("p1") + handle.result()

    @engine.workflow(name="queued")
    def queued() -> str:
        return work("q")

    @engine.workflow(name="ok")
    def ok(n: int) -> int:
        work("one")
        return n * 2

    @engine.workflow(name="bad")
    def bad() -> None:
        work("one")
        raise ValueError("broken on purpose")


def set_up(engine: durably.Engine) -> None:
    """Start everything (module docstring) and return once each in-flight
    workflow reached its waiting point."""
    serial = engine.queue("serial", concurrency=1)
    engine.run("ok", 21, workflow_id="ok")
    try:
        engine.run("bad", workflow_id="bad")
    except durably.WorkflowFailedError:
        pass
    engine.start("waiter", workflow_id="stopped")
    engine.start("waiter", workflow_id="waiter")
    engine.start("parent", workflow_id="parent")
    serial.enqueue("steps", workflow_id="steps")
    serial.enqueue("queued", workflow_id="queued", priority=3)
    engine.send("waiter", {"note": "kept"}, topic="other", idempotency_key="k-1")
    engine.schedule("nightly", "0 3 * * *", "ok")
    _until(lambda: engine.get_event("stopped", "stage", timeout=0) == "waiting")
    engine.cancel("stopped")
    _until(lambda: engine.get_event("waiter", "stage", timeout=0) == "waiting")
    _until(lambda: [s.name for s in engine.steps(child_of(engine, "parent"))].count("work") == 1)
    _until(lambda: len(engine.steps("steps")) == 3)
    engine.start("sleeper", workflow_id="sleeper")  # last: it must still sleep when the worker is killed
    _until(lambda: len(engine.steps("sleeper")) == 2)
    time.sleep(0.3)  # the waits' own steps (recv) recorded


def child_of(engine: durably.Engine, parent: str) -> str:
    """The id of ``parent``'s one child."""
    (info,) = engine.list_workflows(parent_id=parent)
    return info.workflow_id


def _until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except durably.DurablyError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the workflows did not reach their waiting points")
        time.sleep(0.05)


def main(db: str, ledger: str, ready: str) -> None:
    engine = durably.Engine(db)
    build(engine, ledger, hold=True)
    with engine:
        set_up(engine)
        with open(ready, "w") as f:
            f.write(str(os.getpid()))
        while True:
            time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
