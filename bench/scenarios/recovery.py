"""Recovery at scale: peak memory opening a file whose pending workflows
recorded large step results, and bulk starts (``start_many``)."""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from pathlib import Path
from typing import Any

from . import cleanup, fresh_path, register


def _prefill_large(path: str, workflows: int, steps_each: int, mb: int) -> None:
    """``workflows`` PENDING ``big`` workflows, each with ``steps_each``
    recorded ``blob`` steps of an ``mb`` MB JSON string (a bench tool that
    writes the file directly; the engine created its schema)."""
    import apsw

    import durably

    with durably.Engine(path):
        pass
    conn = apsw.Connection(path)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO workflows (workflow_id, name, status, inputs) VALUES (?, 'big', 'PENDING', ?)",
        ((f"b{i}", f"[[{steps_each + 1}],{{}}]") for i in range(workflows)),
    )
    value = '"' + "x" * (mb * 1024 * 1024) + '"'
    for i in range(workflows):
        for p in range(steps_each):
            conn.execute(
                "INSERT INTO steps (workflow_id, position, name, output) VALUES (?, ?, 'blob', ?)", (f"b{i}", p, value)
            )
    del value
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def recovery_memory(workdir: Path, quick: bool, kind: str, steps: int = 1) -> dict[str, Any]:
    """Peak RSS (a fresh process) opening a file with 20 pending workflows
    whose ``steps`` recorded steps each hold a 25 MB result, and finishing
    them: each replays its large results (keeping only their length) and
    runs one more small step live."""
    import durably

    count, mb = (10, 10) if quick else (20, 25)
    path = fresh_path(workdir, "bigrec")
    # In a child process: building the values must not count in this one's peak.
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_prefill_large, args=(path, count, steps, mb))
    child.start()
    child.join()
    assert child.exitcode == 0
    engine = durably.Engine(path)
    if kind == "async":

        @engine.step(name="blob")
        async def blob_a(i: int) -> str:
            return "x" * (mb * 1024 * 1024)

        @engine.step(name="tail")
        async def tail_a() -> int:
            return 0

        @engine.workflow(name="big")
        async def big_a(k: int) -> int:
            total = 0
            for i in range(k - 1):
                total += len(await blob_a(i))
            return total + await tail_a()

    else:

        @engine.step(name="blob")
        def blob_s(i: int) -> str:
            return "x" * (mb * 1024 * 1024)

        @engine.step(name="tail")
        def tail_s() -> int:
            return 0

        @engine.workflow(name="big")
        def big_s(k: int) -> int:
            total = 0
            for i in range(k - 1):
                total += len(blob_s(i))
            return total + tail_s()

    import gc

    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with engine:
        for i in range(count):
            assert engine.handle(f"b{i}").result(timeout=600) == steps * mb * 1024 * 1024
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cleanup(path)
    return {"peak_rss_mb": peak / 1024, "rss_before_mb": before / 1024, "total_s": total}


def start_many_rate(workdir: Path, quick: bool, bulk: bool, count: int = 20_000) -> dict[str, Any]:
    """Workflows started per second from asyncio: ``bulk``: one
    ``start_many_async`` call, else ``start_async`` gathered (as
    durably.start_rate, at a larger count)."""
    import durably

    count = 5000 if quick else count
    path = fresh_path(workdir, "startmany")
    engine = durably.Engine(path)

    @engine.workflow(name="noop")
    async def noop(i: int) -> None:
        return None

    async def go() -> float:
        t0 = time.perf_counter()
        if bulk:
            handles = await engine.start_many_async(noop, [(i,) for i in range(count)])
        else:
            handles = await asyncio.gather(*[engine.start_async(noop, i) for i in range(count)])
        elapsed = time.perf_counter() - t0
        await asyncio.gather(*[h.result_async() for h in handles])
        return elapsed

    with engine:
        wall = asyncio.run(go())
    cleanup(path)
    return {"starts_per_s": count / wall}


for _kind in ("async", "sync"):
    for _steps in (1, 3):
        register(
            f"recovery.memory[{_kind},steps={_steps}]",
            recovery_memory,
            "recovery",
            quick=False,
            kind=_kind,
            steps=_steps,
        )
register("starts.many[bulk]", start_many_rate, "starts", quick=False, bulk=True)
register("starts.many[gather]", start_many_rate, "starts", quick=False, bulk=False)
