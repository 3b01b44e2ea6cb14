"""Retention under SIGKILL: a client process running ``engine.gc`` in many
small batches is killed at random moments and at the commit of its n-th
batch, again and again, then run to the end. After every kill: each
workflow is there whole (every row it had before gc began) or gone whole
(no step, event, message, queue entry, send key or notice of it left); no
child went before its parent; nothing that must stay (pending workflows, a
pending parent's finished child) lost a row; the file passes
``integrity_check``. At the end, everything finished is gone and the rest
is intact. Quick tier: three seeds."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

WORKLOAD = Path(__file__).with_name("gc_workload.py")

# Per workflow: (status, parent, steps, events, messages, queue entries, send keys, notices).
_ROWS = """
SELECT w.workflow_id, w.status, w.parent_id,
  (SELECT count(*) FROM steps s WHERE s.workflow_id = w.workflow_id),
  (SELECT count(*) FROM events e WHERE e.workflow_id = w.workflow_id),
  (SELECT count(*) FROM messages m WHERE m.dest = w.workflow_id),
  (SELECT count(*) FROM queue_entries q WHERE q.workflow_id = w.workflow_id),
  (SELECT count(*) FROM send_keys k WHERE k.dest = w.workflow_id),
  (SELECT count(*) FROM notices n WHERE n.workflow_id = w.workflow_id)
FROM workflows w
"""
_ORPHANS = """
SELECT 'steps', count(*) FROM steps WHERE workflow_id NOT IN (SELECT workflow_id FROM workflows)
UNION ALL SELECT 'events', count(*) FROM events WHERE workflow_id NOT IN (SELECT workflow_id FROM workflows)
UNION ALL SELECT 'messages', count(*) FROM messages WHERE dest NOT IN (SELECT workflow_id FROM workflows)
UNION ALL SELECT 'queue', count(*) FROM queue_entries WHERE workflow_id NOT IN (SELECT workflow_id FROM workflows)
UNION ALL SELECT 'send_keys', count(*) FROM send_keys WHERE dest NOT IN (SELECT workflow_id FROM workflows)
UNION ALL SELECT 'notices', count(*) FROM notices
  WHERE workflow_id IS NOT NULL AND workflow_id NOT IN (SELECT workflow_id FROM workflows)
"""


def _run(db: Path, mode: str, kill_after: float | None = None, crash_at: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DURABLY_CRASH_AT"}
    if crash_at:
        env["DURABLY_CRASH_AT"] = crash_at
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(db), mode],
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
    return proc.returncode, out, err


def _snapshot(db: Path) -> tuple[dict[str, tuple[object, ...]], dict[str, int], bool]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(_ROWS)}
        orphans = {name: int(n) for name, n in conn.execute(_ORPHANS) if n}
        ok = conn.execute("PRAGMA integrity_check").get == "ok"
    finally:
        conn.close()
    return rows, orphans, ok


def _problems(before: dict[str, tuple[object, ...]], stay: list[str], db: Path) -> list[str]:
    now, orphans, ok = _snapshot(db)
    problems = [] if ok else ["integrity_check failed"]
    if orphans:
        problems.append(f"rows of deleted workflows left: {orphans}")
    for wid in stay:
        if now.get(wid) != before[wid]:
            problems.append(f"{wid} must stay as it was: {before[wid]} -> {now.get(wid)}")
    for wid, row in now.items():
        if wid not in before:
            problems.append(f"{wid}: a workflow nobody started")
        elif row != before[wid]:
            problems.append(f"{wid} half deleted: {before[wid]} -> {row}")
        parent = row[1]
        if parent is not None and parent in before and parent not in now and wid in stay:
            problems.append(f"{wid} stays but its parent {parent} went")
    for wid, row in before.items():
        parent = row[1]
        if wid not in now and parent is not None and parent in now:
            problems.append(f"child {wid} went before its parent {parent}")
    return problems


@pytest.mark.parametrize("seed", range(3))
def test_gc_killed_at_random_leaves_no_half_deleted_workflow(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    db = tmp_path / "gc.db"
    code, out, err = _run(db, "setup")
    assert code == 0, err[-2000:]
    stay = json.loads(out)
    assert len(stay) == 7  # 5 waiters, a holder, its finished child
    before, orphans, ok = _snapshot(db)
    assert ok and not orphans and len(before) > 900
    kills = 0
    for attempt in range(5):  # each run deletes a few batches before it dies: enough are left
        if attempt < 3:  # inside the n-th transaction, its deletes done, before its commit
            code, out, err = _run(db, "gc", crash_at=f"store.before_commit:{rng.randint(2, 12)}")
        else:  # anywhere
            code, out, err = _run(db, "gc", kill_after=rng.uniform(0.15, 0.5))
        assert code in (0, -signal.SIGKILL), err[-2000:]
        kills += code == -signal.SIGKILL
        assert _problems(before, stay, db) == []
    code, out, err = _run(db, "gc")
    assert code == 0, err[-2000:]
    assert _problems(before, stay, db) == []
    assert kills >= 3, "too few runs were killed mid-gc to test anything"
    now, _, _ = _snapshot(db)
    assert sorted(now) == stay
