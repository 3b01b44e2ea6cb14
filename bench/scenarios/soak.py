"""Soak: hundreds of thousands of workflows through one engine, watching RSS.

A long-running process must not grow with the number of workflows it has
run or the number of times it read a finished one. Rounds of ``batch``
workflows, each round a mix of:

* sync workflows started with ``engine.start`` and read with ``handle.result()``
  (``threads`` client threads);
* async workflows started with ``start_async`` and read with
  ``result_async()`` (``concurrency`` coroutines on one long-lived loop);
* ``reads`` more reads per workflow of already finished ones through
  ``engine.handle(id).result()`` (sync-started) and ``.result_async()``
  (async-started).

RSS (``/proc/self/status`` VmRSS, after a ``gc.collect()``) is taken once
``warmup`` workflows have run and at the end; the growth between the two is
the figure (target: under 20 MB for 200,000 workflows). Beside it: SQLite's
own heap (page caches, bounded by ``cache_size``; the writer's fills to
~33 MB over the first ~100,000 workflows, which is not a leak), the growth
over the second half alone, and the engine's per-workflow bookkeeping left
at the end (completion waiters, running workflows, tasks, deadline timers,
clock heap, waiters by key), all of which should be back to zero.

    python bench/run.py --only 'soak*' --reps 1     # in the report (--quick: 20,000)
    python bench/soak.py --workflows 20000          # standalone, quick
    python bench/soak.py --workflows 200000 --dir /some/disk --out soak.json
    python bench/soak.py --workflows 20000 --tracemalloc 15   # the sites that grew (slow)
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path
from typing import Any

from . import cleanup, fresh_path, register

# Growth after warm-up, not counting SQLite's own page cache: the cache is a
# bounded buffer (cache_size = 32 MiB per connection) that fills over the
# first ~100,000 workflows, not a leak; the raw growth is reported beside it.
TARGET_GROWTH_MB = 20.0


def rss_kb(field: str = "VmRSS") -> int:
    """A ``/proc/self/status`` field in KiB (VmRSS now, VmHWM the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def sqlite_kb() -> float:
    """Bytes SQLite has allocated (page caches, statements), in KiB."""
    import apsw

    return apsw.status(apsw.SQLITE_STATUS_MEMORY_USED)[0] / 1024


def engine_state(engine: Any) -> dict[str, int]:
    """Sizes of the engine's per-workflow bookkeeping (0 when idle)."""

    def size(*path: str) -> int:
        obj: Any = engine
        for name in path:
            obj = getattr(obj, name, None)
            if obj is None:
                return -1  # renamed or gone: not counted
        return len(obj)

    clock = getattr(engine, "_clock", None)
    return {
        "left_completions": size("_completions"),
        "left_active": size("_active"),
        "left_queued": size("_queued"),
        "left_tasks": size("_tasks"),
        "left_relaunch": size("_relaunch"),
        "left_deadlines": size("_deadlines"),
        "left_clock_heap": size("_clock", "_heap"),  # cancelled timers wait there for a compaction
        "left_clock_live": clock.pending() if hasattr(clock, "pending") else -1,
        "left_wait_keys": size("_waits", "_by_key"),
    }


def soak(
    workdir: Path,
    quick: bool,
    workflows: int = 200_000,
    warmup: int | None = None,
    synchronous: str = "full",
    batch: int = 1000,
    reads: int = 1,
    threads: int = 8,
    concurrency: int = 256,
    timeout_every: int = 0,
    trace: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``workflows`` workflows in rounds of ``batch`` (half sync, half
    async), ``reads`` extra reads of each finished one; RSS at warm-up and end.

    ``timeout_every``: every n-th workflow is started with ``timeout=3600``
    (a durable deadline that outlives the run). ``trace``: with tracemalloc,
    the top ``trace`` allocation sites grown between warm-up and end.
    """
    import durably

    if quick:
        workflows = min(workflows, 20_000)
    warmup = warmup if warmup is not None else workflows // 10
    batch = max(2, min(batch, workflows))
    path = fresh_path(workdir, "soak")
    engine = durably.Engine(path, synchronous=synchronous)

    @engine.step(name="soak.inc")
    def inc(x: int) -> int:
        return x + 1

    @engine.workflow(name="soak.sync")
    def sync_wf(x: int) -> int:
        return inc(inc(x))

    @engine.step(name="soak.ainc")
    async def ainc(x: int) -> int:
        return x + 1

    @engine.workflow(name="soak.async")
    async def async_wf(x: int) -> int:
        return await ainc(await ainc(x))

    def timeout_for(i: int) -> float | None:
        return 3600.0 if timeout_every and i % timeout_every == 0 else None

    def sync_clients(first: int, count: int) -> list[str]:
        ids: list[str] = [""] * count
        errors: list[BaseException] = []

        def client(k: int) -> None:
            try:
                for j in range(k, count, threads):
                    i = first + j
                    h = engine.start(sync_wf, i, timeout=timeout_for(i))
                    assert h.result() == i + 2
                    ids[j] = h.workflow_id
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        ts = [threading.Thread(target=client, args=(k,)) for k in range(min(threads, count))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise errors[0]
        return ids

    async def async_clients(first: int, count: int) -> list[str]:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> str:
            async with sem:
                h = await engine.start_async(async_wf, i, timeout=timeout_for(i))
                assert await h.result_async() == i + 2
                return h.workflow_id

        return list(await asyncio.gather(*[one(first + j) for j in range(count)]))

    def sync_reads(ids: list[str]) -> None:
        for _ in range(reads):
            for wid in ids:
                engine.handle(wid).result()

    async def async_reads(ids: list[str]) -> None:
        for _ in range(reads):
            for wid in ids:
                await engine.handle(wid).result_async()

    if trace:
        import tracemalloc

        tracemalloc.start(8)
    loop = asyncio.new_event_loop()
    samples: list[tuple[int, float, float, float]] = []  # (workflows, s, rss MB, sqlite MB)
    marks: dict[str, Any] = {}
    t_sync = t_async = t_reads = 0.0
    done = 0
    engine.open()
    t0 = time.perf_counter()
    try:
        while done < workflows:
            n = min(batch, workflows - done)
            n_sync = n // 2
            t = time.perf_counter()
            sync_ids = sync_clients(done, n_sync)
            t_sync += time.perf_counter() - t
            t = time.perf_counter()
            async_ids = loop.run_until_complete(async_clients(done + n_sync, n - n_sync))
            t_async += time.perf_counter() - t
            t = time.perf_counter()
            sync_reads(sync_ids)
            loop.run_until_complete(async_reads(async_ids))
            t_reads += time.perf_counter() - t
            before = done
            done += n
            samples.append((done, time.perf_counter() - t0, rss_kb() / 1024, sqlite_kb() / 1024))
            if before < warmup <= done or done >= workflows:
                gc.collect()
                mark = {
                    "workflows": done,
                    "rss_mb": rss_kb() / 1024,
                    "sqlite_mb": sqlite_kb() / 1024,
                    "peak_mb": rss_kb("VmHWM") / 1024,
                    "t_sync": t_sync,
                    "t_async": t_async,
                    "t_reads": t_reads,
                    "snapshot": tracemalloc.take_snapshot() if trace else None,
                }
                marks["end" if done >= workflows else "warmup"] = mark
            if progress and (len(samples) % 10 == 0 or done >= workflows):
                s = samples[-1]
                print(
                    f"  {s[0]:>8,} workflows  {s[1]:7.1f} s  rss {s[2]:7.1f} MB  sqlite {s[3]:6.1f} MB  "
                    f"completions {engine_state(engine)['left_completions']:,}",
                    flush=True,
                )
        wall = time.perf_counter() - t0
        state = engine_state(engine)
    finally:
        engine.close()
        loop.close()
        cleanup(path)
    w, e = marks.get("warmup", marks["end"]), marks["end"]
    after = e["workflows"] - w["workflows"]
    growth = e["rss_mb"] - w["rss_mb"]
    sqlite_growth = e["sqlite_mb"] - w["sqlite_mb"]
    t_work = (e["t_sync"] - w["t_sync"]) + (e["t_async"] - w["t_async"])
    n_reads = workflows * reads
    out: dict[str, Any] = {
        "workflows": workflows,
        "rss_warmup_mb": w["rss_mb"],
        "rss_end_mb": e["rss_mb"],
        "rss_peak_mb": e["peak_mb"],
        "rss_growth_mb": growth,
        "rss_growth_kb_per_1k_workflows": growth * 1024 / max(after, 1) * 1000,
        "sqlite_warmup_mb": w["sqlite_mb"],
        "sqlite_end_mb": e["sqlite_mb"],
        "rss_growth_minus_sqlite_mb": growth - sqlite_growth,
        # the second half only: SQLite's page cache has usually filled by then,
        # so growth here is what a long-lived process keeps accumulating
        "rss_growth_last_half_mb": samples[-1][2] - next(s[2] for s in samples if s[0] >= workflows // 2),
        "growth_within_target": int(growth - sqlite_growth < TARGET_GROWTH_MB),
        "workflows_per_s": workflows / (t_sync + t_async),
        "workflows_per_s_after_warmup": after / t_work if t_work else float("nan"),
        "sync_workflows_per_s": (workflows // 2) / t_sync if t_sync else float("nan"),
        "async_workflows_per_s": (workflows - workflows // 2) / t_async if t_async else float("nan"),
        "reads_per_s": n_reads / t_reads if t_reads else float("nan"),
        "wall_s": wall,
        **state,
        # not numeric: kept in results.json, left out of the summary table
        "rss_samples": [
            [s[0], round(s[1], 2), round(s[2], 1), round(s[3], 1)] for s in samples[:: max(1, len(samples) // 50)]
        ],
    }
    if trace and w.get("snapshot") is not None:
        out["tracemalloc_top"] = _top_growth(w["snapshot"], e["snapshot"], trace)
        import tracemalloc

        tracemalloc.stop()
    return out


def _top_growth(before: Any, after: Any, top: int) -> list[str]:
    """The allocation sites that grew most, by file:line, with the largest's
    call stack (the innermost frames inside durably)."""
    import tracemalloc

    keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(keep), after.filter_traces(keep)
    lines = []
    for stat in after.compare_to(before, "lineno")[:top]:
        frame = stat.traceback[0]
        lines.append(
            f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks  {frame.filename}:{frame.lineno}"
        )
    for stat in after.compare_to(before, "traceback")[: max(3, top // 3)]:
        lines.append(
            f"--- {stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d} blocks, allocated at (outermost first):"
        )
        lines.extend(f"      {f.filename}:{f.lineno}" for f in stat.traceback)
    return lines


register("soak.rss[200000]", soak, "soak", quick=False, workflows=200_000)


def main() -> int:
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=None, help="workflows before the first RSS mark (default 10%%)")
    parser.add_argument("--batch", type=int, default=1000, help="workflows per round (half sync, half async)")
    parser.add_argument("--reads", type=int, default=1, help="extra reads of each finished workflow")
    parser.add_argument("--threads", type=int, default=8, help="sync client threads")
    parser.add_argument("--concurrency", type=int, default=256, help="async workflows in flight")
    parser.add_argument(
        "--timeout-every",
        type=int,
        default=0,
        help="start every n-th workflow with timeout=3600 (a deadline outliving the run)",
    )
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="N",
        help="trace allocations; print the N sites grown most after warm-up (slow)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="directory for the database")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the figures (with RSS samples) to this JSON file"
    )
    args = parser.parse_args()

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="durably-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = soak(
        workdir,
        False,
        workflows=args.workflows,
        warmup=args.warmup,
        synchronous=args.synchronous,
        batch=args.batch,
        reads=args.reads,
        threads=args.threads,
        concurrency=args.concurrency,
        timeout_every=args.timeout_every,
        trace=args.tracemalloc,
        progress=not args.json,
    )
    if not args.dir:
        workdir.rmdir()
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    if args.json:
        print(json.dumps(out))
        return 0
    for k, v in out.items():
        if k == "tracemalloc_top":
            print("tracemalloc, grown between warm-up and end:")
            print("\n".join("  " + line for line in v))
        elif k != "rss_samples":
            print(f"{k:34s} {v:,.2f}" if isinstance(v, float) else f"{k:34s} {v}")
    verdict = "within" if out["growth_within_target"] else "OVER"
    print(
        f"RSS growth after warm-up: {out['rss_growth_mb']:.1f} MB, of which SQLite's page cache filling "
        f"{out['rss_growth_mb'] - out['rss_growth_minus_sqlite_mb']:.1f} MB; the rest "
        f"{out['rss_growth_minus_sqlite_mb']:.1f} MB ({verdict} the {TARGET_GROWTH_MB:.0f} MB target); "
        f"second half alone {out['rss_growth_last_half_mb']:.2f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
