"""The application of tests/test_litestream.py: an engine with
``checkpoints="external"`` (Litestream checkpoints the file), running until
killed. It starts WAITERS workflows that record a step and wait for a
message, then keeps starting short ones; LEDGER (a text file) gets
``ack ID`` once a start returned (and, for a waiter, its step was recorded).

    python tests/_litestream_app.py DB LEDGER
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

import durably

WAITERS = 5


def make_engine(path: str, runs: Counter[str] | None = None, **kw: object) -> durably.Engine:
    """The engine with this application's workflows (the test opens the restored file with it);
    ``runs`` counts the step-body runs per workflow."""
    engine = durably.Engine(path, checkpoints="external", **kw)  # type: ignore[arg-type]
    counts: Counter[str] = Counter() if runs is None else runs

    @engine.step(name="work")
    def work(wid: str) -> str:
        counts[wid] += 1
        return wid * 40

    @engine.workflow(name="quick")
    def quick(wid: str) -> int:
        return len(work(wid))

    @engine.workflow(name="waiter")
    def waiter(wid: str) -> str:
        work(wid)
        return str(engine.recv(topic="go", timeout=3600))

    return engine


def main(path: str, ledger_path: str) -> None:
    engine = make_engine(path)
    ledger = open(ledger_path, "a", buffering=1)  # the test's ledger, never a database file
    with engine:
        for i in range(WAITERS):
            wid = f"waiter-{i}"
            engine.start("waiter", wid, workflow_id=wid)
            while not engine.steps(wid):
                time.sleep(0.005)
            ledger.write(f"ack {wid}\n")
        n = 0
        while True:
            wid = f"quick-{n}"
            engine.start("quick", wid, workflow_id=wid)
            ledger.write(f"ack {wid}\n")
            os.fsync(ledger.fileno())
            n += 1
            time.sleep(0.002)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
