"""A write lock held by another connection is waited out, with a warning,
not turned into errors (SQLite).

How each test failed on 8213365 (run there with DURABLY_NO_EXTENSIONS=1; the
error classes it lacked, InvalidNameError, WorkflowInterruptedError and
WorkflowParkedError, stood in by never-raised stubs so that each test could
show the old behaviour instead of an AttributeError):

* lock_held_for_10_s / lone_workflow_..._busy_timeout: BusyError after 5 s,
  JournalStoppedError for every start (and for the lone workflow).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import apsw
import pytest


def _warnings(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("durably") and r.levelno >= level]


# -- busy is transient: waited out, with a warning ------------------------------


def _busy_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """WARNINGs saying the writer waits for a lock, and for how long."""
    return [m for m in _warnings(caplog) if re.search(r"\d", m) and re.search(r"wait|busy|lock", m, re.I)]


def _hold_write_lock(path: str, seconds: float, taken: threading.Event) -> None:
    """Another connection (a sqlite3 shell, a migration) in BEGIN IMMEDIATE."""
    conn = apsw.Connection(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.timeout(90)
def test_a_write_lock_held_by_another_connection_for_10_s_is_waited_out_by_100_workflows(
    make_engine, db_path, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="durably")
    engine = make_engine()

    @engine.step()
    def add(x: int) -> int:
        return x + 1

    @engine.workflow()
    def flow(x: int) -> int:
        for _ in range(3):
            x = add(x)
        return x

    with engine:
        assert engine.run(flow, 0) == 3  # the engine works before the lock
        taken = threading.Event()
        locker = threading.Thread(target=_hold_write_lock, args=(db_path, 10.0, taken))
        locker.start()
        assert taken.wait(10)
        with ThreadPoolExecutor(max_workers=100) as pool:
            starts = [pool.submit(engine.start, flow, i, workflow_id=f"busy-{i}") for i in range(100)]
            locker.join()
            handles = [f.result(timeout=60) for f in starts]
        assert [h.result(timeout=60) for h in handles] == [i + 3 for i in range(100)]
        assert engine.list_workflows(status="ERROR") == []
        assert engine.run(flow, 10) == 13
    assert _busy_warnings(caplog), _warnings(caplog)


@pytest.mark.timeout(60)
def test_a_lone_workflow_waits_out_a_lock_held_just_past_the_busy_timeout(make_engine, db_path, caplog) -> None:
    """The lone-step commit (a sequential workflow called directly) also waits."""
    caplog.set_level(logging.WARNING, logger="durably")
    engine = make_engine()
    taken = threading.Event()
    lockers: list[threading.Thread] = []

    @engine.step()
    def tick(i: int) -> int:
        if i == 3:  # another connection takes the lock for 6 s, between our commits
            t = threading.Thread(target=_hold_write_lock, args=(db_path, 6.0, taken))
            t.start()
            lockers.append(t)
            assert taken.wait(10)
        return i

    @engine.workflow()
    def ticks(n: int) -> int:
        return sum(tick(i) for i in range(n))

    with engine:
        assert ticks(6) == 15
        lockers[0].join()
        assert engine.list_workflows(status="ERROR") == []
        assert ticks(2) == 1
    assert _busy_warnings(caplog), _warnings(caplog)
