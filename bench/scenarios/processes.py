"""Several processes on one file (issue 11): throughput with 1, 2 and 4
processes side by side in one run, cross-process message wake-up latency,
and takeover time after a SIGKILL (same host: a dead pid; another host: an
expired lease)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import cleanup, fresh_path, percentile, register

WORKER = str(Path(__file__).with_name("_proc_worker.py"))


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"worker did not start: {line!r} {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    return proc


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def _fresh(workdir: Path, stem: str, backend: str, **extra: str) -> str:
    if backend == "postgresql":
        from ._pg import fresh_url

        return fresh_url(stem, **extra)
    return fresh_path(workdir, stem)


def _drop(path: str) -> None:
    if path.startswith("postgresql:"):
        from ._pg import drop

        drop(path)
    else:
        cleanup(path)


def _steps_with(workdir: Path, procs: int, total: int, backend: str = "sqlite") -> tuple[float, float]:
    path = _fresh(workdir, f"procs{procs}", backend)
    go = str(workdir / f"procs{procs}-{os.getpid()}.go")
    Path(go).unlink(missing_ok=True)
    import durably

    durably.Engine(path).open().close()  # create it once (no race on creation)
    workers = [_spawn("steps", path, str(total // procs), go) for _ in range(procs)]
    Path(go).touch()
    spans = []
    for w in workers:
        out, err = w.communicate(timeout=600)
        if w.returncode != 0:
            raise RuntimeError(err[-2000:])
        spans.append(json.loads(out.strip().splitlines()[-1]))
    Path(go).unlink(missing_ok=True)
    _drop(path)
    wall = max(s["t1"] for s in spans) - min(s["t0"] for s in spans)
    # fairness: the fastest process's time over the slowest's (1.0: none starved)
    spread = min(s["t1"] - s["t0"] for s in spans) / max(s["t1"] - s["t0"] for s in spans)
    return total * 10 / wall, spread


def steps(workdir: Path, quick: bool, backend: str = "sqlite") -> dict[str, Any]:
    """1,024 async workflows x 10 steps in total (``synchronous="full"``),
    split over 1, 2 and 4 processes on one database, in one run."""
    total = 256 if quick else 1024
    out: dict[str, Any] = {}
    for procs in (1, 2, 4):
        out[f"steps_per_s_{procs}p"], out[f"fairness_{procs}p"] = _steps_with(workdir, procs, total, backend)
    for procs in (2, 4):
        out[f"ratio_{procs}p_to_1p"] = out[f"steps_per_s_{procs}p"] / out["steps_per_s_1p"]
    return out


def wake_latency(workdir: Path, quick: bool, backend: str = "sqlite", listen: str = "on") -> dict[str, Any]:
    """A message sent by one process (a client) to a workflow waiting in
    another: from the send being durable to the receive returning there
    (PostgreSQL: LISTEN/NOTIFY, or with ``listen=off`` the polling fallback)."""
    import durably

    n = 50 if quick else 200
    path = _fresh(workdir, "wake", backend, **({"listen": listen} if backend == "postgresql" else {}))
    durably.Engine(path).open().close()
    worker = _spawn("serve", path, "10")
    try:
        client = durably.Engine(path, client=True)
        with client:
            h = client.start("recv_loop", n)
            while not h.info().executor:  # claimed by the worker
                time.sleep(0.01)
            time.sleep(0.2)  # and waiting in recv
            for _ in range(n):
                client.send(h.workflow_id, str(time.time()), topic="m")
                time.sleep(0.02)  # one at a time: each wake-up starts from an idle receiver
            lags = sorted(h.result(timeout=120))
    finally:
        _reap(worker)
    _drop(path)
    return {"wake_p50_ms": percentile(lags, 0.5) * 1e3, "wake_p99_ms": percentile(lags, 0.99) * 1e3, "messages": n}


def _takeover(workdir: Path, other_host: bool, lease: float) -> float:
    import durably

    path = fresh_path(workdir, "takeover")
    durably.Engine(path).open().close()
    env = dict(os.environ, DURABLY_HOST="bench-other-host") if other_host else None
    victim = _spawn("serve", path, str(lease), env=env)
    survivor = None
    try:
        client = durably.Engine(path, client=True)
        with client:
            ids = [client.start("waiter").workflow_id for _ in range(20)]
            while not all(i.executor for i in client.list_workflows()):  # the victim claims them
                time.sleep(0.01)
            survivor = _spawn("serve", path, str(lease))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            t0 = time.monotonic()
            while not all((i.executor or "").split(":")[1:2] == [str(survivor.pid)] for i in client.list_workflows()):
                time.sleep(0.005)
            took = time.monotonic() - t0
            for w in ids:
                client.send(w, "go", topic="go")
            for w in ids:
                client.handle(w).result(timeout=60)
    finally:
        _reap(victim)
        if survivor is not None:
            _reap(survivor)
    cleanup(path)
    return took


def takeover(workdir: Path, quick: bool) -> dict[str, Any]:
    """Seconds from a SIGKILL of the owner to another process owning its 20
    workflows: on the same host (dead pid, found within 0.5 s) and as if
    from another host (``DURABLY_HOST`` differs: only the lease, 2 s, tells)."""
    return {
        "same_host_s": _takeover(workdir, False, 30.0),
        "expired_lease_s": _takeover(workdir, True, 2.0),
        "lease_s": 2.0,
    }


register("processes.steps[c=1024,full]", steps, "processes", quick=True)
register("processes.wake_latency", wake_latency, "processes", quick=True)
register("processes.takeover", takeover, "processes", quick=False)
register("pg.processes.steps[c=1024,full]", steps, "postgresql", quick=True, needs="psycopg", backend="postgresql")
register(
    "pg.processes.wake_latency[listen]", wake_latency, "postgresql", quick=True, needs="psycopg", backend="postgresql"
)
register(
    "pg.processes.wake_latency[poll]",
    wake_latency,
    "postgresql",
    quick=True,
    needs="psycopg",
    backend="postgresql",
    listen="off",
)
