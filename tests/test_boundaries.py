"""The engine's boundaries (issue 9): fail the record, never the engine.

An error that belongs to one call or record fails that call alone; a busy
lock is waited out; Ctrl-C, a refused open, a clean close and a result()
with a timeout each behave as documented, with no writer stop, false alarm,
silent re-run, hang or leak.

How each test failed on 8213365 (run there with DURABLY_NO_EXTENSIONS=1; the
error classes it lacked, InvalidNameError, WorkflowInterruptedError and
WorkflowParkedError, stood in by never-raised stubs so that each test could
show the old behaviour instead of an AttributeError):

* surrogate_or_nul_in_a_name (15 calls x 2 values): a surrogate reached the
  batch and UnicodeEncodeError stopped the writer, so the call raised
  JournalStoppedError (workflow id, enqueue id, dedup key, topic, recv topic,
  set_event key, send id); or it raised a raw UnicodeEncodeError from a read
  (handle, cancel, resume, steps and get_event ids, get_event key); or the
  call returned (queue name; schedule name, whose thread then died with
  UnicodeEncodeError). NUL was accepted everywhere: "DID NOT RAISE", or
  WorkflowNotFoundError for the ids of existing-workflow calls.
* lock_held_for_10_s / lone_workflow_..._busy_timeout: BusyError after 5 s,
  JournalStoppedError for every start (and for the lone workflow).
* ctrl_c (6 delays): the child died with JournalStoppedError (KeyboardInterrupt
  inside the lone-step commit stopped the writer): 11 of 12 over two runs;
  the twelfth child hung after the SIGINT (killed after 30 s).
* writer_failure_then_close: the reopen raised WalMissingError.
* refused_open_stays_refused: the second open did not raise (it found the
  empty -wal the first refusal left behind).
* clean_close / callers_event_loop_ending: the step body ran twice;
  close(timeout=...) and the grace-period test: TypeError (no such argument).
* result_with_a_timeout (longer workflow; durable sleep): the caller ran the
  queued workflow inline, result(timeout=0.1) returned after 1 s / 5 s
  ("DID NOT RAISE ResultTimeoutError").
* virtual_clock_finish: hung (timeout).
* keyboard_interrupt_or_system_exit in a started workflow: ResultTimeoutError
  after 5 s; called directly: hung (timeout), for KeyboardInterrupt and
  sys.exit alike.
* close_inside_a_sync_workflow: close() half-closed the engine from its
  worker (RuntimeError "cannot join current thread" inside the workflow,
  NotOpenError for the caller); inside an async workflow: deadlock on the
  engine's loop (timeout; the fixture's close hung too), and on the caller's
  loop close() closed the engine under the caller (NotOpenError).
* parked_by_non_determinism: ResultTimeoutError after 5 s, nothing logged.
* result_on_finished_workflows: 20,000 entries left in the waiters' table.
* opening_a_database: pending_journals() ran at open and read all 20 journals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import apsw
import pytest

import durably
from durably import Status, errors

from .faultvfs import FaultVFS

# Child processes import the durably under test (the one this process imported).
SRC = str(Path(durably.__file__).resolve().parents[1])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _warnings(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("durably") and r.levelno >= level]


def _completions(engine: durably.Engine) -> dict[str, Any]:
    """The engine's table of waiters per workflow id (its runner's)."""
    return engine._runner.completions


# -- 1. a bad name fails its call, not the writer -------------------------------------

SURROGATE = "caf\udce9.csv"  # what os.listdir returns for a non-UTF-8 file name
NUL = "a\x00b"

# Each case makes one call that takes a name or an id, with `bad` in it; `c`
# (a _NameCase) has the engine, a running workflow's id, a queue and workflows.
NAME_CASES = {
    "workflow_id": lambda c, bad: c.engine.start(c.noop, workflow_id=bad),
    "enqueue_workflow_id": lambda c, bad: c.queue.enqueue(c.noop, workflow_id=bad),
    "message_topic": lambda c, bad: c.engine.send(c.running, "m", topic=bad),
    "recv_topic_in_a_workflow": lambda c, bad: c.run_inside(lambda: c.engine.recv(bad, timeout=0.01)),
    "event_key_set_in_a_workflow": lambda c, bad: c.run_inside(lambda: c.engine.set_event(bad, 1)),
    "event_key_get": lambda c, bad: c.engine.get_event(c.running, bad, timeout=0.01),
    "queue_name": lambda c, bad: c.engine.queue(bad, concurrency=1),
    "dedup_key": lambda c, bad: c.queue.enqueue(c.noop, dedup_key=bad),
    "schedule_name": lambda c, bad: c.engine.schedule(bad, "* * * * *", c.on_slot),
    "handle_id": lambda c, bad: c.engine.handle(bad),
    "cancel_id": lambda c, bad: c.engine.cancel(bad),
    "resume_id": lambda c, bad: c.engine.resume(bad),
    "steps_id": lambda c, bad: c.engine.steps(bad),
    "get_event_id": lambda c, bad: c.engine.get_event(bad, "k", timeout=0.01),
    "send_id": lambda c, bad: c.engine.send(bad, "m"),
}


class _NameCase:
    def __init__(self, engine: durably.Engine) -> None:
        self.engine = engine
        self.inside: list[BaseException] = []
        self._body: Any = None

        @engine.workflow(name="noop")
        def noop() -> str:
            return "ok"

        @engine.workflow(name="on_slot")
        def on_slot(slot: Any) -> None:
            return None

        @engine.workflow(name="waiter")
        def waiter() -> str:
            engine.set_event("ready", True)
            return engine.recv("go", timeout=60)

        @engine.workflow(name="inside")
        def inside() -> str:
            try:
                self._body()
            except Exception as exc:  # recorded for the test to inspect
                self.inside.append(exc)
            return "ok"

        self.noop, self.on_slot, self.waiter, self._inside = noop, on_slot, waiter, inside
        self.queue = engine.queue("work", concurrency=4)
        self.running = ""

    def run_inside(self, body: Any) -> None:
        """Make the call inside a workflow; re-raise what it raised there."""
        self._body = body
        assert self.engine.run(self._inside) == "ok"
        if self.inside:
            raise self.inside[-1]


def _row_counts(engine: durably.Engine) -> dict[str, int]:
    return {
        table: engine._store.query(f"SELECT count(*) FROM {table}")[0][0]
        for table in ("workflows", "messages", "events", "queue_entries", "schedules")
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [SURROGATE, NUL], ids=["surrogate", "nul"])
@pytest.mark.parametrize("case", list(NAME_CASES))
def test_a_surrogate_or_nul_in_a_name_raises_invalid_name_error_and_the_writer_keeps_going(
    make_engine, case: str, bad: str
) -> None:
    engine = make_engine()
    c = _NameCase(engine)
    with engine:
        handles = [engine.start(c.waiter, workflow_id=f"waiter-{i}") for i in range(20)]
        for h in handles:  # all 20 are inside their recv now
            assert engine.get_event(h.workflow_id, "ready", timeout=10) is True
        c.running = handles[0].workflow_id
        before = _row_counts(engine)
        with pytest.raises(durably.InvalidNameError) as info:
            NAME_CASES[case](c, bad)
        assert isinstance(info.value, errors.UsageError)
        # nothing was written (but the workflow the call was made in, if any)
        after = _row_counts(engine)
        after["workflows"] -= 1 if "in_a_workflow" in case else 0
        assert after == before
        with pytest.raises(durably.InvalidNameError):
            engine.handle(SURROGATE)
        # the writer did not stop: every unrelated workflow still finishes
        for h in handles:
            engine.send(h.workflow_id, "done", topic="go")
        assert [h.result(timeout=10) for h in handles] == ["done"] * 20
        assert all(h.status() is Status.SUCCESS for h in handles)
        assert engine.run(c.noop) == "ok"


# -- 2. busy is transient: waited out, with a warning ------------------------------


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


# -- 3. Ctrl-C in a workflow called directly -----------------------------------------

_CTRL_C_CHILD = """
import os, sys
import durably

