"""Benchmark scenarios. Each runs in a fresh process (``run.py --scenario``)
and returns a dict of figures; ``run.py`` interleaves repetitions and takes
medians."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

SCENARIOS: dict[str, Callable[[Path, bool], dict[str, Any]]] = {}


def scenario(fn: Callable[[Path, bool], dict[str, Any]]) -> Callable[[Path, bool], dict[str, Any]]:
    SCENARIOS[fn.__name__] = fn
    return fn


def _fresh(workdir: Path, name: str) -> str:
    path = workdir / f"{name}-{os.getpid()}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return str(path)


def _cleanup(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


@scenario
def fdatasync(workdir: Path, quick: bool) -> dict[str, Any]:
    """The disk's physical limit: append 4 KiB + fdatasync, as a WAL commit does."""
    n = 500 if quick else 2000
    path = workdir / f"fsync-{os.getpid()}.bin"  # a scratch file, not a database
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    lat = []
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()
    lat.sort()
    return {"ops_per_s": n / wall, "p50_us": lat[n // 2] * 1e6, "p99_us": lat[int(n * 0.99)] * 1e6}


@scenario
def sqlite_1row(workdir: Path, quick: bool) -> dict[str, Any]:
    """Raw SQLite limit through apsw: one ~100-byte row per transaction, WAL,
    synchronous=FULL (the same durability a step record gets)."""
    import apsw

    n = 500 if quick else 2000
    path = _fresh(workdir, "raw")
    conn = apsw.Connection(path)
    conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", 2)
    conn.execute("CREATE TABLE t (w TEXT, p INTEGER, name TEXT, out TEXT, PRIMARY KEY (w, p)) WITHOUT ROWID")
    row = "x" * 60
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?, ?, ?)", ("wf", i, "step", row))
        conn.execute("COMMIT")
    wall = time.perf_counter() - t0
    conn.close()
    _cleanup(path)
    return {"commits_per_s": n / wall}


def _engine(path: str, synchronous: str = "full"):
    import durably

    return durably.Engine(path, synchronous=synchronous)


@scenario
def sequential(workdir: Path, quick: bool) -> dict[str, Any]:
    """One workflow, N sequential steps: one durable commit (fsync) per step."""
    n = 500 if quick else 2000
    path = _fresh(workdir, "seq")
    engine = _engine(path)

    @engine.step(name="inc")
    def inc(x: int) -> int:
        return x + 1

    @engine.workflow(name="loop")
    def loop(k: int) -> int:
        x = 0
        for _ in range(k):
            x = inc(x)
        return x

    with engine:
        engine.run(loop, 10)
        t0 = time.perf_counter()
        assert engine.run(loop, n) == n
        wall = time.perf_counter() - t0
    _cleanup(path)
    return {"steps_per_s": n / wall, "us_per_step": wall / n * 1e6}


def _async_run(workdir: Path, workflows: int, steps: int, synchronous: str = "full") -> dict[str, Any]:
    import durably

    path = _fresh(workdir, "async")
    engine = _engine(path, synchronous)

    @engine.step(name="inc")
    async def inc(x: int) -> int:
        return x + 1

    @engine.workflow(name="chain")
    async def chain(k: int) -> int:
        x = 0
        for _ in range(k):
            x = await inc(x)
        return x

    async def go(count: int) -> float:
        t0 = time.perf_counter()
        handles = await asyncio.gather(*[engine.start_async(chain, steps) for _ in range(count)])
        results = await asyncio.gather(*[h.result_async() for h in handles])
        assert results == [steps] * count
        return time.perf_counter() - t0

    with engine:
        asyncio.run(go(64))  # warm-up
        b0, r0 = engine._journal.batches, engine._journal.records
        wall = asyncio.run(go(workflows))
        batches, records = engine._journal.batches - b0, engine._journal.records - r0
    _cleanup(path)
    total = workflows * steps
    return {
        "steps_per_s": total / wall,
        "workflows_per_s": workflows / wall,
        "commits": batches,
        "mean_batch": records / max(batches, 1),
        "implementation": durably.IMPLEMENTATION,
    }


@scenario
def async1024(workdir: Path, quick: bool) -> dict[str, Any]:
    """1,024 concurrent async workflows x 10 steps, synchronous=full."""
    return _async_run(workdir, 1024, 10)


@scenario
def threads64(workdir: Path, quick: bool) -> dict[str, Any]:
    """64 threads, each running sync workflows of 10 steps back to back."""
    per_thread = 3 if quick else 8
    steps = 10
    path = _fresh(workdir, "threads")
    engine = _engine(path)

    @engine.step(name="inc")
    def inc(x: int) -> int:
        return x + 1

    @engine.workflow(name="chain")
    def chain(k: int) -> int:
        x = 0
        for _ in range(k):
            x = inc(x)
        return x

    def worker() -> None:
        for _ in range(per_thread):
            assert chain(steps) == steps  # a direct call runs it in this thread

    with engine:
        worker()
        threads = [threading.Thread(target=worker) for _ in range(64)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    _cleanup(path)
    total = 64 * per_thread * steps
    return {"steps_per_s": total / wall, "workflows_per_s": 64 * per_thread / wall}


def median(values: list[float]) -> float:
    return statistics.median(values)
