"""Cost against history: step cost and open time with 10^4..10^6 recorded
steps, recovery time for many pending workflows, memory of waiting ones."""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path
from typing import Any

from . import cleanup, counting_engine, fresh_path, register


def _prefill(path: str, workflows: int, steps_each: int, status: str) -> None:
    """Write history straight into a durably file (a bench tool, not the engine)."""
    import apsw

    import durably

    with durably.Engine(path):  # create the schema the engine's way
        pass
    conn = apsw.Connection(path)
    # synchronous=FULL: the history reaches the disk here, so that the engine's
    # first checkpoint does not pay for flushing it (that skewed open times)
    conn.pragma("synchronous", 2)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO workflows (workflow_id, name, status, inputs, output) VALUES (?, 'hist', ?, '[[3],{}]', ?)",
        ((f"h{i}", status, "1" if status == "SUCCESS" else None) for i in range(workflows)),
    )
    conn.executemany(
        "INSERT INTO steps (workflow_id, position, name, output) VALUES (?, ?, 'inc', ?)",
        ((f"h{i}", p, str(p + 1)) for i in range(workflows) for p in range(steps_each)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def history(workdir: Path, quick: bool, recorded: int) -> dict[str, Any]:
    """Open time and step cost on a database already holding ``recorded`` steps."""
    path = fresh_path(workdir, "hist")
    if recorded:
        _prefill(path, recorded // 100, 100, "SUCCESS")
    engine, loop = counting_engine(path, "normal")  # no fsync noise: the B-tree cost
    t0 = time.perf_counter()
    engine.open()
    opened = time.perf_counter() - t0
    n = 2000 if quick else 5000
    t0 = time.perf_counter()
    loop(n)
    wall = time.perf_counter() - t0
    engine.close()
    cleanup(path)
    return {"open_ms": opened * 1e3, "us_per_step": wall / n * 1e6}


def recovery(workdir: Path, quick: bool, pending: int) -> dict[str, Any]:
    """Open a database with ``pending`` unfinished workflows (2 of 3 steps
    recorded each) and time recovering and finishing all of them."""
    import durably

    path = fresh_path(workdir, "recover")
    _prefill(path, pending, 2, "PENDING")
    engine = durably.Engine(path)

    @engine.step(name="inc")
    async def inc(x: int) -> int:
        return x + 1

    @engine.workflow(name="hist")
    async def hist(k: int) -> int:
        x = 0
        for _ in range(k):
            x = await inc(x)
        return x

    t0 = time.perf_counter()
    engine.open()
    opened = time.perf_counter() - t0

    async def wait_all() -> None:
        for i in range(pending):
            await engine.handle(f"h{i}").result_async()

    asyncio.run(wait_all())
    total = time.perf_counter() - t0
    engine.close()
    cleanup(path)
    return {"open_ms": opened * 1e3, "recovered_per_s": pending / total, "total_s": total}


def waiting_memory(workdir: Path, quick: bool, count: int = 10_000) -> dict[str, Any]:
    """Peak RSS of ``count`` async workflows all waiting inside a step."""
    import durably

    path = fresh_path(workdir, "rss")
    engine = durably.Engine(path)
    gate: asyncio.Event | None = None

    @engine.step(name="wait")
    async def wait() -> int:
        assert gate is not None
        await gate.wait()
        return 1

    @engine.workflow(name="waiter")
    async def waiter() -> int:
        return await wait()

    async def go() -> tuple[int, int]:
        nonlocal gate
        gate = asyncio.Event()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        handles = await asyncio.gather(*[engine.start_async(waiter) for _ in range(count)])
        await asyncio.sleep(0.2)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        gate.set()
        await asyncio.gather(*[h.result_async() for h in handles])
        return before, peak

    with engine:
        before, peak = asyncio.run(go())
    cleanup(path)
    return {"peak_rss_mb": peak / 1024, "kb_per_waiting_workflow": (peak - before) / count}


for _n in (0, 10_000, 100_000, 1_000_000):
    register(f"growth.history[steps={_n}]", history, "growth", quick=_n in (0, 100_000), recorded=_n)
for _n in (10_000, 100_000):
    register(f"growth.recovery[pending={_n}]", recovery, "recovery", quick=_n == 10_000, pending=_n)
register("growth.waiting_memory[10000]", waiting_memory, "memory", quick=False)
