"""PostgreSQL (issue 13): durably on PostgreSQL against the server's raw
limit (single-row commits and batched inserts, through the same driver,
psycopg 3) and against DBOS Transact on the same server (its production
path), in one run: 1,024 concurrent async workflows x 10 steps, and one
sequential workflow."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from . import chain_engine, counting_engine, percentile, register
from ._pg import URL, drop, fresh_url


def raw_commits(workdir: Path, quick: bool, rows: int) -> dict[str, Any]:
    """Commits of ``rows`` step-sized rows each (one multi-row INSERT from
    arrays, as durably's writer does), autocommit, on one connection."""
    import psycopg

    n = (300 if quick else 2000) if rows == 1 else (50 if quick else 300)
    table = f"raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (workflow_id text, position int, name text, output text,"
            " recorded_at float8 DEFAULT extract(epoch from clock_timestamp()), PRIMARY KEY (workflow_id, position))"
        )
        try:
            sql1 = f"INSERT INTO {table} (workflow_id, position, name, output) VALUES (%s, %s, %s, %s)"
            sqln = (
                f"INSERT INTO {table} (workflow_id, position, name, output)"
                " SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[])"
            )
            lat = []
            t0 = time.perf_counter()
            for i in range(n):
                t = time.perf_counter()
                if rows == 1:
                    conn.execute(sql1, ("w", i, "inc", str(i)))
                else:
                    conn.execute(
                        sqln,
                        (
                            ["w"] * rows,
                            list(range(i * rows, (i + 1) * rows)),
                            ["inc"] * rows,
                            [str(k) for k in range(rows)],
                        ),
                    )
                lat.append(time.perf_counter() - t)
            wall = time.perf_counter() - t0
        finally:
            conn.execute(f"DROP TABLE {table}")
    lat.sort()
    return {"commits_per_s": n / wall, "rows_per_s": n * rows / wall, "commit_p50_us": percentile(lat, 0.5) * 1e6}


def durably_sequential(workdir: Path, quick: bool) -> dict[str, Any]:
    """One workflow of N sequential steps; each step waits for its own commit."""
    n = 500 if quick else 2000
    url = fresh_url("seq")
    lat: list[float] = []
    engine, loop = counting_engine(url, "full", lat)
    try:
        with engine:
            loop(50)
            lat.clear()
            t0 = time.perf_counter()
            assert loop(n) == n
            wall = time.perf_counter() - t0
    finally:
        drop(url)
    lat.sort()
    return {
        "steps_per_s": n / wall,
        "ack_p50_us": percentile(lat, 0.5) * 1e6,
        "ack_p99_us": percentile(lat, 0.99) * 1e6,
    }


def durably_async(workdir: Path, quick: bool, count: int, steps: int = 10) -> dict[str, Any]:
    """``count`` concurrent async workflows of ``steps`` steps."""
    url = fresh_url("async")
    engine, chain = chain_engine(url)

    async def go(n: int) -> float:
        t0 = time.perf_counter()
        handles = await asyncio.gather(*[engine.start_async(chain, steps) for _ in range(n)])
        results = await asyncio.gather(*[h.result_async(timeout=600) for h in handles])
        assert results == [steps] * n
        return time.perf_counter() - t0

    try:
        with engine:
            asyncio.run(go(8))
            b0, r0 = engine._journal.batches, engine._journal.records
            wall = asyncio.run(go(count))
            batches, records = engine._journal.batches - b0, engine._journal.records - r0
    finally:
        drop(url)
    return {
        "steps_per_s": count * steps / wall,
        "workflows_per_s": count / wall,
        "mean_batch": records / max(batches, 1),
    }


def _dbos(tag: str) -> tuple[Any, str]:
    from dbos import DBOS, DBOSConfig

    db = f"dbos_bench_{tag}_{uuid.uuid4().hex[:6]}"
    base = URL.rsplit("/", 1)[0]
    config: DBOSConfig = {"name": "durably-bench", "system_database_url": f"{base}/{db}", "run_admin_server": False}
    DBOS(config=config)
    return DBOS, db


def _drop_database(db: str) -> None:
    import psycopg

    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def dbos_async(workdir: Path, quick: bool, count: int, steps: int = 10) -> dict[str, Any]:
    DBOS, db = _dbos("async")

    @DBOS.step()
    async def inc(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    async def chain(k: int) -> int:
        x = 0
        for _ in range(k):
            x = await inc(x)
        return x

    DBOS.launch()

    async def go(n: int) -> float:
        t0 = time.perf_counter()
        handles = await asyncio.gather(*[DBOS.start_workflow_async(chain, steps) for _ in range(n)])
        results = await asyncio.gather(*[h.get_result() for h in handles])
        assert results == [steps] * n
        return time.perf_counter() - t0

    try:
        asyncio.run(go(8))
        wall = asyncio.run(go(count))
    finally:
        DBOS.destroy()
        _drop_database(db)
    return {"steps_per_s": count * steps / wall, "workflows_per_s": count / wall}


def dbos_sequential(workdir: Path, quick: bool) -> dict[str, Any]:
    n = 300 if quick else 1000
    DBOS, db = _dbos("seq")

    @DBOS.step()
    def inc(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    def loop(k: int) -> int:
        x = 0
        for _ in range(k):
            x = inc(x)
        return x

    DBOS.launch()
    try:
        loop(20)
        t0 = time.perf_counter()
        assert loop(n) == n
        wall = time.perf_counter() - t0
    finally:
        DBOS.destroy()
        _drop_database(db)
    return {"steps_per_s": n / wall}


register("pg.raw.commit[rows=1]", raw_commits, "postgresql", quick=True, needs="psycopg", rows=1)
register("pg.raw.commit[rows=100]", raw_commits, "postgresql", quick=True, needs="psycopg", rows=100)
register("pg.durably.sequential[full]", durably_sequential, "postgresql", quick=True, needs="psycopg")
register("pg.durably.async[c=1024,full]", durably_async, "postgresql", quick=False, needs="psycopg", count=1024)
register("pg.durably.async[c=256,full]", durably_async, "postgresql", quick=True, needs="psycopg", count=256)
register("pg.dbos.sequential", dbos_sequential, "postgresql", quick=True, needs="dbos")
register("pg.dbos.async[c=1024,full]", dbos_async, "postgresql", quick=False, needs="dbos", count=1024)
register("pg.dbos.async[c=256,full]", dbos_async, "postgresql", quick=True, needs="dbos", count=256)
