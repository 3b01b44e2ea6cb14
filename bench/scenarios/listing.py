"""Introspection at scale: ``list_workflows`` with each filter, and one
workflow's ``info()``, on a database holding 10^6 workflows (10^5 with
``--quick``). Every filter is served by an index, so a page costs about the
same however large the history."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from . import fresh_path, register


def _prefill(path: str, n: int) -> None:
    """10^6 workflow rows straight into a durably file (a bench tool, not the
    engine): 4 names, 4 statuses, a parent for every 10th, a queue entry for
    every 20th, creation times one millisecond apart."""
    import apsw

    import durably

    with durably.Engine(path):
        pass
    conn = apsw.Connection(path)
    conn.execute("BEGIN")
    statuses = ("SUCCESS", "ERROR", "CANCELLED", "SUCCESS")
    conn.executemany(
        "INSERT INTO workflows (workflow_id, name, status, inputs, parent_id, created_at, updated_at)"
        " VALUES (?, ?, ?, '[[],{}]', ?, ?, ?)",
        (
            (
                f"wf-{i:07d}",
                f"name{i % 4}",
                statuses[i % 4],
                f"wf-{i - 1:07d}" if i % 10 == 0 and i else None,
                1.7e9 + i / 1000,
                1.7e9 + i / 1000,
            )
            for i in range(n)
        ),
    )
    conn.executemany(
        "INSERT INTO queue_entries (workflow_id, queue, not_before, started_at, done) VALUES (?, 'jobs', 0, 1, 1)",
        ((f"wf-{i:07d}",) for i in range(0, n, 20)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def listing(workdir: Path, quick: bool, workflows: int) -> dict[str, Any]:
    import durably

    n = workflows // 10 if quick else workflows
    path = fresh_path(workdir, "listing")
    _prefill(path, n)
    mid = 1.7e9 + n / 2000
    queries = {
        "newest": {},
        "status": {"status": "ERROR"},
        "name": {"name": "name2"},
        "id_prefix": {"id_prefix": "wf-00012"},
        "time_range": {"start_time": mid, "end_time": mid + 1.0},
        "parent": {"parent_id": f"wf-{n // 2 - 1:07d}"},
        "queue": {"queue": "jobs"},
        "page_5000": {"offset": 5000},
    }
    figures: dict[str, Any] = {"workflows": n}
    with durably.Engine(path) as engine:
        for label, kwargs in queries.items():
            times = []
            for _ in range(7):
                t = time.perf_counter()
                rows = engine.list_workflows(limit=100, **kwargs)
                times.append(time.perf_counter() - t)
            assert rows, label
            figures[f"{label}_ms"] = statistics.median(times) * 1000
        times = []
        for i in range(200):
            t = time.perf_counter()
            engine.handle(f"wf-{(i * 4999) % n:07d}").info()
            times.append(time.perf_counter() - t)
        figures["info_ms"] = statistics.median(times) * 1000
    return figures


register("listing[10^6]", listing, group="listing", quick=False, workflows=1_000_000)
