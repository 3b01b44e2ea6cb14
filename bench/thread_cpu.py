"""CPU per step on each thread of the async workload (1,024 workflows x 10
steps, ``synchronous="full"``): where a step's microseconds go, by thread.

    python bench/thread_cpu.py [--workflows 1024] [--steps 10] [--rounds 5]
    python bench/thread_cpu.py --postgresql    # on the local server (DURABLY_BENCH_PG)
    PYTHONPATH=../other/src python bench/thread_cpu.py    # another tree

Prints one JSON line: medians over the rounds (after one warm-up round) of
the wall time per step and the CPU time per step of the event loop's thread
(``main_us``), the journal's writer and the lease keeper, each read from the
thread's own CPU clock (``pthread_getcpuclockid``), and the context switches
per step of the loop's thread and the writer (``/proc``). The CPU clocks
are steadier than throughput on a shared machine: compare two trees by
alternating runs of this script in fresh processes. For a count that does
not depend on the machine at all, run it under
``valgrind --tool=callgrind --separate-threads=yes`` with 1 and with 5
rounds and subtract (docs/bench/round2-report.md). With ``--postgresql``,
``server_us`` is the CPU per step of every ``postgres`` process on the machine
(``/proc``: the server runs here, and nothing else should use it meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import durably

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/scenarios, as bench/soak.py does
from scenarios import register_chain


def _cpu() -> dict[str, float]:
    """Each live thread's CPU time, by name."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.ident is not None:
            try:
                out[t.name] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            except OSError:  # it ended meanwhile
                pass
    return out


def _switches() -> dict[str, int]:
    """Each live thread's context switches (voluntary and not), by name."""
    out: dict[str, int] = {}
    for t in threading.enumerate():
        try:
            status = Path(f"/proc/self/task/{t.native_id}/status").read_text()
        except OSError:
            continue
        out[t.name] = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
    return out


def _server_cpu() -> float:
    """The CPU time, in seconds, of every process named ``postgres`` (the
    local server; its processes have one thread each): ``/proc/PID/schedstat``,
    in nanoseconds."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        except OSError:
            continue  # it ended meanwhile
    return total / 1e9


def _delta(before: dict[str, Any], after: dict[str, Any], name: str) -> float:
    return float(after.get(name, 0) - before.get(name, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgresql", action="store_true", help="a fresh schema on DURABLY_BENCH_PG")
    args = parser.parse_args()
    n, k = args.workflows, args.steps

    if args.postgresql:
        from scenarios._pg import drop, fresh_url

        where = fresh_url("threadcpu")
    else:
        where = str(Path(tempfile.mkdtemp(prefix="durably-threadcpu-")) / "cpu.db")
    try:
        rows = _rounds(where, n, k, args.rounds, args.postgresql)
    finally:
        if args.postgresql:
            drop(where)
    summary: dict[str, Any] = {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
    summary["durably"] = durably.__file__
    print(json.dumps(summary))


def _rounds(where: str, n: int, k: int, rounds: int, server: bool) -> list[dict[str, float]]:
    engine = durably.Engine(where)

    chain = register_chain(engine)  # the workload of every async scenario

    async def go() -> None:
        handles = await asyncio.gather(*[engine.start_async(chain, k) for _ in range(n)])
        await asyncio.gather(*[h.result_async() for h in handles])

    rows: list[dict[str, float]] = []
    with engine:
        for r in range(rounds + 1):
            srv0 = _server_cpu() if server else 0.0
            sw0, cpu0, t0 = _switches(), _cpu(), time.perf_counter()
            asyncio.run(go())
            wall, cpu1, sw1 = time.perf_counter() - t0, _cpu(), _switches()
            srv1 = _server_cpu() if server else 0.0
            if r == 0:
                continue  # warm-up
            per = n * k
            rows.append(
                {
                    "wall_us": wall / per * 1e6,
                    "main_us": _delta(cpu0, cpu1, "MainThread") / per * 1e6,
                    "writer_us": _delta(cpu0, cpu1, "durably-journal") / per * 1e6,
                    "lease_keeper_us": _delta(cpu0, cpu1, "durably-coord") / per * 1e6,
                    "main_switches": _delta(sw0, sw1, "MainThread") / per,
                    "writer_switches": _delta(sw0, sw1, "durably-journal") / per,
                }
            )
            if server:
                rows[-1]["server_us"] = (srv1 - srv0) / per * 1e6
    return rows


if __name__ == "__main__":
    main()
