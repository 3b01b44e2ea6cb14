"""SIGKILL during an online backup (engine.backup): the destination is
absent or a complete copy that opens, passes quick_check and holds every
workflow acknowledged before the backup began; the source loses nothing.
The workload backs up while a thread keeps starting workflows
(crashtests/backup_workload.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import durably
import durably.operations.backup
from durably._crash import BACKUP_POINTS

WORKLOAD = Path(__file__).with_name("backup_workload.py")
FILL = 1500  # ~6 MB: the copy takes several steps


def _run(tmp: Path, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DURABLY_CRASH_AT"}
    if crash_at:
        env["DURABLY_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, str(WORKLOAD), str(tmp / "app.db"), str(tmp / "copy.db"), str(tmp / "ledger"), str(FILL)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _ledger(tmp: Path) -> tuple[set[str], set[str]]:
    """Ids acknowledged before the backup began, and all acknowledged ids."""
    before: set[str] = set()
    every: set[str] = set()
    began = False
    for line in (tmp / "ledger").read_text().splitlines():
        if line == "began":
            began = True
        elif line.startswith("ack "):
            every.add(line[4:])
            if not began:
                before.add(line[4:])
    return before, every


def _ids(path: Path) -> set[str]:
    """Every workflow id in the database, read by an engine (quick_check first)."""
    engine = durably.Engine(str(path), client=True, check="always")
    with engine:
        return {w.workflow_id for w in engine.list_workflows(limit=None)}


@pytest.mark.parametrize("point", [f"{BACKUP_POINTS[0]}:3", *BACKUP_POINTS[1:], None])
def test_sigkill_during_backup_leaves_no_half_copy_and_loses_nothing(tmp_path: Path, point: str | None) -> None:
    run = _run(tmp_path, point)
    assert run.returncode == (-9 if point else 0), run.stderr
    before, every = _ledger(tmp_path)
    assert len(before) >= 5  # the waiters at least
    copy = tmp_path / "copy.db"
    if point in (f"{BACKUP_POINTS[0]}:3", BACKUP_POINTS[1]):
        assert not copy.exists()  # killed before the copy was put in place: no file at all
    else:
        assert copy.exists()
        assert not Path(f"{copy}-wal").exists()  # a closed database, nothing beside it
        assert before <= _ids(copy)  # complete: every workflow acknowledged before it began
    assert every <= _ids(tmp_path / "app.db")  # the source lost nothing
    if point:  # a leftover temporary copy of the killed process never stops the next backup
        again = durably.operations.backup.backup(str(tmp_path / "app.db"), str(tmp_path / "again.db"))
        assert every <= _ids(Path(again.path))
