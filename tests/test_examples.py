"""The example programs run and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_approval_saga_in_virtual_time(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "approval_saga.py"), "--virtual", "--db", str(tmp_path / "saga.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "order-1: pay-order-1, parcel-order-1" in out
    assert "order-2: rejected, stock released" in out
    assert "order-4: no answer, stock released" in out
    assert out.count("compensate: released") == 2


def test_approval_saga_runs_again_on_the_same_database(tmp_path: Path) -> None:
    args = [sys.executable, str(EXAMPLES / "approval_saga.py"), "--virtual", "--db", str(tmp_path / "saga.db")]
    first = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    second = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    assert "Traceback" not in first.stderr + second.stderr
    for line in (
        "order-1: pay-order-1, parcel-order-1",
        "order-2: rejected, stock released",
        "order-4: no answer, stock released",
    ):
        assert line in second.stdout  # the finished workflows' results, nothing run again
    assert "compensate" not in second.stdout


def test_web_and_worker_processes_finish_every_order_once_when_a_worker_dies(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "web_and_worker.py"), "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all orders done exactly once: True" in out.stdout


def test_checkout_with_crash_twice_finishes_on_the_second_run(tmp_path: Path) -> None:
    import signal

    def run(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(EXAMPLES / "checkout.py"), *flags],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = run("--crash")
    assert first.returncode == -signal.SIGKILL and "charging o-42" in first.stdout
    second = run("--crash")  # as the docstring says: run it twice with --crash
    assert second.returncode == 0, second.stderr
    assert "charging" not in second.stdout and "order-o-42 -> ch-o-42 (SUCCESS)" in second.stdout
