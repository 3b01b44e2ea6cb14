"""The web recipes of docs/guides/processes.md under real servers, in subprocesses.

A deploy sends SIGTERM while orders are inside a step body. The FastAPI app
(examples/fastapi_app.py) closes its engine in the lifespan with ``async
with`` (close_async); the WSGI app (tests/webapps/, gunicorn sync workers)
in gunicorn's ``worker_exit`` hook. Either way the running bodies finish and
are recorded before the process exits, and after the restart no step body
has run twice. Servers: uvicorn, gunicorn with two uvicorn workers, gunicorn
with two sync workers (two processes on one SQLite file).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WEBAPPS = Path(__file__).resolve().parent / "webapps"
ORDERS = ["a", "b", "c"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(kind: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    if kind == "uvicorn":
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(EXAMPLES),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "fastapi_app:app",
        ]
    elif kind == "gunicorn-uvicorn":
        pytest.importorskip("gunicorn")
        pytest.importorskip("uvicorn_worker")
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(EXAMPLES),
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "30",
            "fastapi_app:app",
        ]
    else:  # gunicorn's sync workers, the WSGI recipe with its hooks
        pytest.importorskip("gunicorn")
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(WEBAPPS),
            "-c",
            str(WEBAPPS / "gunicorn_hooks.py"),
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "30",
            "wsgi_app:app",
        ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _call(method: str, url: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait_up(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "server exited"
        try:
            _call("GET", f"{base}/orders/none")
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start listening within 60 s")


def _runs(log: Path) -> Counter[str]:
    """How many times each step body ran, per order: {"charge a": 1, ...}."""
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.rsplit(" ", 1)[0] for line in lines)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the server did not stop within 60 s of SIGTERM:\n{out.decode()[-3000:]}") from exc
    return out.decode()


def _clean_exit(proc: subprocess.Popen[bytes], output: str) -> None:
    # uvicorn re-raises the signal once its graceful shutdown is done (-15).
    assert proc.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn-uvicorn", "gunicorn-wsgi"])
def test_sigterm_while_steps_run_then_restart_runs_no_body_twice(server: str, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    env = {
        **os.environ,
        "ORDERS_DB": str(tmp_path / "orders.db"),
        "ORDERS_RUNS_LOG": str(log),
        "ORDERS_STEP_SECONDS": "3",
    }
    port = _free_port()
    base = f"http://127.0.0.1:{port}"

    first = _server(server, port, env)
    try:
        _wait_up(base, first)
        for order in ORDERS:
            assert _call("POST", f"{base}/orders/{order}") == (200, {"workflow_id": f"order-{order}"})
        deadline = time.monotonic() + 30
        while sum(_runs(log)[f"charge {o}"] for o in ORDERS) < len(ORDERS):  # all three inside the 3 s step
            assert time.monotonic() < deadline, f"the charge steps did not start: {_runs(log)}"
            time.sleep(0.05)
    finally:
        output = _stop(first)
    _clean_exit(first, output)
    # The deploy stopped them between charge and ship: charge recorded, ship not run.
    assert _runs(log) == Counter({f"charge {o}": 1 for o in ORDERS}), output[-3000:]

    second = _server(server, port, env)
    try:
        _wait_up(base, second)
        deadline = time.monotonic() + 60
        for order in ORDERS:
            while True:
                status, body = _call("GET", f"{base}/orders/{order}")
                if status == 200 and body["status"] == "SUCCESS":
                    assert body["output"] == {"receipt": f"ch-{order}", "parcel": f"parcel-{order}"}
                    break
                assert time.monotonic() < deadline, f"order {order} did not finish after the restart: {body}"
                time.sleep(0.1)
    finally:
        output = _stop(second)
    _clean_exit(second, output)
    runs = _runs(log)
    assert runs == Counter({**{f"charge {o}": 1 for o in ORDERS}, **{f"ship {o}": 1 for o in ORDERS}}), runs
