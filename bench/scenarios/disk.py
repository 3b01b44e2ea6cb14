"""The physical limit: write + sync on the database directory's disk."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from . import percentile, register


def sync_loop(workdir: Path, quick: bool, call: str, pattern: str) -> dict[str, Any]:
    n = 500 if quick else 2000
    path = workdir / f"sync-{os.getpid()}.bin"  # a scratch file, never a database
    block = os.urandom(4096)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    sync = os.fdatasync if call == "fdatasync" else os.fsync
    if pattern == "overwrite":
        os.write(fd, block * 64)
        os.fsync(fd)
    lat = []
    try:
        t0 = time.perf_counter()
        for i in range(n):
            if pattern == "overwrite":
                os.pwrite(fd, block, (i % 64) * 4096)
            else:
                os.write(fd, block)
            t = time.perf_counter()
            sync(fd)
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()
    lat.sort()
    return {"ops_per_s": n / wall, "p50_us": percentile(lat, 0.5) * 1e6, "p99_us": percentile(lat, 0.99) * 1e6}


for _call in ("fdatasync", "fsync"):
    for _pattern in ("append", "overwrite"):
        register(
            f"disk.{_call}[{_pattern}]",
            sync_loop,
            "disk",
            quick=_call == "fdatasync" and _pattern == "append",
            call=_call,
            pattern=_pattern,
        )
