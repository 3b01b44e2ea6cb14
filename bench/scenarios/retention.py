"""Retention: the file size under churn with ``Engine(retention=...)``, the
throughput of async 1,024 x 10 while retention passes delete history, and
``engine.gc`` of N finished workflows (time, longest writer hold).

Sizes are parameters (the registered entries run at 10^4; the issue's
figures are 10^6: ``python bench/run.py --only 'retention.*'`` after
changing them, or call the functions)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from . import chain_engine, cleanup, fresh_path, register


def _size(path: str) -> int:
    """Bytes of the database file and its -wal (os.stat: nothing is opened)."""
    return sum(os.stat(p).st_size for p in (path, path + "-wal") if os.path.exists(p))


def _prefill(path: str, workflows: int, steps_each: int, ended_ago: float) -> None:
    """Finished history written straight into a durably file (a bench tool,
    as growth.py does): ``workflows`` SUCCESS workflows of ``steps_each``
    steps each, created and ended ``ended_ago`` seconds ago."""
    import apsw

    import durably

    with durably.Engine(path):  # the schema, the engine's way
        pass
    at = time.time() - ended_ago
    conn = apsw.Connection(path)
    conn.pragma("synchronous", 2)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO workflows (workflow_id, name, status, inputs, output, created_at, updated_at)"
        " VALUES (?, 'chain', 'SUCCESS', '[[10],{}]', '10', ?, ?)",
        ((f"h{i}", at, at) for i in range(workflows)),
    )
    conn.executemany(
        "INSERT INTO steps (workflow_id, position, name, output) VALUES (?, ?, 'inc', ?)",
        ((f"h{i}", p, str(p + 1)) for i in range(workflows) for p in range(steps_each)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def churn(workdir: Path, quick: bool, total: int, retention: float) -> dict[str, Any]:
    """``total`` workflows of 10 steps started at a steady rate such that
    about total / 10 ended within ``retention`` seconds (the run lasts 10 x
    retention), with ``Engine(retention=retention)``: the file size against
    workflows run, sampled 20 times. It must level off: ``growth_2nd_half``
    (size at the end / size at half-way) near 1."""
    path = fresh_path(workdir, "churn")
    engine, chain = chain_engine(path, retention=retention)
    rate = total / (10 * retention)  # workflows per second
    samples: list[tuple[int, int, int]] = []

    async def go() -> None:
        started, t0, pending = 0, time.perf_counter(), set()
        every = total // 20
        while started < total:
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            while started < due:
                pending.add(asyncio.ensure_future(_run(engine, chain)))
                started += 1
                if started % every == 0:
                    samples.append((started, _size(path), engine.stats().total_workflows))
            done = {f for f in pending if f.done()}
            pending -= done
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)

    with engine:
        t0 = time.perf_counter()
        asyncio.run(go())
        wall = time.perf_counter() - t0
        kept = engine.stats().total_workflows
    cleanup(path)
    half = samples[len(samples) // 2 - 1][1]
    return {
        "workflows_per_s": total / wall,
        "kept_at_end": kept,
        "size_mb_at_end": samples[-1][1] / 1e6,
        "size_mb_at_half": half / 1e6,
        "growth_2nd_half": samples[-1][1] / half,
        "samples": [{"run": n, "size_mb": s / 1e6, "kept": k} for n, s, k in samples],
    }


async def _run(engine: Any, chain: Any) -> None:
    handle = await engine.start_async(chain, 10)
    assert await handle.result_async() == 10


def async_under_retention(
    workdir: Path, quick: bool, retention: bool, count: int = 1024, rounds: int = 10, keep: float = 1.0
) -> dict[str, Any]:
    """``rounds`` x (``count`` concurrent async workflows of 10 steps) back
    to back; with ``retention``, ``Engine(retention=keep)`` deletes the
    workflows of earlier rounds meanwhile (a pass every keep / 10 s: the
    steady state of a churn). Pair with ``retention=False``."""
    path = fresh_path(workdir, "retain")
    engine, chain = chain_engine(path, retention=keep if retention else None)

    async def go(n: int) -> None:
        handles = await asyncio.gather(*[engine.start_async(chain, 10) for _ in range(n)])
        assert await asyncio.gather(*[h.result_async() for h in handles]) == [10] * n

    with engine:
        asyncio.run(go(64))
        t0 = time.perf_counter()
        for _ in range(rounds):
            asyncio.run(go(count))
        wall = time.perf_counter() - t0
        left = engine.stats().total_workflows
    cleanup(path)
    return {"steps_per_s": rounds * count * 10 / wall, "deleted_meanwhile": rounds * count + 64 - left}


def gc_backlog(workdir: Path, quick: bool, history: int, count: int = 1024, rounds: int = 5) -> dict[str, Any]:
    """The worst case: a file holding ``history`` finished workflows that
    ended two hours ago is opened with ``Engine(retention=3600)`` and runs
    ``rounds`` x ``count`` x 10 steps while the paced passes delete them."""
    from durably.runtime import retention as part

    part.FIRST_PASS = 0.0
    path = fresh_path(workdir, "backlog")
    _prefill(path, history, 10, ended_ago=7200)
    engine, chain = chain_engine(path, retention=3600)

    async def go(n: int) -> None:
        handles = await asyncio.gather(*[engine.start_async(chain, 10) for _ in range(n)])
        assert await asyncio.gather(*[h.result_async() for h in handles]) == [10] * n

    with engine:
        t0 = time.perf_counter()
        for _ in range(rounds):
            asyncio.run(go(count))
        wall = time.perf_counter() - t0
        left = engine.stats().total_workflows - rounds * count
    cleanup(path)
    return {"steps_per_s": rounds * count * 10 / wall, "history_deleted_meanwhile": history - left}


def gc_finished(workdir: Path, quick: bool, workflows: int) -> dict[str, Any]:
    """``engine.gc(older_than=0)`` of ``workflows`` finished workflows of 10
    steps each: time, batches, the longest batch (the writer's hold), and
    the file size before and after (incremental vacuum)."""
    path = fresh_path(workdir, "gc")
    _prefill(path, workflows, 10, ended_ago=60)
    engine, _ = chain_engine(path)
    with engine:
        before = _size(path)
        t0 = time.perf_counter()
        report = engine.gc(older_than=0)
        wall = time.perf_counter() - t0
        assert report.workflows == workflows, report
    after = _size(path)
    cleanup(path)
    return {
        "seconds": wall,
        "workflows_per_s": workflows / wall,
        "batches": report.batches,
        "longest_batch_ms": report.longest_batch * 1e3,
        "size_mb_before": before / 1e6,
        "size_mb_after": after / 1e6,
    }


register("retention.churn[n=10000]", churn, "retention", quick=False, total=10_000, retention=3.0)
register("retention.churn[n=1000000]", churn, "retention", quick=False, total=1_000_000, retention=60.0)
for _on in (True, False):
    register(
        f"retention.async[c=1024,{'on' if _on else 'off'}]",
        async_under_retention,
        "retention",
        quick=False,
        retention=_on,
    )
register("retention.backlog[history=100000]", gc_backlog, "retention", quick=False, history=100_000)
for _n in (10_000, 1_000_000):
    register(f"retention.gc[n={_n}]", gc_finished, "retention", quick=False, workflows=_n)
