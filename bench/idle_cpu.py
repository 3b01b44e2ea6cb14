"""The CPU an idle engine uses, with and without leftover rows (issue 19
item 8): executors that died without close() and old notices.

    python bench/idle_cpu.py DB [--dead 20000] [--notices 40000] [--seconds 60]

DB: a file path (created) or a postgresql:// URL (a fresh schema: add
``?schema=...``). Opens an engine, plants the rows from another connection
(as crashed processes and a busy hour would leave them), sleeps, and
prints the process CPU time over the sleep, and the rows left at the end.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import durably
from durably.store._executors import HOST


def _sql(db: str) -> tuple[Callable[[str, list[tuple[Any, ...]]], None], Callable[[str], Any], Callable[[], None]]:
    """(executemany, one value, close) on a connection of its own."""
    if db.startswith("postgresql://"):
        import psycopg

        from durably.store.pg._store import _split_ours

        url, ours = _split_ours(db)
        conn = psycopg.connect(url, autocommit=True)
        conn.execute(f"SET search_path = {ours.get('schema', 'durably')}")

        def many(sql: str, rows: list[tuple[Any, ...]]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)

        return many, lambda sql: conn.execute(sql).fetchone()[0], conn.close  # type: ignore[index]
    import apsw  # a separate connection, as another process's would be

    lite = apsw.Connection(db)
    lite.setbusytimeout(10_000)

    def many_lite(sql: str, rows: list[tuple[Any, ...]]) -> None:
        with lite:
            lite.executemany(sql, rows)

    return many_lite, lambda sql: lite.execute(sql).get, lite.close


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--dead", type=int, default=20_000)
    ap.add_argument("--notices", type=int, default=40_000)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    engine = durably.Engine(args.db)

    @engine.workflow(name="noop")
    def noop() -> None:
        return None

    with engine:
        many, one, close = _sql(args.db)
        old = time.time() - 2 * 86400  # died two days ago
        many(
            "INSERT INTO executors (executor_id, host, pid, pid_started, app_version, lease_until, started_at)"
            " VALUES (?, ?, ?, NULL, '0', ?, ?)",
            [(f"dead-{i}", HOST, 4_000_000 + i, old, old) for i in range(args.dead)],
        )
        many(
            "INSERT INTO notices (kind, workflow_id, detail, created_at) VALUES ('msg', ?, NULL, ?)",
            [(f"w{i}", time.time() - 3600) for i in range(args.notices)],
        )
        cpu0, t0 = time.process_time(), time.monotonic()
        time.sleep(args.seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        left = (one("SELECT count(*) FROM executors"), one("SELECT count(*) FROM notices"))
        close()
    print(
        f"{os.path.basename(args.db.split('?')[0])}: dead={args.dead} notices={args.notices}: "
        f"cpu {cpu:.2f} s over {wall:.0f} s = {100 * cpu / wall:.1f}%; rows left: executors {left[0]}, "
        f"notices {left[1]}"
    )


if __name__ == "__main__":
    main()
