"""The toolkit under SIGKILL: a process running messages, events, a durable
sleep, a concurrency-limited queue and a per-second cron schedule
(missed="all") is killed at seeded random moments, has its power cut (the VFS shim)
and at crash points, then restarted until it finishes. The checker: every
message delivered exactly once and in order (none lost, none duplicated,
none left), the event holds the final count, the sleep never ended before
its recorded wake-up time, the queue never ran more than its limit at once,
the schedule fired every second once (no gap, no slot twice in a process),
and every workflow ended SUCCESS exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import apsw
import pytest

from .ledger import format_record, read_ledger

WORKLOAD = Path(__file__).with_name("toolkit_workload.py")
MESSAGES, JOBS = 40, 16


def _run(
    db: Path, ledger: Path, kill_after: float | None = None, crash_at: str | None = None, vfs: str | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DURABLY_CRASH_AT", "DURABLY_VFS")}
    if crash_at:
        env["DURABLY_CRASH_AT"] = crash_at
    if vfs:
        env["DURABLY_VFS"] = vfs
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(db), str(ledger), "--messages", str(MESSAGES), "--jobs", str(JOBS)],
        env=env,
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


def _check(db: Path, ledger: Path, final: dict) -> list[str]:
    problems = []
    if final.get("consumer") != list(range(MESSAGES)):
        problems.append(f"consumer received {final.get('consumer')}")
    if final.get("producer") != MESSAGES or final.get("count-event") != MESSAGES:
        problems.append(f"producer {final.get('producer')}, count event {final.get('count-event')}")
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        if conn.execute("PRAGMA integrity_check").get != "ok":
            problems.append("integrity_check failed")
        left = conn.execute("SELECT count(*) FROM messages").get
        if left:
            problems.append(f"{left} message(s) left undelivered (a duplicate send?)")
        statuses = dict(conn.execute("SELECT workflow_id, status FROM workflows"))
        expected = {"consumer", "producer", "sleeper", *(f"job-{i}" for i in range(JOBS))}
        ticks = {w: st for w, st in statuses.items() if w.startswith("schedule:tick@")}
        others = {w: st for w, st in statuses.items() if w not in ticks}
        if set(others) != expected or set(others.values()) != {"SUCCESS"}:
            problems.append(f"workflows: {others}")
        # schedule: missed="all", so the fired slots are every second from the first to the last
        slots = sorted(datetime.fromisoformat(w.split("@", 1)[1]).timestamp() for w in ticks)
        if not slots:
            problems.append("the schedule never fired")
        elif [b - a for a, b in zip(slots, slots[1:], strict=False)] != [1.0] * (len(slots) - 1):
            problems.append(f"schedule slots not contiguous: {slots}")
        elif conn.execute("SELECT last_slot FROM schedules WHERE name = 'tick'").get != slots[-1]:
            problems.append("schedules.last_slot is not the last fired slot")
        pending_ticks = [w for w, st in ticks.items() if st != "SUCCESS"]
        if len(pending_ticks) > 1:  # only a slot fired just before the final close may be unfinished
            problems.append(f"unfinished schedule workflows: {pending_ticks}")
        entries = conn.execute("SELECT count(*) FROM queue_entries").get
        if entries != JOBS:
            problems.append(f"{entries} queue entries for {JOBS} jobs")
        sends = conn.execute("SELECT count(*) FROM steps WHERE workflow_id = 'producer' AND name = 'send'").get
        if sends != MESSAGES:
            problems.append(f"{sends} send steps recorded")
    finally:
        conn.close()
    tock_pids: dict[str, list[str]] = {}
    records, _torn = read_ledger(ledger)  # a torn record: its writer was killed mid-write
    for kind, *fields, pid in records:
        if kind == "T":
            tock_pids.setdefault(fields[0], []).append(pid)
        if kind == "Q" and int(fields[0]) > 2:
            problems.append(f"queue concurrency {fields[0]} > 2")
        if kind == "W" and float(fields[1]) < float(fields[0]) - 0.005:
            problems.append(f"sleep of {fields[0]} s ended after {fields[1]} s")
    for slot, pids in tock_pids.items():
        if len(set(pids)) != len(pids):  # a re-run needs a new process (the old one was killed)
            problems.append(f"slot {slot} ran twice in one process")
    return problems


@pytest.mark.parametrize("seed", range(4))
def test_toolkit_survives_random_kills(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    db, ledger = tmp_path / "toolkit.db", tmp_path / "ledger.txt"
    kills = 0
    for _ in range(5):
        run = _run(db, ledger, kill_after=rng.uniform(0.1, 0.6))
        kills += run.returncode == -signal.SIGKILL
        assert run.returncode in (0, -signal.SIGKILL), run.stderr[-2000:]
    final = _run(db, ledger)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _check(db, ledger, json.loads(final.stdout)) == []
    assert kills >= 1, "no run was killed: the schedule is too slow to test anything"


@pytest.mark.parametrize(
    "point",
    [
        "journal.after_commit:7",
        "store.before_commit:11",
        "step.after_body:3",
        "journal.batch_built:20",
        "workflow.after_complete:2",
    ],
)
def test_toolkit_survives_crash_points(tmp_path: Path, point: str) -> None:
    db, ledger = tmp_path / "toolkit.db", tmp_path / "ledger.txt"
    crashed = _run(db, ledger, crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    final = _run(db, ledger)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _check(db, ledger, json.loads(final.stdout)) == []


def test_the_checker_catches_broken_runs(tmp_path: Path) -> None:
    """Negative control: a duplicated message, an early wake-up and a queue
    over its limit, forged into a clean run's evidence, are each reported."""
    db, ledger = tmp_path / "toolkit.db", tmp_path / "ledger.txt"
    final = json.loads(_run(db, ledger).stdout)
    assert _check(db, ledger, final) == []
    forged = dict(final, consumer=[0, 0, *range(2, MESSAGES)])
    with ledger.open("a") as f:
        for rec in [
            ("Q", 3, 1),
            ("W", 0.6, 0.2, 1),
            ("T", "2027-01-01T00:00:00+00:00", 7),
            ("T", "2027-01-01T00:00:00+00:00", 7),
        ]:
            f.write(format_record(*rec))
    problems = _check(db, ledger, forged)
    assert any("consumer received" in p for p in problems)
    assert any("concurrency 3" in p for p in problems)
    assert any("ended after 0.2" in p for p in problems)
    assert any("ran twice in one process" in p for p in problems)


