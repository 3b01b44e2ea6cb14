"""Async fan-out: one parent workflow, many concurrent async steps and children.

    python examples/fanout_async.py

asyncio.gather inside a workflow is deterministic: positions are taken in
call order, so a replay finds every result where it was recorded.
"""

from __future__ import annotations

import asyncio
import time

import durably

engine = durably.Engine("fanout.db")


@engine.step(retries=2, initial_delay=0.05)
async def fetch(page: int) -> int:
    await asyncio.sleep(0.01)  # stands in for an HTTP call
    return page * page


@engine.workflow()
async def summarize(pages: int) -> int:
    sizes = await asyncio.gather(*[fetch(p) for p in range(pages)])
    return sum(sizes)


@engine.workflow()
async def crawl(sites: int, pages: int) -> list[int]:
    # each call to a workflow inside a workflow starts a child and waits for it
    return list(await asyncio.gather(*[summarize(pages) for _ in range(sites)]))


async def main() -> None:
    t0 = time.perf_counter()
    handle = await engine.start_async(crawl, 20, 50)
    totals = await handle.result_async(timeout=60)
    dt = time.perf_counter() - t0
    print(f"{handle.workflow_id}: {len(totals)} children, {20 * 50} durable steps in {dt:.2f}s")


if __name__ == "__main__":
    with engine:
        asyncio.run(main())
