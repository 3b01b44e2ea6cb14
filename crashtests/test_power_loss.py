"""Power loss and disk faults through the VFS shim (crashtests/vfs.py).

Quick tier: 5 seeds of the power-loss sweep at synchronous=full, the two
negative controls, and the disk-fault sweeps. ``--runslow`` (or
``DURABLY_POWER_SEEDS``) widens the seeds for the full tier.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from .harness import raw_power_loss, run_case, sweep_power_loss

SEEDS = int(os.environ.get("DURABLY_POWER_SEEDS", "5"))


def _describe(results) -> str:
    return "; ".join(f"n={n}: {v.counts()} {v.problems[:2]}" for n, v in results if not v.ok)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_power_loss_full_loses_nothing_acknowledged(tmp_path: Path, seed: int) -> None:
    results = sweep_power_loss(tmp_path, seed, synchronous="full", torn=True)
    cuts = [n for n, v in results if v.runs[0].returncode == -9]
    assert len(cuts) >= 5, "the sweep must really cut the power several times"
    assert results[-1][1].runs[0].returncode == 0, "the sweep ends when the workload outruns the cut"
    assert all(v.ok for _, v in results), f"seed {seed}: {_describe(results)}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(SEEDS, SEEDS + 45))
def test_power_loss_full_tier(tmp_path: Path, seed: int) -> None:
    results = sweep_power_loss(tmp_path, seed, synchronous="full", torn=True)
    assert all(v.ok for _, v in results), f"seed {seed}: {_describe(results)}"


def test_negative_control_normal_loses_acknowledged_records(tmp_path: Path) -> None:
    """synchronous="normal" survives process crashes but not power loss: the
    harness must see acknowledged records vanish (documented in the README)."""
    results = sweep_power_loss(tmp_path, 1, synchronous="normal", torn=False)
    lost = [n for n, v in results if v.acked_lost]
    assert lost, "the harness failed to catch lost commits under synchronous=normal"
    assert all(v.tx_duplicates == 0 and v.unexpected == 0 for _, v in results)


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_negative_control_synchronous_off_is_caught(tmp_path: Path, journal: str) -> None:
    """Plain SQLite with synchronous=OFF under the same cuts: corruption or lost
    commits; with FULL never (the shim is fair)."""
    rng = random.Random(3)
    caught = {"off": 0, "full": 0}
    for sync in ("off", "full"):
        n = 1
        while True:
            r = raw_power_loss(tmp_path / f"{sync}-{n}", 3, n, sync, journal)
            if r["returncode"] == 0:
                break
            caught[sync] += r["caught"]
            n += rng.randint(5, 60)
    assert caught["off"] > 0 and caught["full"] == 0, caught


@pytest.mark.parametrize("mode,stride", [("full", 3), ("eio", 1)])
def test_disk_faults_stop_the_writer_with_typed_errors(tmp_path: Path, mode: str, stride: int) -> None:
    """SQLITE_FULL on the n-th write / EIO on the n-th fsync (Linux semantics:
    the unsynced data is gone, the next fsync succeeds): a typed error, nothing
    acknowledged lost, and the work finishes after reopening."""
    n, faults = 1, 0
    while True:
        case = tmp_path / f"{mode}{n}"
        case.mkdir()
        verdict = run_case(case, [{"DURABLY_VFS": f"{mode}:{n}:0:0"}], workflows=4, steps=3)
        assert verdict.ok, (n, verdict.counts(), verdict.problems[:3])
        first = verdict.runs[0]
        if first.returncode == 0:
            break
        assert first.returncode == 3, (n, first.returncode, first.stderr[-800:])
        (fault,) = verdict.faults
        assert fault["error"] in ("JournalStoppedError", "DiskFullError", "DiskIOError"), fault
        faults += 1
        n += stride
    assert faults >= 5