path, stop = sys.argv[1], sys.argv[2]
engine = durably.Engine(path)

@engine.step(name="more")
def more(i: int) -> bool:
    if i == 20:
        print("ready", flush=True)
    return not os.path.exists(stop)

@engine.workflow(name="ctrl_c")
def ctrl_c() -> int:
    i = 0
    while more(i):
        i += 1
    return i

with engine:
    ctrl_c()  # runs until the stop file exists: here, until Ctrl-C
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("delay", [0.3, 0.35, 0.4, 0.45, 0.5, 0.55])
def test_ctrl_c_in_a_workflow_called_directly_raises_keyboard_interrupt_and_the_next_open_resumes_it(
    make_engine, db_path, tmp_path, delay: float
) -> None:
    stop = str(tmp_path / "stop")
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_CHILD, db_path, stop],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr, stderr
    assert "JournalStoppedError" not in stderr, stderr
    Path(stop).touch()
    engine = make_engine()

    @engine.step(name="more")
    def more(i: int) -> bool:
        return not os.path.exists(stop)

    @engine.workflow(name="ctrl_c")
    def ctrl_c() -> int:
        i = 0
        while more(i):
            i += 1
        return i

    with engine:  # no WalMissingError, no refusal: the file is fine
        (wid,) = [w.workflow_id for w in engine.list_workflows()]
        result = engine.handle(wid).result(timeout=30)
        steps = engine.steps(wid)  # (read after the end: the resumed run records its last step itself)
        assert result > 20 and result == len(steps) - 1
        assert [s.output for s in steps] == ["true"] * result + ["false"]  # no step lost or run twice
        assert engine.handle(wid).status() is Status.SUCCESS


