"""The raw SQLite limit through apsw with the engine's durable settings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import cleanup, fresh_path, register


def commits(workdir: Path, quick: bool, rows_per_txn: int, synchronous: str = "full") -> dict[str, Any]:
    import apsw

    total = {1: 2000, 10: 20000, 100: 100000, 1000: 300000}[rows_per_txn] // (4 if quick else 1)
    path = fresh_path(workdir, "raw")
    conn = apsw.Connection(path)
    conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", 2 if synchronous == "full" else 1)
    conn.execute("CREATE TABLE t (w TEXT, p INTEGER, name TEXT, out TEXT, PRIMARY KEY (w, p)) WITHOUT ROWID")
    rows = [("wf", i, "step", "x" * 60) for i in range(rows_per_txn)]
    txns = total // rows_per_txn
    t0 = time.perf_counter()
    for k in range(txns):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(f"w{k}", p, n, o) for _w, p, n, o in rows])
        conn.execute("COMMIT")
    wall = time.perf_counter() - t0
    conn.close()
    cleanup(path)
    return {"commits_per_s": txns / wall, "rows_per_s": txns * rows_per_txn / wall}


def bulk(workdir: Path, quick: bool) -> dict[str, Any]:
    """The single-writer ceiling: one transaction of many rows, synchronous=OFF."""
    import apsw

    n = 200_000 if quick else 1_000_000
    path = fresh_path(workdir, "bulk")
    conn = apsw.Connection(path)
    conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", 0)
    conn.execute("CREATE TABLE t (w TEXT, p INTEGER, name TEXT, out TEXT, PRIMARY KEY (w, p)) WITHOUT ROWID")
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", (("wf", i, "step", "x" * 60) for i in range(n)))
    conn.execute("COMMIT")
    wall = time.perf_counter() - t0
    conn.close()
    cleanup(path)
    return {"rows_per_s": n / wall}


for _rows in (1, 10, 100, 1000):
    register(f"sqlite.commit[rows={_rows}]", commits, "sqlite", quick=_rows in (1, 100), rows_per_txn=_rows)
register("sqlite.bulk", bulk, "sqlite", quick=False)
