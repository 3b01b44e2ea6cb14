"""The floor of the threaded path, without durably.

``--threads`` threads each run "workflows" of ``--steps`` steps back to back,
as ``durably.threads[c=64,full]`` does, where each workflow writes a start
record, one record per step and an end record, and each record is a call
that blocks its thread until a second thread has committed it: the thread
appends the record to a shared list and waits on a lock of its own; the
writer takes the whole list, commits one row per record in one transaction
(WAL, ``synchronous=full``, through apsw, which hands the GIL away while
SQLite works) and releases the waiters, as durably's journal does. No
encoding, no step body, nothing else: what the threaded row could reach if a
step cost nothing but its record's hand-offs.

    python bench/thread_floor.py [--reps 5] [--threads 64] [--steps 10] [--workflows 600]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from _thread import allocate_lock
from typing import Any

import apsw


def run(threads: int, steps: int, workflows: int, tmp: str) -> tuple[float, float]:
    """(steps per second, records per step) of one round."""
    pending: list[tuple[Any, str, int]] = []
    cv = threading.Condition()
    done = False
    conn = apsw.Connection(os.path.join(tmp, f"floor-{time.monotonic_ns()}.db"))
    conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", 2)
    conn.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, wid TEXT, pos INTEGER, output BLOB)")

    def writer() -> None:
        nonlocal pending
        while True:
            with cv:
                while not pending and not done:
                    cv.wait()
                if done and not pending:
                    return
                batch, pending = pending, []
            with conn:
                conn.executemany("INSERT INTO records (wid, pos, output) VALUES (?, ?, x'01')", [r[1:] for r in batch])
            for waiter, _wid, _pos in batch:
                waiter.release()

    def record(wid: str, pos: int) -> None:
        waiter = allocate_lock()
        waiter.acquire()
        with cv:
            pending.append((waiter, wid, pos))
            cv.notify()
        waiter.acquire()

    per_thread = max(2, workflows // threads)

    def worker(t: int) -> None:
        for w in range(per_thread):
            wid = f"{t}-{w}"
            record(wid, -1)  # the start
            for p in range(steps):
                record(wid, p)
            record(wid, steps)  # the end

    wt = threading.Thread(target=writer)
    wt.start()
    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    with cv:
        done = True
        cv.notify()
    wt.join()
    conn.close()
    return threads * per_thread * steps / elapsed, (steps + 2) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workflows", type=int, default=600, help="in all, split between the threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rates = [run(args.threads, args.steps, args.workflows, tmp)[0] for _ in range(args.reps)]
    print(
        f"{args.threads} threads x workflows of {args.steps} steps ({args.steps + 2} records each):"
        f" median {statistics.median(rates):,.0f} steps/s (min {min(rates):,.0f}, max {max(rates):,.0f},"
        f" {args.reps} runs)"
    )


if __name__ == "__main__":
    main()
