"""Helpers of the web view's tests: a worker process running workflows on a
database (tests/_cliworker.py) and ``durably ui`` served by the console
script in another process, on a free port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx


def env() -> dict[str, str]:
    import durably

    out = dict(os.environ, PYTHONPATH=str(Path(durably.__file__).parents[1]))
    out.pop("PGCONNECT_TIMEOUT", None)
    out.pop("DURABLY_UI_TOKEN", None)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def worker(db: str, tmp: Path) -> Iterator[subprocess.Popen[str]]:
    """tests/_cliworker.py running ``db`` (an executor in another process) until the block ends."""
    stop = tmp / f"stop-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_cliworker.py")), db, str(stop)],
        stdout=subprocess.PIPE,
        env=env(),
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
        assert proc.poll() is None, "the worker died during the tests"
    finally:
        stop.touch()
        try:
            proc.wait(timeout=30)
        finally:
            proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()


@contextlib.contextmanager
def served(db: str, *args: str, headers: dict[str, str] | None = None) -> Iterator[str]:
    """``durably ui DB --port N ARGS...`` running; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "durably", "ui", db, "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env(),
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/static/style.css", headers=headers, timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise AssertionError(f"durably ui did not start: {err}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        finally:
            proc.kill()
            if proc.stderr is not None:
                proc.stderr.close()


def until(what: Callable[[], Any], timeout: float = 15.0) -> Any:
    """``what()`` once it is truthy (polls)."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: last {got!r}")
        time.sleep(0.05)
