"""A worker process for bench/scenarios/processes.py (one role per run).

python _proc_worker.py steps DB COUNT GO_FILE     # COUNT async workflows x 10 steps, after GO_FILE appears
python _proc_worker.py serve DB LEASE             # serve (workflows "waiter", "recv_loop") until killed
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import durably

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: run as a script
from scenarios import register_chain


def build(engine: durably.Engine) -> None:
    register_chain(engine)

    @engine.workflow(name="waiter")
    def waiter() -> str:
        return str(engine.recv("go"))

    @engine.workflow(name="recv_loop")
    def recv_loop(n: int) -> list[float]:
        # the receive time of each message (not journaled: a benchmark)
        lags = []
        for _ in range(n):
            sent = engine.recv("m")
            lags.append(time.time() - float(sent))
        return lags


def steps(db: str, count: int, go_file: str) -> None:
    engine = durably.Engine(db, synchronous="full")
    build(engine)

    async def run() -> tuple[float, float]:
        while not os.path.exists(go_file):
            await asyncio.sleep(0.001)
        t0 = time.time()
        handles = await asyncio.gather(*[engine.start_async("chain", 10) for _ in range(count)])
        results = await asyncio.gather(*[h.result_async() for h in handles])
        assert results == [10] * count
        return t0, time.time()

    with engine:
        print("ready", flush=True)
        t0, t1 = asyncio.run(run())
    print(json.dumps({"t0": t0, "t1": t1}), flush=True)


def serve(db: str, lease: float) -> None:
    engine = durably.Engine(db, lease=lease)
    build(engine)
    with engine:
        print("ready", flush=True)
        while True:
            time.sleep(1)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "steps":
        steps(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        serve(sys.argv[2], float(sys.argv[3]))
