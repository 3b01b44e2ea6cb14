"""A worker process for tests/test_processes.py: opens the engine on DB, with
the workflows below registered, runs until killed or told to stop (a file
``<LEDGER>.stop-<tag>`` appearing), and records every step body it runs in a
ledger (a separate SQLite file, through apsw) so the test can count re-runs.

    python tests/_procworker.py DB LEDGER TAG [lease] [start N]

``DURABLY_TEST_CLOCK_SKEW=seconds``: this process's ``time.time()`` runs that
far ahead (negative: behind), as on a host whose clock is off; with
``DURABLY_HOST`` set too, it looks like another machine. The ledger keeps
the true time.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import apsw

_true_time = time.time
SKEW = float(os.environ.get("DURABLY_TEST_CLOCK_SKEW", "0"))
if SKEW:
    time.time = lambda: _true_time() + SKEW  # what durably reads (the ledger does not)

import durably  # noqa: E402


def ledger(path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.setbusytimeout(10_000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS runs (wid TEXT, step TEXT, pid INTEGER, t0 REAL, t1 REAL)")
    return conn


def build(engine: durably.Engine, led: apsw.Connection) -> None:
    # One ledger connection for the engine's worker threads, one at a time:
    # apsw refuses a call while another thread's call is waiting for the
    # ledger's lock (ThreadingViolationError, which failed a step in CI).
    one_at_a_time = threading.Lock()

    def note(step: str, t0: float) -> None:
        with one_at_a_time:
            led.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?)", (engine.workflow_id, step, os.getpid(), t0, _true_time())
            )

    @engine.step(name="work")
    def work(i: int, seconds: float) -> int:
        t0 = _true_time()
        time.sleep(seconds)
        note(f"work{i}", t0)
        return i

    @engine.workflow(name="chain")
    def chain(n: int, seconds: float) -> int:
        return sum(work(i, seconds) for i in range(n))

    @engine.workflow(name="waiter")
    def waiter() -> str:
        work(0, 0.0)
        got = engine.recv("go")
        work(1, 0.0)
        return f"got {got}"

    @engine.workflow(name="double")
    def double(x: int) -> int:
        return 2 * work(0, 0.0) + 2 * x

    @engine.workflow(name="slot")
    def slot(i: int) -> int:
        return work(i, 0.2)

    engine.queue("q", concurrency=2)


def main() -> None:
    db, led_path, tag = sys.argv[1:4]
    lease = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    engine = durably.Engine(db, lease=lease) if lease else durably.Engine(db)
    led = ledger(led_path)
    build(engine, led)
    with engine:
        if len(sys.argv) > 6 and sys.argv[5] == "start":
            for k in range(int(sys.argv[6])):
                engine.start("waiter", workflow_id=f"{tag}-w{k}")
        print("ready", flush=True)
        while not os.path.exists(f"{led_path}.stop-{tag}"):
            time.sleep(0.05)


if __name__ == "__main__":
    main()
