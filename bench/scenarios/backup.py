"""Online backup of a large file under load (issue 21): how long
``engine.backup`` takes, and the step latency of a running workload during
the copy against the same workload without it (p50 and p99, one run each
way in the same process and file)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from . import cleanup, fresh_path, percentile, register


def _prefill(path: str, mb: int) -> None:
    """History of finished workflows (~4 KiB each) written straight into a durably file (a bench tool)."""
    import apsw

    import durably

    with durably.Engine(path):  # the schema, the engine's way
        pass
    conn = apsw.Connection(path)
    conn.execute("BEGIN")
    pad = '"' + "h" * 4000 + '"'
    conn.executemany(
        "INSERT INTO workflows (workflow_id, name, status, inputs, output) VALUES (?, 'hist', 'SUCCESS', '[[],{}]', ?)",
        ((f"h{i}", pad) for i in range(mb * 1024 // 4)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _steps(engine: Any, stop: threading.Event, lat: list[tuple[float, float]]) -> None:
    """Sequential steps in workflows of 10, each step's call-to-acknowledgement time noted with when it ended."""

    @engine.step(name="inc")
    def inc(x: int) -> int:
        return x + 1

    @engine.workflow(name="ten")
    def ten() -> int:
        x = 0
        for _ in range(10):
            t = time.perf_counter()
            x = inc(x)
            now = time.perf_counter()
            lat.append((now, now - t))
        return x

    def run() -> None:
        while not stop.is_set():
            engine.run(ten)

    return run  # type: ignore[return-value]


def backup_under_load(workdir: Path, quick: bool, mb: int) -> dict[str, Any]:
    import durably

    path = fresh_path(workdir, "backup-src")
    dest = str(workdir / f"backup-copy-{os.getpid()}.db")
    cleanup(dest)
    _prefill(path, mb)
    engine = durably.Engine(path)
    stop = threading.Event()
    lat: list[tuple[float, float]] = []
    load = threading.Thread(target=_steps(engine, stop, lat))
    with engine:
        load.start()
        time.sleep(0.5)  # warm
        t0 = time.perf_counter()
        time.sleep(2.0 if quick else 10.0)  # without a backup
        t1 = time.perf_counter()
        report = engine.backup(dest)
        t2 = time.perf_counter()
        time.sleep(0.2)
        stop.set()
        load.join()
    base = sorted(d for t, d in lat if t0 <= t < t1)
    during = sorted(d for t, d in lat if t1 <= t < t2)
    cleanup(path)
    cleanup(dest)
    return {
        "mb": report.bytes / 2**20,
        "backup_s": report.seconds,
        "mb_per_s": report.bytes / 2**20 / report.seconds,
        "steps_without": len(base),
        "steps_during": len(during),
        "p50_us_without": percentile(base, 0.5) * 1e6,
        "p50_us_during": percentile(during, 0.5) * 1e6,
        "p99_us_without": percentile(base, 0.99) * 1e6,
        "p99_us_during": percentile(during, 0.99) * 1e6,
    }


register("backup.under_load[mb=64]", backup_under_load, "backup", quick=True, mb=64)
register("backup.under_load[mb=1024]", backup_under_load, "backup", quick=False, mb=1024)
