"""A peer side by side: DBOS Transact on a SQLite system database, the same
workload on the same disk (runs only where ``dbos`` is installed)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from . import cleanup, fresh_path, register


def dbos_async(workdir: Path, quick: bool, count: int, steps: int = 10) -> dict[str, Any]:
    from dbos import DBOS, DBOSConfig

    path = fresh_path(workdir, "dbos").replace(".db", ".sqlite")
    config: DBOSConfig = {
        "name": "durably-bench",
        "system_database_url": f"sqlite:///{path}",
        "run_admin_server": False,
    }
    DBOS(config=config)

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

    asyncio.run(go(8))
    wall = asyncio.run(go(count))
    DBOS.destroy()
    cleanup(path)
    return {"steps_per_s": count * steps / wall, "workflows_per_s": count / wall}


register("dbos.async[c=64,full]", dbos_async, "peer", quick=True, needs="dbos", count=64)
register("dbos.async[c=1024,full]", dbos_async, "peer", quick=False, needs="dbos", count=1024)
