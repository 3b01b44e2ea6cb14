"""Replay under concurrency, under SIGKILL: concurrent async workflows
(gather, as_completed, wait(FIRST_COMPLETED) over a sleep and a child, a
receive) are killed at seeded random moments and restarted until they
finish. The checker: every workflow ends SUCCESS with the value its id
implies, none is ever parked (unchanged code must replay), and no step body
runs again after its outcome was acknowledged to the workflow."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .ledger import read_ledger

WORKLOAD = Path(__file__).with_name("gather_workload.py")
WORKFLOWS = 10


def _run(db: Path, ledger: Path, kill_after: float | None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(db), str(ledger), "--workflows", str(WORKFLOWS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=kill_after if kill_after is not None else 120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def check(final: dict, ledger: Path) -> list[str]:
    problems = []
    want = {f"g-{i}": 30 + i + 2 + i for i in range(WORKFLOWS)}
    if final.get("results") != want:
        problems.append(f"results {final.get('results')} != {want}")
    if final.get("parked"):
        problems.append(f"parked: {final['parked']}")
    acked: set[tuple[str, str]] = set()
    records, _torn = read_ledger(ledger)
    for kind, wid, key, _pid in records:
        if kind == "A":
            acked.add((wid, key))
        elif (wid, key) in acked:
            problems.append(f"step {key} of {wid} ran again after its outcome was acknowledged")
    return problems


def run_gather_chaos(workdir: Path, seed: int, kills: int) -> tuple[list[str], int]:
    rng = random.Random(seed)
    db, ledger = workdir / "g.db", workdir / "g.ledger"
    landed = 0
    for _ in range(kills):
        run = _run(db, ledger, rng.uniform(0.1, 0.3))
        if run.returncode == -signal.SIGKILL:
            landed += 1
        elif run.returncode != 0:
            return [f"seed {seed}: a run failed: {run.stderr[-2000:]}"], landed
    final = _run(db, ledger, None)
    if final.returncode != 0:
        return [f"seed {seed}: the final run failed: {final.stderr[-2000:]}"], landed
    return [f"seed {seed}: {p}" for p in check(json.loads(final.stdout), ledger)], landed


@pytest.mark.parametrize("seed", range(3))
def test_concurrent_workflows_replay_identically_under_random_kills(tmp_path: Path, seed: int) -> None:
    problems, landed = run_gather_chaos(tmp_path, seed, kills=6)
    assert problems == []
    assert landed >= 2  # most kills land mid-run


def test_the_gather_checker_catches_a_re_run_and_a_wrong_result(tmp_path: Path) -> None:
    ledger = tmp_path / "forged.ledger"
    from .ledger import format_record

    ledger.write_text(
        format_record("E", "g-0", "b0.0", 1)
        + format_record("A", "g-0", "b0.0", 1)
        + format_record("E", "g-0", "b0.0", 2)
    )
    problems = check({"results": {"g-0": 0}, "parked": ["g-1"]}, ledger)
    assert any("ran again" in p for p in problems)
    assert any("results" in p for p in problems) and any("parked" in p for p in problems)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
def test_full_tier_gather(tmp_path: Path, seed: int) -> None:
    problems, _ = run_gather_chaos(tmp_path, seed, kills=12)
    assert problems == []
