"""Benchmark scenarios. Each runs in a fresh process (``run.py --scenario``)
and returns a dict of figures; ``run.py`` interleaves repetitions and takes
medians. A scenario is registered with the parameters it is run at, so one
function yields several named entries (``durably.async[c=1024,full]``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Entry:
    name: str
    fn: Callable[..., dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    group: str = ""  # report table and chart the entry belongs to
    quick: bool = True  # part of --quick
    needs: str = ""  # an optional module the entry needs (skipped if missing)


REGISTRY: dict[str, Entry] = {}


def register(
    name: str, fn: Callable[..., dict[str, Any]], group: str, quick: bool = True, needs: str = "", **params: Any
) -> None:
    REGISTRY[name] = Entry(name, fn, params, group, quick, needs)


def fresh_path(workdir: Path, stem: str) -> str:
    path = workdir / f"{stem}-{os.getpid()}.db"
    cleanup(str(path))
    return str(path)


def chain_engine(path: str, **kw: Any) -> tuple[Any, Any]:
    """An Engine(path, **kw) with the async ``chain(k)`` workflow of k ``inc``
    steps the async scenarios run; (engine, chain)."""
    import durably

    engine = durably.Engine(path, **kw)
    return engine, register_chain(engine)


def register_chain(engine: Any) -> Any:
    """Register the async ``chain(k)`` workflow of k ``inc`` steps on
    ``engine`` (the workload of every async scenario); return it."""

    @engine.step(name="inc")
    async def inc(x: int) -> int:
        return x + 1

    @engine.workflow(name="chain")
    async def chain(k: int) -> int:
        x = 0
        for _ in range(k):
            x = await inc(x)
        return x

    return chain


def cleanup(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(path + suffix).unlink(missing_ok=True)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def counting_engine(path: str, synchronous: str = "full", lat: list[float] | None = None) -> tuple[Any, Any]:
    """An engine with a sync workflow ``loop(k)`` of k sequential ``inc``
    steps; with ``lat``, each step's call-to-acknowledgement time is appended."""
    import time

    import durably

    engine = durably.Engine(path, synchronous=synchronous)

    @engine.step(name="inc")
    def inc(x: int) -> int:
        return x + 1

    @engine.workflow(name="loop")
    def loop(k: int) -> int:
        x = 0
        for _ in range(k):
            t = time.perf_counter()
            x = inc(x)
            if lat is not None:
                lat.append(time.perf_counter() - t)
        return x

    return engine, loop


# importing the modules registers their scenarios
from . import (  # noqa: E402,F401
    backup,
    copying,
    disk,
    durably_engine,
    growth,
    listing,
    observability,
    peer,
    postgres,
    processes,
    recovery,
    retention,
    soak,
    sqlite_raw,
    toolkit,
    webview,
)
