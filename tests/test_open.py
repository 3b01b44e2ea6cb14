"""Opening a database: after a writer failure and a close, after a refused
open (it stays refused until the loss is accepted with the CLI), and
without loading the journals of every pending workflow (SQLite).

How each test failed on 8213365 (run there with DURABLY_NO_EXTENSIONS=1; the
error classes it lacked, InvalidNameError, WorkflowInterruptedError and
WorkflowParkedError, stood in by never-raised stubs so that each test could
show the old behaviour instead of an AttributeError):

* writer_failure_then_close: the reopen raised WalMissingError.
* refused_open_stays_refused: the second open did not raise (it found the
  empty -wal the first refusal left behind).
* opening_a_database: pending_journals() ran at open and read all 20 journals.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import durably
from durably import errors

from .faultvfs import FaultVFS

# Child processes import the durably under test (the one this process imported).
SRC = str(Path(durably.__file__).resolve().parents[1])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


# -- the crash mark and the missing-WAL guard ----------------------------------


@pytest.mark.timeout(60)
def test_a_writer_failure_then_close_does_not_make_the_next_open_raise_wal_missing(make_engine, db_path) -> None:
    vfs = FaultVFS("fault-boundaries")
    try:
        engine = make_engine(vfs="fault-boundaries")

        @engine.workflow()
        def flow(n: int) -> int:
            return n

        engine.open()
        assert engine.run(flow, 1, workflow_id="before") == 1
        vfs.fail_sync = True
        with pytest.raises(errors.StorageError):
            engine.run(flow, 2, workflow_id="during")
        vfs.fail_sync = False
        engine.close()
        again = make_engine()  # the default VFS
        again.workflow(name=flow.__durably_workflow__.name)(lambda n: n)
        with again:  # no false alarm: the file is intact
            assert again.handle("before").result(timeout=10) == 1
        with make_engine():  # and again after that clean close
            pass
    finally:
        vfs.unregister()


_KILLED_CHILD = """
import sys
import durably

engine = durably.Engine(sys.argv[1])

@engine.step(name="work")
def work(i: int) -> int:
    return i

@engine.workflow(name="job")
def job(i: int) -> int:
    return work(i) + work(i + 1)

with engine:
    i = 0
    while True:
        engine.run(job, i)
        i += 1
        if i == 20:
            print("ready", flush=True)
"""


@pytest.mark.timeout(60)
def test_a_refused_open_stays_refused_until_the_loss_is_accepted_with_the_cli(make_engine, db_path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, db_path], env=_child_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL mid-work: the crash mark stays set
        proc.communicate()
    os.remove(db_path + "-wal")
    with pytest.raises(errors.WalMissingError):
        make_engine().open()
    with pytest.raises(errors.WalMissingError):  # a retry (a supervisor restart) is refused too
        make_engine().open()
    accepted = subprocess.run(
        [sys.executable, "-m", "durably", "accept-wal-loss", db_path],
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert accepted.returncode == 0, accepted.stderr
    with make_engine():  # the operator accepted the loss: the file opens
        pass


@pytest.mark.timeout(60)
def test_opening_a_database_does_not_load_the_journals_of_all_pending_workflows(make_engine, monkeypatch) -> None:
    firsts: list[int] = []
    in_gate: list[int] = []
    gate = threading.Event()

    def register(engine: durably.Engine, then_wait_for_the_gate: bool) -> Any:
        @engine.step(name="first")
        def first(i: int) -> int:
            firsts.append(i)
            return i

        @engine.step(name="wait_gate")
        def wait_gate() -> int:
            in_gate.append(1)
            gate.wait(30)
            return 1

        @engine.workflow(name="pending")
        def pending(i: int) -> int:
            first(i)
            if then_wait_for_the_gate:
                return i + wait_gate()
            return engine.recv("never") or 0  # no timeout: nothing recorded at position 1

        return pending

    v1 = make_engine()
    pending = register(v1, then_wait_for_the_gate=False)
    with v1:
        for i in range(20):
            v1.start(pending, i, workflow_id=f"pending-{i}")
        deadline = time.monotonic() + 10
        while not all(len(v1.steps(f"pending-{i}")) == 1 for i in range(20)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    # 20 pending workflows with one recorded step each

    store_cls = durably.store.Store
    loads_all: list[int] = []
    if hasattr(store_cls, "pending_journals"):  # the base's one query for every pending journal
        original = store_cls.pending_journals

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            loads_all.append(1)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(store_cls, "pending_journals", counted)
    step_rows_read: list[int] = []
    query = store_cls.query

    def counting_query(self: Any, sql: str, params: Any = ()) -> Any:
        rows = query(self, sql, params)
        if re.search(r"\bsteps\b", sql) and "output" in sql:
            step_rows_read.append(len(rows))
        return rows

    monkeypatch.setattr(store_cls, "query", counting_query)

    v2 = make_engine(workers=2)
    register(v2, then_wait_for_the_gate=True)
    with v2:
        try:
            assert sorted(v2.recovery.resumed) == sorted(f"pending-{i}" for i in range(20))
            deadline = time.monotonic() + 10
            while len(in_gate) < 2:  # both workers hold a workflow; 18 wait for one
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert loads_all == []  # no query loading every pending journal at open
            assert sum(step_rows_read) <= 4, step_rows_read  # the journals of the 2 running ones (and slack)
        finally:
            gate.set()
        assert [v2.handle(f"pending-{i}").result(timeout=30) for i in range(20)] == [i + 1 for i in range(20)]
    assert sorted(firsts) == list(range(20))  # recorded steps did not run again