# -- 4./5. the crash mark and the missing-WAL guard ----------------------------------


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


# -- 6. a clean close never re-runs a step body ---------------------------------------


def _register_slow_async_step(engine: durably.Engine, started: threading.Event, entries: list[str]) -> Any:
    @engine.step(name="charge")
    async def charge(order: str) -> str:
        entries.append(order)
        started.set()
        await asyncio.sleep(0.5)
        return f"charged {order}"

    @engine.workflow(name="checkout_async")
    async def checkout_async(order: str) -> str:
        return await charge(order)

    return checkout_async


@pytest.mark.timeout(60)
@pytest.mark.parametrize("grace", [None, 5.0], ids=["close", "close_with_timeout"])
def test_a_clean_close_during_an_async_step_body_does_not_run_the_body_again(make_engine, grace) -> None:
    entries: list[str] = []
    started = threading.Event()
    engine = make_engine()
    checkout_async = _register_slow_async_step(engine, started, entries)
    engine.open()
    h = engine.start(checkout_async, "o-1", workflow_id="o-1")
    assert started.wait(10)
    if grace is None:
        engine.close()
    else:
        engine.close(timeout=grace)
    again = make_engine()
    _register_slow_async_step(again, threading.Event(), entries)
    with again:
        assert again.handle(h.workflow_id).result(timeout=10) == "charged o-1"
    assert entries == ["o-1"]


@pytest.mark.timeout(60)
def test_the_callers_event_loop_ending_during_an_async_step_body_does_not_run_the_body_again(make_engine) -> None:
    entries: list[str] = []
    started = threading.Event()
    engine = make_engine()
    checkout_async = _register_slow_async_step(engine, started, entries)

    async def main() -> durably.WorkflowHandle:
        h = await engine.start_async(checkout_async, "o-2", workflow_id="o-2")
        while not started.is_set():
            await asyncio.sleep(0.01)
        return h  # the loop ends while the body sleeps

    with engine:
        h = asyncio.run(main())
        assert h.result(timeout=10) == "charged o-2"
    assert entries == ["o-2"]


@pytest.mark.timeout(60)
def test_a_close_whose_grace_period_expires_logs_the_interrupted_workflow_at_error(make_engine, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="durably")
    started = threading.Event()

    def register(engine: durably.Engine, seconds: float) -> Any:
        @engine.step(name="slow")
        async def slow() -> int:
            started.set()
            await asyncio.sleep(seconds)
            return 1

        @engine.workflow(name="slow_flow")
        async def slow_flow() -> int:
            return await slow()

        return slow_flow

    engine = make_engine()
    slow_flow = register(engine, 3.0)
    engine.open()
    engine.start(slow_flow, workflow_id="graceless")
    assert started.wait(10)
    engine.close(timeout=0.2)
    assert any("graceless" in m for m in _warnings(caplog, logging.ERROR)), _warnings(caplog)
    again = make_engine()
    register(again, 0.0)
    with again:  # it stayed PENDING and resumes
        assert again.handle("graceless").result(timeout=10) == 1


