"""The workflow toolkit: message round trips, queue dispatch, and 10,000
workflows sleeping at once (memory, wake-up lateness)."""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path
from typing import Any

from . import cleanup, fresh_path, percentile, register


def message_rtt(workdir: Path, quick: bool) -> dict[str, Any]:
    """Ping-pong between two workflows: each round trip is two journaled
    sends and two journaled receives (four commits, each fsynced)."""
    import durably

    n = 50 if quick else 200
    path = fresh_path(workdir, "rtt")
    engine = durably.Engine(path)
    lat: list[float] = []

    @engine.workflow(name="pong")
    async def pong(n: int) -> None:
        for _ in range(n):
            await engine.send_async("ping", await engine.recv_async())

    @engine.workflow(name="ping")
    async def ping(n: int) -> None:
        for i in range(n):
            t = time.perf_counter()
            await engine.send_async("pong", i)
            assert await engine.recv_async() == i
            lat.append(time.perf_counter() - t)

    async def go() -> float:
        t0 = time.perf_counter()
        a = await engine.start_async(pong, n, workflow_id="pong")
        b = await engine.start_async(ping, n, workflow_id="ping")
        await b.result_async()
        await a.result_async()
        return time.perf_counter() - t0

    with engine:
        wall = asyncio.run(go())
    cleanup(path)
    lat.sort()
    return {
        "round_trips_per_s": n / wall,
        "rtt_p50_us": percentile(lat, 0.5) * 1e6,
        "rtt_p99_us": percentile(lat, 0.99) * 1e6,
    }


def queue_dispatch(workdir: Path, quick: bool, concurrency: int | None = None) -> dict[str, Any]:
    """Enqueue N trivial workflows (durably), then wait until all ran."""
    import durably

    n = 500 if quick else 2000
    path = fresh_path(workdir, "queue")
    engine = durably.Engine(path)
    queue = engine.queue("q", concurrency=concurrency)

    @engine.workflow(name="noop")
    async def noop(i: int) -> int:
        return i

    async def go() -> tuple[float, float]:
        t0 = time.perf_counter()
        handles = await asyncio.gather(*[queue.enqueue_async(noop, i) for i in range(n)])
        t1 = time.perf_counter()
        await asyncio.gather(*[h.result_async() for h in handles])
        return t1 - t0, time.perf_counter() - t0

    with engine:
        enq, total = asyncio.run(go())
    cleanup(path)
    return {"enqueues_per_s": n / enq, "workflows_per_s": n / total}


def sleepers(workdir: Path, quick: bool, count: int = 10_000, seconds: float = 2.0) -> dict[str, Any]:
    """``count`` async workflows sleeping at once: peak RSS per sleeper, and
    how late each woke after its recorded wake-up time."""
    import durably

    path = fresh_path(workdir, "sleepers")
    engine = durably.Engine(path)
    late: list[float] = []

    @engine.workflow(name="sleeper")
    async def sleeper() -> None:
        start = time.time()  # sleep() computes its wake-up time from the clock right after this
        await engine.sleep_async(seconds)
        late.append(time.time() - (start + seconds))

    async def go() -> tuple[int, int]:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        handles = await asyncio.gather(*[engine.start_async(sleeper) for _ in range(count)])
        await asyncio.sleep(seconds / 2)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        await asyncio.gather(*[h.result_async() for h in handles])
        return before, peak

    with engine:
        before, peak = asyncio.run(go())
    cleanup(path)
    late.sort()
    return {
        "kb_per_sleeping_workflow": (peak - before) / count,
        "peak_rss_mb": peak / 1024,
        "wake_late_p50_ms": percentile(late, 0.5) * 1e3,
        "wake_late_p99_ms": percentile(late, 0.99) * 1e3,
        "wake_late_max_ms": late[-1] * 1e3,
    }


register("toolkit.message_rtt", message_rtt, "toolkit", quick=True)
register("toolkit.queue_dispatch[unlimited]", queue_dispatch, "toolkit", quick=True)
register("toolkit.queue_dispatch[c=16]", queue_dispatch, "toolkit", quick=False, concurrency=16)
register("toolkit.sleepers[10000]", sleepers, "toolkit", quick=False)