def _power_loss_sweep(tmp_path: Path, seed: int, cuts: int) -> int:
    """Cut the power (the VFS shim: unsynced writes rolled back, some torn) at
    seeded I/O operations, restart after each cut, finish, check."""
    rng = random.Random(seed)
    db, ledger = tmp_path / "toolkit.db", tmp_path / "ledger.txt"
    landed, n = 0, 0
    for _ in range(cuts):
        n += rng.randint(20, 400)
        run = _run(db, ledger, vfs=f"powerloss:{n}:{seed}:1")
        assert run.returncode in (0, -signal.SIGKILL), run.stderr[-2000:]
        landed += run.returncode == -signal.SIGKILL
        n = 0 if run.returncode == -signal.SIGKILL else n  # each restart counts I/O from zero
    final = _run(db, ledger)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _check(db, ledger, json.loads(final.stdout)) == []
    return landed


@pytest.mark.parametrize("seed", range(2))
def test_toolkit_survives_power_loss(tmp_path: Path, seed: int) -> None:
    assert _power_loss_sweep(tmp_path, seed, cuts=4) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 130))
def test_toolkit_power_loss_and_kills_full_tier(tmp_path: Path, seed: int) -> None:
    """Long tier: more seeds of power cuts, then of random kills, on one database."""
    _power_loss_sweep(tmp_path, seed, cuts=6)
    rng = random.Random(seed)
    db, ledger = tmp_path / "toolkit.db", tmp_path / "ledger.txt"
    for _ in range(6):
        run = _run(db, ledger, kill_after=rng.uniform(0.05, 0.8))
        assert run.returncode in (0, -signal.SIGKILL), run.stderr[-2000:]
    final = _run(db, ledger)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _check(db, ledger, json.loads(final.stdout)) == []
