"""Quick tier: SIGKILL at every named crash point (occurrences 1, 2 and last)
and at random moments; after restarting, nothing is lost, no recorded step runs
again, no step ran on erased input, and transaction rows exist exactly once."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from durably._crash import POINTS

from .harness import check, run_case, run_chaos, run_workload
from .ledger import format_record

RECOVERY_POINTS = {"recovery.scan", "recovery.launched"}
_hits: Counter[str] | None = None


def clean_run_hits(tmp: Path) -> Counter[str]:
    """How often each point is hit by one clean run (to find the 'last' occurrence)."""
    global _hits
    if _hits is None:
        log = tmp / "hits.log"
        run = run_workload(
            tmp / "c.db", tmp / "c.ledger", None, workflows=6, steps=4, extra_env={"DURABLY_CRASH_LOG": str(log)}
        )
        assert run.returncode == 0, run.stderr
        _hits = Counter(log.read_text().split())
    return _hits


def _assert_clean(verdict) -> None:
    assert verdict.ok, (verdict.problems[:10], [(r.crash_at, r.returncode) for r in verdict.runs])
    assert verdict.lost == verdict.rerun_recorded == verdict.speculative == verdict.tx_duplicates == 0


@pytest.mark.parametrize("occurrence", ["1", "2", "last"])
@pytest.mark.parametrize("point", POINTS)
def test_crash_point(tmp_path_factory, tmp_path: Path, point: str, occurrence: str) -> None:
    prefix: list[str] = []
    hits = clean_run_hits(tmp_path_factory.mktemp("hits"))
    if point == "recovery.scan":
        # hit once per open: occurrence k means k crashes in a row during recovery
        prefix = ["step.after_body:7"]
        armed = [f"{point}:1"] * {"1": 1, "2": 2, "last": 3}[occurrence]
    elif point in RECOVERY_POINTS:
        # recovery only has work after a crash: leave pending workflows first
        prefix = ["step.after_body:7"]
        armed = [f"{point}:" + {"1": "1", "2": "2", "last": "pending"}[occurrence]]
    elif occurrence == "last":
        # Batch counts vary run to run: walk down from the clean run's count to
        # the last hit this run really reaches.
        for n in range(hits[point], max(0, hits[point] - 8), -1):
            (tmp_path / str(n)).mkdir()
            verdict = run_case(tmp_path / str(n), [f"{point}:{n}"])
            if verdict.runs[0].returncode == -9:
                _assert_clean(verdict)
                return
            _assert_clean(verdict)
        pytest.fail(f"{point} never reached a late occurrence near {hits[point]}")
    else:
        prefix = []
        armed = [f"{point}:{occurrence}"]
    verdict = run_case(tmp_path, [*prefix, *armed])
    _assert_clean(verdict)
    # the armed run really died there (a clean exit would prove nothing)
    for run in verdict.runs[len(prefix) : len(prefix) + len(armed)]:
        assert run.returncode == -9, (run.crash_at, run.stderr[-500:])


def test_every_crash_point_is_reached(tmp_path: Path) -> None:
    log = tmp_path / "hits.log"
    env = {"DURABLY_CRASH_LOG": str(log)}
    run_workload(tmp_path / "d.db", tmp_path / "l", "step.after_body:7", workflows=6, steps=4, extra_env=env)
    run = run_workload(tmp_path / "d.db", tmp_path / "l", None, workflows=6, steps=4, extra_env=env)
    assert run.returncode == 0, run.stderr
    assert set(POINTS) <= set(log.read_text().split())


RANDOM_ROUNDS = int(os.environ.get("DURABLY_RANDOM_ROUNDS", "30"))
_landed: list[int] = []


def chaos(tmp_path: Path, seed: int) -> int:
    verdict, landed = run_chaos(tmp_path, seed)
    report = os.environ.get("DURABLY_CHAOS_REPORT")
    if report:  # one line per round, for the tier's figures
        with open(report, "a") as f:
            f.write(f"{seed} {landed} {len(verdict.runs)} {int(verdict.ok)} {verdict.duplicated_effects}\n")
    assert verdict.ok, (
        f"chaos seed {seed} failed: reproduce with run_chaos(dir, {seed})",
        verdict.counts(),
        verdict.problems[:5],
    )
    return landed


@pytest.mark.parametrize("seed", range(RANDOM_ROUNDS))
def test_random_sigkill(tmp_path: Path, seed: int) -> None:
    _landed.append(chaos(tmp_path, seed))
    if len(_landed) == RANDOM_ROUNDS and RANDOM_ROUNDS >= 30:
        assert sum(_landed) >= 200, f"only {sum(_landed)} kills landed"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 2450))
def test_random_sigkill_full_tier(tmp_path: Path, seed: int) -> None:
    chaos(tmp_path, seed)


def test_checker_catches_forged_failures(tmp_path: Path) -> None:
    """The checker must be able to fail: feed it forged ledger lines."""
    verdict = run_case(tmp_path, ["workflow.before_complete:2"])
    _assert_clean(verdict)
    crashed, final = verdict.runs[0], verdict.runs[-1]
    wid, pos = sorted(crashed.recorded)[0]
    ledger = tmp_path / "ledger.txt"
    with ledger.open("a") as f:
        f.write(format_record("E", wid, pos, -1, final.pid))  # re-ran after recorded, on a wrong input
        f.write(format_record("A", wid, pos, -7, final.pid))  # an acknowledged value the journal lacks
        f.write(format_record("E", wid, pos, -1, final.pid)[:-6])  # torn by a kill: ignored
    fresh = type(verdict)(runs=verdict.runs)
    check(fresh, tmp_path / "crash.db", ledger, 4)
    assert fresh.rerun_recorded == 1 and fresh.speculative == 1 and fresh.acked_lost == 1
    assert fresh.unjustified_duplicates == 1 and not fresh.ok
