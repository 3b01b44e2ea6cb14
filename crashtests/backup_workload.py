"""A workload that backs its database up while it runs, for
crashtests/test_backup_crashes.py (and bench/scenarios/backup.py's shape).

    python crashtests/backup_workload.py DB DEST LEDGER FILL

Opens DB (filling a fresh one with FILL finished workflows carrying 2 KiB
each), starts WAITERS workflows that record a step and then wait for a
message (pending), keeps starting short workflows from a thread, and calls
``engine.backup(DEST)``. The LEDGER (a text file, not a database) gets
``ack ID`` once a start returned, ``began`` right before the backup is
called and ``done PAGES`` after it returned: every id acknowledged before
``began`` must be in the copy. ``DURABLY_CRASH_AT`` kills it at a point.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import durably

WAITERS = 5
PAD = "x" * 2048

engine = durably.Engine(sys.argv[1])


@engine.step()
def record(i: int, pad: str) -> str:
    return f"{i}:{pad}"


@engine.workflow(name="backup_workload.filler")
def filler(i: int) -> int:
    return len(record(i, PAD))


@engine.workflow(name="backup_workload.waiter")
def waiter(i: int) -> str:
    record(i, "")
    return str(engine.recv(topic="go", timeout=3600))


def main(dest: str, ledger_path: str, fill: int) -> None:
    ledger = open(ledger_path, "a", buffering=1)  # the harness's ledger, never a database file
    stop = threading.Event()

    def note(line: str) -> None:
        ledger.write(line + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())

    def load() -> None:
        n = 0
        while not stop.is_set():
            wid = f"quick-{os.getpid()}-{n}"
            engine.start(filler, n, workflow_id=wid)
            note(f"ack {wid}")
            n += 1
            time.sleep(0.001)

    with engine:
        if not engine.list_workflows(limit=1):
            for chunk in range(0, fill, 500):
                handles = [engine.start(filler, i) for i in range(chunk, min(fill, chunk + 500))]
                for h in handles:
                    h.result(timeout=120)
        for i in range(WAITERS):
            wid = f"waiter-{os.getpid()}-{i}"
            engine.start(waiter, i, workflow_id=wid)
            while not engine.steps(wid):
                time.sleep(0.005)
            note(f"ack {wid}")
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(0.2)
        note("began")
        report = engine.backup(dest)
        note(f"done {report.pages}")
        stop.set()
        loader.join()


if __name__ == "__main__":
    main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