# -- 7. result(timeout=t) is bounded by t ----------------------------------------------


def _occupy_every_worker(engine: durably.Engine, workers: int, gate: threading.Event) -> list[durably.WorkflowHandle]:
    """Start `workers` workflows that hold a worker each until `gate` is set,
    so the next sync workflow started stays queued."""
    running: list[int] = []

    @engine.workflow(name="blocker")
    def blocker() -> str:
        running.append(1)
        gate.wait(30)
        return "unblocked"

    handles = [engine.start(blocker) for _ in range(workers)]
    deadline = time.monotonic() + 10
    while len(running) < workers:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return handles


def _assert_result_times_out_promptly(h: durably.WorkflowHandle) -> None:
    t0 = time.monotonic()
    with pytest.raises(errors.ResultTimeoutError):
        h.result(timeout=0.1)
    assert time.monotonic() - t0 < 0.6  # 0.1 s asked for, generous slack


@pytest.mark.timeout(60)
def test_result_with_a_timeout_does_not_wait_for_a_longer_workflow(make_engine) -> None:
    engine = make_engine(workers=10)
    gate = threading.Event()

    @engine.workflow()
    def one_second() -> str:
        time.sleep(1.0)
        return "done"

    with engine:
        running = []
        for _ in range(10):
            running.append(engine.start(one_second))  # picked up by the pool (or not yet)
            _assert_result_times_out_promptly(running[-1])
        assert [h.result(timeout=30) for h in running] == ["done"] * 10
        blockers = _occupy_every_worker(engine, 10, gate)
        try:
            queued = [engine.start(one_second) for _ in range(10)]  # waiting for a worker
            for h in queued:
                _assert_result_times_out_promptly(h)
        finally:
            gate.set()
        assert [h.result(timeout=30) for h in blockers] == ["unblocked"] * 10
        assert [h.result(timeout=30) for h in queued] == ["done"] * 10


@pytest.mark.timeout(60)
def test_result_with_a_timeout_does_not_wait_for_a_durable_sleep(make_engine) -> None:
    engine = make_engine(workers=1)
    gate = threading.Event()

    @engine.workflow()
    def napper() -> str:
        engine.sleep(5)
        return "rested"

    with engine:
        h = engine.start(napper)
        _assert_result_times_out_promptly(h)
        engine.cancel(h.workflow_id)  # frees the only worker
        with pytest.raises(errors.WorkflowCancelledError):
            h.result(timeout=10)
        blockers = _occupy_every_worker(engine, 1, gate)
        try:
            queued = engine.start(napper)  # waiting for the worker
            _assert_result_times_out_promptly(queued)
            assert queued.status() is Status.PENDING
        finally:
            gate.set()
        assert blockers[0].result(timeout=10) == "unblocked"


@pytest.mark.timeout(30)
def test_virtual_clock_finish_works_after_an_earlier_workflow_ran() -> None:
    """The README's virtual-time snippet, run as written."""
    emails: list[str] = []
    clock = durably.VirtualClock()
    engine = durably.Engine(":memory:", clock=clock)

    @engine.step()
    def email(user: str, text: str) -> None:
        emails.append(user)

    @engine.workflow()
    def reminder(user: str) -> None:
        sent_at = engine.now()
        engine.sleep(24 * 3600)
        email(user, f"since {sent_at:%c}")

    with engine:
        h = engine.start(reminder, "ann")
        clock.wait_for_timers(1)
        clock.advance(24 * 3600)
        h.result(timeout=5)
        clock.finish(engine.start(reminder, "bob"))
    assert emails == ["ann", "bob"]


