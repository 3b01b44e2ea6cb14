"""The pre-deploy check: this release reserves before it charges (the last
one charged first, tests/released.py). Histories the last release recorded
replay against it? The Replayer says no, naming the workflow, the position
and both step names, while the last release's own code replays them all;
run from the shell, it exits 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import durably
from durably import testing
from examples.shop import flows
from examples.shop.tests import released

ROOT = Path(__file__).resolve().parents[3]


def _production(path: Path) -> Path:
    """A database as the last release left it: two orders done."""
    with durably.Engine(str(path), registry=released.reg) as engine:
        for oid in ("o-1", "o-2"):
            engine.run(released.fulfil, oid, "book", 1, 1200, workflow_id=oid)
    return path


def test_the_replayer_catches_this_releases_change(tmp_path: Path) -> None:
    db = _production(tmp_path / "prod-copy.db")
    before = db.read_bytes()

    assert testing.replay(str(db), released.reg).ok  # the code that recorded them: fine

    report = testing.replay(str(db), flows.reg)  # this release
    assert not report.ok
    assert sorted((f.workflow_id, f.position, f.recorded, f.called) for f in report.failures) == [
        ("o-1", 0, "shop.charge", "shop.reserve"),
        ("o-2", 0, "shop.charge", "shop.reserve"),
    ]
    assert db.read_bytes() == before  # nothing written


def test_from_the_shell_it_exits_1(tmp_path: Path) -> None:
    db = _production(tmp_path / "prod-copy.db")
    src = Path(durably.__file__).resolve().parents[1]  # the durably under test
    env = {"PYTHONPATH": os.pathsep.join([str(src), str(ROOT)]), "PATH": "/usr/bin:/bin"}

    def replay(app: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "durably", "replay", str(db), "--app", app]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    assert replay("examples.shop.tests.released:reg").returncode == 0
    changed = replay("examples.shop.flows:reg")
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "shop.charge" in changed.stdout and "shop.reserve" in changed.stdout
