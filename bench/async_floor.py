"""The floor of the asyncio path, without durably.

1,024 tasks x 10 awaits of a future that a second thread resolves a batch at
a time (one ``call_soon_threadsafe`` per batch), as durably's journal does;
with ``--sqlite`` the second thread also commits one row per await in each
batch (WAL, ``synchronous=full``). What durably's asyncio path could reach
if a step cost nothing but its future and its row:

    python bench/async_floor.py [--reps 5] [--workflows 1024] [--steps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from typing import Any

import apsw


def run(workflows: int, steps: int, sqlite: bool) -> float:
    """Awaits per second of one round."""
    loop = asyncio.new_event_loop()
    pending: list[tuple[Any, int, int]] = []
    cv = threading.Condition()
    done = False

    def resolve(batch: list[asyncio.Future[None]]) -> None:
        for fut in batch:
            fut.set_result(None)

    def writer(conn: apsw.Connection | None) -> None:
        nonlocal pending
        while True:
            with cv:
                while not pending and not done:
                    cv.wait()
                if done and not pending:
                    return
                batch, pending = pending, []
            if conn is not None:
                with conn:
                    conn.executemany("INSERT INTO steps VALUES (?, ?, 's', x'01')", [(w, p) for _f, w, p in batch])
            loop.call_soon_threadsafe(resolve, [f for f, _w, _p in batch])

    with tempfile.TemporaryDirectory() as tmp:
        conn = None
        if sqlite:
            conn = apsw.Connection(os.path.join(tmp, "floor.db"))
            conn.execute("PRAGMA journal_mode = wal; PRAGMA synchronous = full")
            conn.execute(
                "CREATE TABLE steps (wid INTEGER, pos INTEGER, name TEXT, output BLOB, PRIMARY KEY (wid, pos))"
            )
        thread = threading.Thread(target=writer, args=(conn,))
        thread.start()

        async def workflow(i: int) -> None:
            for p in range(steps):
                fut = loop.create_future()
                with cv:
                    pending.append((fut, i, p))
                    cv.notify()
                await fut

        async def main() -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*(workflow(i) for i in range(workflows)))
            return time.perf_counter() - t0

        try:
            elapsed = loop.run_until_complete(main())
        finally:
            with cv:
                done = True
                cv.notify()
            thread.join()
            loop.close()
            if conn is not None:
                conn.close()
    return workflows * steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workflows", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    for sqlite in (False, True):
        rates = [run(args.workflows, args.steps, sqlite) for _ in range(args.reps)]
        print(
            f"{'with' if sqlite else 'without'} SQLite: median {statistics.median(rates):,.0f} awaits/s"
            f" (min {min(rates):,.0f}, max {max(rates):,.0f}, {args.reps} runs)"
        )


if __name__ == "__main__":
    main()