# -- 8. KeyboardInterrupt and SystemExit in a step -----------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signal_exc", [KeyboardInterrupt, SystemExit])
def test_a_step_raising_keyboard_interrupt_or_system_exit_in_a_started_workflow_gives_waiters_a_typed_error(
    make_engine, signal_exc: type[BaseException]
) -> None:
    raising = [True]
    ran: list[int] = []

    def register(engine: durably.Engine) -> Any:
        @engine.step(name="first")
        def first() -> int:
            ran.append(1)
            return 1

        @engine.step(name="interrupted")
        def interrupted() -> int:
            if raising[0]:
                raise signal_exc()
            return 2

        @engine.workflow(name="interruptible")
        def interruptible() -> int:
            return first() + interrupted()

        return interruptible

    engine = make_engine()
    interruptible = register(engine)
    with engine:
        h = engine.start(interruptible, workflow_id="int-1")
        with pytest.raises(durably.WorkflowInterruptedError):
            h.result(timeout=5)
        assert h.status() is Status.PENDING
    raising[0] = False
    again = make_engine()
    register(again)
    with again:
        assert again.handle("int-1").result(timeout=10) == 3
    assert ran == [1]  # the recorded step did not run again


@pytest.mark.timeout(30)
def test_a_step_raising_keyboard_interrupt_in_a_workflow_called_directly_propagates_to_the_caller(make_engine) -> None:
    raising = [True]

    def register(engine: durably.Engine) -> Any:
        @engine.step(name="ask")
        def ask() -> int:
            if raising[0]:
                raise KeyboardInterrupt
            return 7

        @engine.workflow(name="direct")
        def direct() -> int:
            return ask()

        return direct

    engine = make_engine()
    direct = register(engine)
    with engine:
        with pytest.raises(KeyboardInterrupt):
            direct()
        (info,) = engine.list_workflows()
        assert info.status is Status.PENDING  # resumable, not failed
    raising[0] = False
    again = make_engine()
    register(again)
    with again:
        assert again.handle(info.workflow_id).result(timeout=10) == 7


@pytest.mark.timeout(30)
def test_sys_exit_in_a_step_of_a_workflow_called_directly_propagates_as_system_exit(make_engine) -> None:
    engine = make_engine()

    @engine.step()
    def quit_now() -> None:
        sys.exit(3)

    @engine.workflow()
    def direct() -> None:
        quit_now()

    with engine:
        with pytest.raises(SystemExit) as info:
            direct()
        assert info.value.code == 3


# -- 9. close() inside a workflow ----------------------------------------------------


@pytest.mark.timeout(30)
def test_engine_close_inside_a_sync_workflow_raises_usage_error(make_engine) -> None:
    engine = make_engine()
    seen: list[BaseException] = []

    @engine.workflow()
    def closer() -> str:
        try:
            engine.close()
        except BaseException as exc:
            seen.append(exc)
        return "still open"

    with engine:
        assert engine.run(closer) == "still open"
        assert len(seen) == 1 and isinstance(seen[0], errors.UsageError), seen
        assert engine.is_open


@pytest.mark.parametrize(
    "where",
    [
        # A deadlock on the engine's loop would also hang the fixture's close(): end the run.
        pytest.param("engine_loop", marks=pytest.mark.timeout(30, method="thread")),
        pytest.param("callers_loop", marks=pytest.mark.timeout(30)),
    ],
)
def test_engine_close_inside_an_async_workflow_raises_usage_error(make_engine, where: str) -> None:
    engine = make_engine()
    seen: list[BaseException] = []

    @engine.workflow()
    async def closer() -> str:
        try:
            engine.close()
        except BaseException as exc:
            seen.append(exc)
        return "still open"

    async def on_callers_loop() -> str:
        return await (await engine.start_async(closer)).result_async(timeout=20)

    with engine:
        if where == "engine_loop":
            assert engine.run(closer) == "still open"
        else:
            assert asyncio.run(on_callers_loop()) == "still open"
        assert len(seen) == 1 and isinstance(seen[0], errors.UsageError), seen
        assert engine.is_open


# -- 10. a parked workflow tells its waiters ------------------------------------------


