"""Power loss and disk faults through the VFS shim (crashtests/vfs.py).

Quick tier: 5 seeds of the power-loss sweep at synchronous=full, the two
negative controls, the disk-fault sweeps, and 1 seed of the sweep that
then folds the WAL in with another program or loses it.
``--runslow`` (or ``DURABLY_POWER_SEEDS``, ``DURABLY_FOLD_SEEDS``) widens
the seeds for the full tier.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import apsw
import pytest

import durably
from durably import errors
from durably.store._checkpoint import CHECKPOINTED

from .harness import raw_power_loss, run_case, run_workload, sweep_power_loss

SEEDS = int(os.environ.get("DURABLY_POWER_SEEDS", "5"))
FOLD_SEEDS = int(os.environ.get("DURABLY_FOLD_SEEDS", "1"))


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


def _journal(db: Path, main_file_only: bool) -> tuple[set[tuple[str, int]], object]:
    """Recorded (workflow, position) pairs and workflows as (id, -1), and the
    crash mark: with the WAL, or in the main file alone (``immutable``: its
    WAL ignored)."""
    if main_file_only:
        conn = apsw.Connection(
            f"file:{quote(os.path.abspath(db))}?immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        )
    else:
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        if not conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'steps'").get:
            return set(), None
        rows = {(w, p) for w, p in conn.execute("SELECT workflow_id, position FROM steps")} | {
            (w, -1) for (w,) in conn.execute("SELECT workflow_id FROM workflows")
        }
        return rows, conn.execute("SELECT value FROM engine_state WHERE key = 'open'").get
    except apsw.CorruptError:  # a main file alone, its copy cut short by the power loss: the WAL repairs it
        return set(), None
    finally:
        conn.close()


def _opens(db: Path) -> bool:
    """Whether an engine opens ``db`` (a throwaway copy: recovery parks its
    workflows, their functions are not registered here)."""
    engine = durably.Engine(str(db))
    try:
        engine.open()
    except errors.StorageError:  # WalMissingError; a torn main file alone may fail in other typed ways
        return False
    engine.close()
    return True


_FOLD = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM steps'); c.close()"


@pytest.mark.parametrize("seed", range(FOLD_SEEDS))
def test_power_loss_then_the_wal_folded_in_by_sqlite3_or_lost(tmp_path: Path, seed: int) -> None:
    _fold_or_lose_after_each_cut(tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(FOLD_SEEDS, FOLD_SEEDS + 9))
def test_power_loss_then_the_wal_folded_in_or_lost_tier(tmp_path: Path, seed: int) -> None:
    _fold_or_lose_after_each_cut(tmp_path, seed)


def _fold_or_lose_after_each_cut(tmp_path: Path, seed: int) -> None:
    """After each cut (with a checkpoint every few WAL frames, so cuts land in
    them): the file copied without its -wal is refused whenever the main
    file alone lacks something the WAL held; then another program reads the
    file (Python's sqlite3 in its own process: it folds the WAL in and
    deletes it) and the next open goes on, nothing lost. The one exception,
    a refusal though nothing is missing, is a cut inside a checkpoint (its
    mark committed, the copy not yet followed by the WAL's mark): the
    operator accepts it with the CLI and the work finishes, nothing lost."""
    rng = random.Random(seed)
    env = {"DURABLY_CHECKPOINT_FRAMES": "8"}
    n, cuts, refused, folded, in_checkpoint = rng.randint(1, 20), 0, 0, 0, 0
    while True:
        case = tmp_path / f"n{n}"
        case.mkdir()
        db = case / "crash.db"
        first = run_workload(
            db,
            case / "ledger.txt",
            None,
            workflows=4,
            steps=3,
            extra_env={**env, "DURABLY_VFS": f"powerloss:{n}:{seed}:1"},
        )
        if first.returncode == 0:
            break
        assert first.returncode == -9, first.stderr[-2000:]
        cuts += 1
        runs = [first]
        wal = Path(str(db) + "-wal")
        if db.exists() and wal.exists() and wal.stat().st_size:
            (with_wal, last_mark), (main_only, _) = _journal(db, False), _journal(db, True)
            missing = with_wal - main_only
            lost = case / "lost"
            lost.mkdir()
            shutil.copyfile(db, lost / "crash.db")  # no apsw connection of this process is open on it
            if _opens(lost / "crash.db"):
                assert not missing, f"n={n}: opened without its -wal, missing {sorted(missing)[:5]}"
            else:
                refused += 1
            fold = subprocess.run([sys.executable, "-c", _FOLD, str(db)], capture_output=True, text=True, timeout=60)
            assert fold.returncode == 0, fold.stderr
            assert not wal.exists()
            assert _journal(db, True)[0] == with_wal  # the fold kept everything
            probe = run_workload(db, case / "ledger.txt", None, workflows=4, steps=3, extra_env=env)
            runs.append(probe)
            if probe.returncode == 0:
                folded += 1
            else:
                assert probe.returncode == 3 and "WalMissingError" in probe.stdout, probe.stderr[-2000:]
                assert last_mark == CHECKPOINTED, f"n={n}: refused after the fold, mark {last_mark}"
                in_checkpoint += 1
                accept = subprocess.run(
                    [sys.executable, "-m", "durably", "accept-wal-loss", str(db)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert accept.returncode == 0, accept.stderr
        verdict = run_case(case, [], prior_runs=runs, workflows=4, steps=3, extra_env=env)
        assert verdict.ok, f"n={n}: {verdict.counts()} {verdict.problems[:3]}"
        n += rng.randint(1, 20)
    assert cuts >= 5 and refused >= 3 and folded >= 3, (cuts, refused, folded, in_checkpoint)
