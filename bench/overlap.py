"""How much the event loop's thread and the journal's writer overlap on the
asyncio workload (1,024 workflows x 10 steps, ``synchronous="full"``), and
what the writer waits for.

    python bench/overlap.py [--rounds 5] [--switch-interval 0.005]
    PYTHONPATH=../other/src python bench/overlap.py    # another tree

Per round (after one warm-up round), from the process itself:

- ``loop_cpu_ms``: the loop thread's CPU time;
- ``loop_idle_ms``: the time the loop spent blocked in its selector (nothing
  ready: every workflow waits for the journal);
- ``flush_ms`` / ``flush_cpu_ms``: the writer's time inside ``Store.flush``
  (one per batch), wall and CPU; the difference is what the writer waited
  for inside a batch: the disk's sync at ``COMMIT`` and, mostly, the GIL,
  which SQLite's calls hand away and the writer must win back after each;
- ``batches``: the journal's batches.

Prints one JSON line per round and the medians. With the two threads taking
turns (no overlap), ``wall ~= loop_cpu + loop_idle`` and ``loop_idle ~=
the writer's CPU``; with full overlap, ``loop_idle ~= 0``.
``--switch-interval`` sets ``sys.setswitchinterval`` (CPython's default is
5 ms: how long a thread waiting for the GIL waits before it asks for it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import selectors
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import durably
from durably.store import _store

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/scenarios, as bench/thread_cpu.py does
from scenarios import register_chain

_flushes: list[tuple[float, float]] = []  # (wall, cpu) of each flush
_idle = [0.0]
_loop_thread: list[int] = []


def _instrument() -> None:
    flush = _store.Store.flush

    def timed_flush(self: Any, batch: Any) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            flush(self, batch)
        finally:
            _flushes.append((time.perf_counter() - t0, time.thread_time() - c0))

    _store.Store.flush = timed_flush  # type: ignore[method-assign]

    select = selectors.DefaultSelector.select

    def timed_select(self: Any, timeout: float | None = None) -> Any:
        t0 = time.perf_counter()
        try:
            return select(self, timeout)
        finally:
            if threading.get_ident() in _loop_thread:
                _idle[0] += time.perf_counter() - t0

    selectors.DefaultSelector.select = timed_select  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--switch-interval", type=float, default=None)
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    _instrument()
    _loop_thread.append(threading.get_ident())
    n, k = args.workflows, args.steps
    engine = durably.Engine(str(Path(tempfile.mkdtemp(prefix="durably-overlap-")) / "overlap.db"))
    chain = register_chain(engine)

    async def go() -> None:
        handles = await asyncio.gather(*[engine.start_async(chain, k) for _ in range(n)])
        await asyncio.gather(*[h.result_async() for h in handles])

    rows: list[dict[str, float]] = []
    with engine:
        for r in range(args.rounds + 1):
            _flushes.clear()
            _idle[0] = 0.0
            c0, t0 = time.thread_time(), time.perf_counter()
            asyncio.run(go())
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            if r == 0:
                continue  # warm-up
            row = {
                "steps_per_s": n * k / wall,
                "wall_ms": wall * 1e3,
                "loop_cpu_ms": cpu * 1e3,
                "loop_idle_ms": _idle[0] * 1e3,
                "flush_ms": sum(w for w, _ in _flushes) * 1e3,
                "flush_cpu_ms": sum(c for _, c in _flushes) * 1e3,
                "batches": len(_flushes),
            }
            rows.append(row)
            print(json.dumps({key: round(v, 1) for key, v in row.items()}))
    summary: dict[str, Any] = {key: round(statistics.median(r[key] for r in rows), 1) for key in rows[0]}
    summary["switch_interval"] = sys.getswitchinterval()
    summary["durably"] = durably.__file__
    print("median", json.dumps(summary))


if __name__ == "__main__":
    main()
