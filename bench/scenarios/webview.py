"""The web view's cost to a running engine: async 1,024 x 10 (as
``durably.async[c=1024,full]``) while ``durably ui`` serves the same file
from another process and a client polls its live endpoint at the page's
rate (``/api/workflows``: the newest 50 and the counts by status, every
``interval`` seconds, what an open workflows page asks), against the same
run without it. Pairs in bench/run.py: "async 1024 with the web view open
/ without". The poller's answers time the view's side (``poll_ms_*``);
``view_cpu_share`` is the CPU the view and the poller used per second of
the run (what they take from the engine on a busy machine)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import chain_engine, cleanup, fresh_path, register

_POLLER = """
import json, sys, time, httpx
import os
url, interval, stop = sys.argv[1], float(sys.argv[2]), sys.argv[3]
times = []
with httpx.Client(timeout=30) as http:
    http.get(url + "/api/workflows").raise_for_status()
    print("ready", flush=True)
    while not os.path.exists(stop):
        t = time.perf_counter()
        http.get(url + "/api/workflows").raise_for_status()
        times.append(time.perf_counter() - t)
        time.sleep(max(0.0, interval - (time.perf_counter() - t)))
times.sort()
print(json.dumps({"polls": len(times), "p50": times[len(times) // 2] if times else None,
                  "p99": times[int(len(times) * 0.99)] if times else None}))
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/static/style.css", timeout=2)
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("durably ui did not start") from None
            time.sleep(0.1)


def async_with_view(
    workdir: Path, quick: bool, view: bool, count: int = 1024, rounds: int = 40, interval: float = 1.0
) -> dict[str, Any]:
    """``rounds`` x (``count`` concurrent async workflows of 10 steps: about 8 s, so the page polls several times); with
    ``view``, the web view serves the file and is polled every ``interval``
    seconds meanwhile. Pair with ``view=False``."""
    path = fresh_path(workdir, "webview")
    engine, chain = chain_engine(path)
    if quick:
        count, rounds = 256, 3

    async def go(n: int) -> None:
        handles = await asyncio.gather(*[engine.start_async(chain, 10) for _ in range(n)])
        assert await asyncio.gather(*[h.result_async() for h in handles]) == [10] * n

    procs: list[subprocess.Popen[Any]] = []
    stop = Path(f"{path}.stop")
    poll: dict[str, Any] = {}
    try:
        with engine:
            asyncio.run(go(64))  # the file exists and is warm; the view reads it from here on
            if view:
                port = _port()
                url = f"http://127.0.0.1:{port}"
                cmd = [sys.executable, "-m", "durably", "ui", path, "--port", str(port)]
                procs.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))
                _wait_up(url, procs[0])
                poller = [sys.executable, "-c", _POLLER, url, str(interval), str(stop)]
                procs.append(subprocess.Popen(poller, stdout=subprocess.PIPE, text=True))
                assert procs[1].stdout is not None and procs[1].stdout.readline().strip() == "ready"
            cpu0, t0 = _cpu([p.pid for p in procs]), time.perf_counter()
            for _ in range(rounds):
                asyncio.run(go(count))
            wall = time.perf_counter() - t0
            cpu = _cpu([p.pid for p in procs]) - cpu0
            if view:
                stop.touch()
                out, _ = procs[1].communicate(timeout=60)
                poll = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        stop.unlink(missing_ok=True)
        cleanup(path)
    result: dict[str, Any] = {"steps_per_s": rounds * count * 10 / wall, "seconds": wall}
    if poll.get("polls"):
        result.update(polls=poll["polls"], poll_ms_p50=poll["p50"] * 1e3, poll_ms_p99=poll["p99"] * 1e3)
        result["view_cpu_share"] = cpu / wall  # CPU the view and its poller used, per second of the run
    return result


for _on in (True, False):
    register(
        f"webview.async[c=1024,{'open' if _on else 'closed'}]",
        async_with_view,
        "webview",
        quick=False,
        needs="starlette",
        view=_on,
    )