@pytest.mark.timeout(60)
def test_a_workflow_parked_by_non_determinism_gives_waiters_a_typed_error_and_logs_a_warning(
    make_engine, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="durably")
    v1 = make_engine()

    @v1.step(name="step_alpha")
    def alpha() -> int:
        return 1

    @v1.workflow(name="versioned")
    def versioned_v1() -> int:
        alpha()
        return v1.recv("never", timeout=3600) or 0

    with v1:
        v1.start(versioned_v1, workflow_id="parked-wf")
        deadline = time.monotonic() + 10
        while len(v1.steps("parked-wf")) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    v2 = make_engine()  # a deploy changed the code under the running workflow

    @v2.step(name="step_beta")
    def beta() -> int:
        return 2

    @v2.workflow(name="versioned")
    def versioned_v2() -> int:
        return beta()

    with v2:
        h = v2.handle("parked-wf")
        with pytest.raises(durably.WorkflowParkedError) as info:
            h.result(timeout=5)
        assert "step_alpha" in str(info.value) and "step_beta" in str(info.value)
        assert h.status() is Status.PENDING
        assert h.info().parked
        deadline = time.monotonic() + 5
        while not [m for m in _warnings(caplog) if "parked-wf" in m]:
            assert time.monotonic() < deadline, _warnings(caplog)
            time.sleep(0.01)
        (message,) = [m for m in _warnings(caplog) if "parked-wf" in m]
        assert "step_alpha" in message and "step_beta" in message
        assert re.search(r"\b0\b", message), message  # the position


# -- 11./12. memory ----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_result_on_finished_workflows_leaves_nothing_behind(make_engine) -> None:
    engine = make_engine(":memory:")

    @engine.workflow()
    async def trivial(i: int) -> int:
        return i

    async def start_and_wait(n: int) -> list[durably.WorkflowHandle]:
        handles = list(await asyncio.gather(*(engine.start_async(trivial, i) for i in range(n))))
        assert [await h.result_async() for h in handles] == list(range(n))
        return handles

    async def read_all(handles: list[durably.WorkflowHandle]) -> list[int]:
        return [await h.result_async() for h in handles]

    with engine:
        handles = asyncio.run(start_and_wait(20_000))
        assert [h.result() for h in handles] == list(range(20_000))  # finished: read from the row
        assert asyncio.run(read_all(handles)) == list(range(20_000))
        one = handles[0].workflow_id
        for _ in range(20_000):
            assert engine.handle(one).result() == 0
        assert len(_completions(engine)) < 10


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


# -- defence in depth: an unexpected error in one record -------------------------------


def test_an_unexpected_error_applying_one_record_fails_that_record_alone(make_engine, monkeypatch) -> None:
    from durably.store import _ops

    engine = make_engine()
    real_send = _ops.OPS["send"]

    def send(conn: Any, dest: str, topic: Any, *rest: Any) -> Any:
        if topic == "boom":
            raise RuntimeError("a bug in one record's handler")
        return real_send(conn, dest, topic, *rest)

    monkeypatch.setitem(_ops.OPS, "send", send)

    @engine.step()
    def work(i: int) -> int:
        return i * 2

    @engine.workflow()
    def inbox() -> list[str]:
        return [engine.recv("ok", timeout=30) for _ in range(3)]

    with engine:
        h = engine.start(inbox)
        with pytest.raises(errors.InternalError, match="a bug in one record"):
            engine.send(h.workflow_id, "x", topic="boom")
        for i in range(3):
            engine.send(h.workflow_id, f"m{i}", topic="ok")
        assert h.result(timeout=10) == ["m0", "m1", "m2"]
        assert engine._journal.running


def test_a_background_thread_logs_a_failed_round_and_carries_on(make_engine, caplog) -> None:
    engine = make_engine()
    fired: list[Any] = []
    failures = [RuntimeError("a transient bug in a round")]

    @engine.workflow()
    def on_slot(slot: Any) -> None:
        fired.append(slot)

    with caplog.at_level(logging.ERROR, logger="durably"), engine:
        engine.schedule("every-second", "* * * * * *", on_slot)
        runner = engine._schedules.runner
        real = runner.run_round

        rounds_after: list[int] = []

        def flaky() -> Any:
            if failures:
                raise failures.pop()
            rounds_after.append(1)
            return real()

        runner.run_round = flaky  # type: ignore[method-assign]
        runner.kick()
        deadline = time.monotonic() + 10
        while len(rounds_after) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not failures and len(rounds_after) >= 2, "the schedule runner died instead of trying again"
        assert runner._thread is not None and runner._thread.is_alive()
        assert any("failed a round" in m for m in _warnings(caplog, logging.ERROR))
