"""``durably copy`` at scale: N finished workflows of 10 steps each (and an
event apiece) copied from an SQLite file to PostgreSQL and back to a new
file (issue 21: 10^6 workflows; ``--quick``: 10^4). Reports each direction's
seconds and rows per second, and the sizes of both files."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from . import _pg, cleanup, fresh_path, register

STEPS = 10


def _prefill(path: str, n: int) -> None:
    """N finished workflows with STEPS step rows each, straight into a
    durably file (a bench tool, not the engine)."""
    import apsw

    import durably

    with durably.Engine(path):
        pass
    conn = apsw.Connection(path)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO workflows (workflow_id, name, status, inputs, output, created_at, updated_at)"
        " VALUES (?, 'order', 'SUCCESS', '[[\"o\"],{}]', '\"done\"', ?, ?)",
        ((f"wf-{i:07d}", 1.7e9 + i / 1000, 1.7e9 + i / 1000 + 0.5) for i in range(n)),
    )
    conn.executemany(
        "INSERT INTO steps (workflow_id, position, name, output, started_at, recorded_at)"
        ' VALUES (?, ?, \'charge\', \'{"receipt":"r-123456","cents":1999}\', ?, ?)',
        ((f"wf-{i:07d}", p, 1.7e9 + i / 1000, 1.7e9 + i / 1000 + 0.01) for i in range(n) for p in range(STEPS)),
    )
    conn.executemany(
        "INSERT INTO events (workflow_id, key, value) VALUES (?, 'stage', '\"shipped\"')",
        ((f"wf-{i:07d}",) for i in range(n)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def copying(workdir: Path, quick: bool, workflows: int) -> dict[str, Any]:
    from durably.operations.copy import copy

    n = workflows // 100 if quick else workflows
    src = fresh_path(workdir, "copy-src")
    back = fresh_path(workdir, "copy-back")
    url = _pg.fresh_url("copy")
    _prefill(src, n)
    try:
        t = time.perf_counter()
        there = copy(src, url)
        to_pg = time.perf_counter() - t
        t = time.perf_counter()
        again = copy(url, back)
        to_file = time.perf_counter() - t
        assert there.rows == again.rows and there.workflows == n, (there.rows, again.rows)
        rows = sum(there.rows.values())
        return {
            "workflows": n,
            "rows": rows,
            "sqlite_to_pg_s": to_pg,
            "pg_to_sqlite_s": to_file,
            "sqlite_to_pg_rows_per_s": rows / to_pg,
            "pg_to_sqlite_rows_per_s": rows / to_file,
            "source_mb": os.path.getsize(src) / 1e6,
            "copy_mb": os.path.getsize(back) / 1e6,
        }
    finally:
        _pg.drop(url)
        cleanup(src)
        cleanup(back)


# --quick runs it at 10^4 workflows
register("copy[10^6 x 10 steps]", copying, group="operations", quick=True, needs="psycopg", workflows=1_000_000)
