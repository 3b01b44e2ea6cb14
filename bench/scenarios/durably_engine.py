"""durably itself: sequential, threaded and asyncio workloads, starts,
transaction steps, per-step CPU, compiled journal against the twin."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from . import cleanup, counting_engine, fresh_path, percentile, register


def _engine(path: str, synchronous: str = "full") -> Any:
    import durably

    return durably.Engine(path, synchronous=synchronous)


def sequential(workdir: Path, quick: bool, synchronous: str = "full", memory: bool = False) -> dict[str, Any]:
    """One workflow of N sequential steps; each step waits for its own commit."""
    n = (5000 if quick else 20000) if memory else (500 if quick else 2000)
    path = ":memory:" if memory else fresh_path(workdir, "seq")
    lat: list[float] = []
    engine, loop = counting_engine(path, synchronous, lat)

    with engine:
        loop(50)
        lat.clear()
        c0, t0 = time.process_time(), time.perf_counter()
        assert loop(n) == n
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not memory:
        cleanup(path)
    lat.sort()
    return {
        "steps_per_s": n / wall,
        "us_per_step": wall / n * 1e6,
        "cpu_us_per_step": cpu / n * 1e6,
        "ack_p50_us": percentile(lat, 0.5) * 1e6,
        "ack_p99_us": percentile(lat, 0.99) * 1e6,
    }


def threads(workdir: Path, quick: bool, count: int, synchronous: str = "full") -> dict[str, Any]:
    """``count`` threads, each running sync workflows of 10 steps back to back."""
    per_thread = max(2, (200 if quick else 600) // count)
    path = fresh_path(workdir, "threads")
    lat: list[float] = []
    engine, chain = counting_engine(path, synchronous, lat)

    def worker() -> None:
        for _ in range(per_thread):
            assert chain(10) == 10

    with engine:
        worker()
        lat.clear()
        ts = [threading.Thread(target=worker) for _ in range(count)]
        b0, r0 = engine._journal.batches, engine._journal.records
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        batches, records = engine._journal.batches - b0, engine._journal.records - r0
    cleanup(path)
    lat.sort()
    total = count * per_thread * 10
    return {
        "steps_per_s": total / wall,
        "workflows_per_s": count * per_thread / wall,
        "mean_batch": records / max(batches, 1),
        "ack_p50_us": percentile(lat, 0.5) * 1e6,
        "ack_p99_us": percentile(lat, 0.99) * 1e6,
    }


def concurrent_async(
    workdir: Path,
    quick: bool,
    count: int,
    synchronous: str = "full",
    steps: int = 10,
    impl: str = "cython",
    tx: bool = False,
    loop: str = "asyncio",
    rounds: int = 5,
) -> dict[str, Any]:
    """``rounds`` x (``count`` concurrent async workflows of ``steps`` steps;
    transaction steps with ``tx``), on asyncio's event loop or on uvloop's
    (``loop``). Several rounds: one of 1,024 x 10 lasts about 0.2 s, too
    short to tell apart trees 10% apart (pairs ranged 0.55 to 1.28)."""
    import durably

    run = asyncio.run
    if loop == "uvloop":
        import uvloop

        run = uvloop.run

    assert durably.IMPLEMENTATION == impl, (durably.IMPLEMENTATION, impl)
    path = fresh_path(workdir, "async")
    engine = _engine(path, synchronous)
    lat: list[float] = []

    @engine.step(name="inc")
    async def inc(x: int) -> int:
        return x + 1

    @engine.transaction(name="book")
    def book(db: Any, x: int) -> int:
        db.execute("INSERT INTO ledger (x) VALUES (?)", (x,))
        return x + 1

    @engine.transaction(name="schema")
    def schema(db: Any) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS ledger (x INTEGER)")

    @engine.workflow(name="setup")
    def setup() -> None:
        schema()

    @engine.workflow(name="chain")
    async def chain(k: int) -> int:
        x = 0
        for _ in range(k):
            t = time.perf_counter()
            x = await (book(x) if tx else inc(x))
            lat.append(time.perf_counter() - t)
        return x

    async def go(n: int) -> float:
        t0 = time.perf_counter()
        handles = await asyncio.gather(*[engine.start_async(chain, steps) for _ in range(n)])
        results = await asyncio.gather(*[h.result_async() for h in handles])
        assert results == [steps] * n
        return time.perf_counter() - t0

    with engine:
        setup()
        run(go(64))
        lat.clear()
        b0, r0 = engine._journal.batches, engine._journal.records
        rounds = 1 if quick else rounds
        wall = sum(run(go(count)) for _ in range(rounds))
        batches, records = engine._journal.batches - b0, engine._journal.records - r0
    cleanup(path)
    lat.sort()
    return {
        "steps_per_s": rounds * count * steps / wall,
        "workflows_per_s": rounds * count / wall,
        "commits": batches / rounds,
        "mean_batch": records / max(batches, 1),
        "ack_p50_us": percentile(lat, 0.5) * 1e6,
        "ack_p99_us": percentile(lat, 0.99) * 1e6,
    }


def start_rate(workdir: Path, quick: bool, count: int = 2000) -> dict[str, Any]:
    """How fast workflows can be started (durably recorded) from asyncio."""
    path = fresh_path(workdir, "starts")
    engine = _engine(path)

    @engine.workflow(name="noop")
    async def noop() -> None:
        return None

    async def go() -> float:
        t0 = time.perf_counter()
        handles = await asyncio.gather(*[engine.start_async(noop) for _ in range(count)])
        elapsed = time.perf_counter() - t0
        await asyncio.gather(*[h.result_async() for h in handles])
        return elapsed

    with engine:
        wall = asyncio.run(go())
    cleanup(path)
    return {"starts_per_s": count / wall}


for _sync in ("full", "normal"):
    register(f"durably.sequential[{_sync}]", sequential, "sequential", quick=_sync == "full", synchronous=_sync)
    for _c in (16, 64):
        register(
            f"durably.threads[c={_c},{_sync}]",
            threads,
            "threads",
            quick=_c == 64 and _sync == "full",
            count=_c,
            synchronous=_sync,
        )
    for _c in (64, 256, 1024):
        register(
            f"durably.async[c={_c},{_sync}]",
            concurrent_async,
            "async",
            quick=_c == 1024 and _sync == "full",
            count=_c,
            synchronous=_sync,
        )
register("durably.async[c=1024,full,twin]", concurrent_async, "implementation", quick=False, count=1024, impl="python")
register("durably.async[c=1024,full,cython]", concurrent_async, "implementation", quick=False, count=1024)
register(
    "durably.async[c=1024,full,uvloop]",
    concurrent_async,
    "async",
    quick=False,
    count=1024,
    loop="uvloop",
    needs="uvloop",
)
register("durably.tx_steps[c=256,full]", concurrent_async, "async", quick=False, count=256, tx=True)
register("durably.start_rate", start_rate, "starts", quick=False)
register("durably.cpu[memory]", sequential, "cpu", quick=True, memory=True)
