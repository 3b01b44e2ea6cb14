"""Workflow management as DBOS users expect it, in durably's shape: fork and
restart, introspection and listing, poison workflows, step attempts, retry
predicates and timeouts, cancel without children; plus the replay-adjacent
fixes (a cancelled queue entry frees its slot at once, get_event waits for a
workflow not started yet, a total order of listings)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import durably
from durably import Status, errors

SRC = str(Path(durably.__file__).resolve().parents[1])


# -- fork and restart ------------------------------------------------------------------


def test_fork_keeps_the_first_steps_and_runs_the_rest_again_leaving_the_original_untouched(make_engine) -> None:
    engine = make_engine()
    ran: list[str] = []
    version = {"v": 1}

    @engine.step(name="a")
    def a(x: int) -> int:
        ran.append("a")
        return x + 1

    @engine.step(name="b")
    def b(x: int) -> int:
        ran.append(f"b{version['v']}")
        return x * 10 * version["v"]

    @engine.workflow(name="flow")
    def flow(x: int) -> int:
        return b(a(x))

    with engine:
        assert engine.run(flow, 1, workflow_id="orig") == 20
        version["v"] = 2  # "the current code" changed step b
        ran.clear()
        h = engine.fork("orig", 1)  # keep step 0 (a), run b again
        assert h.workflow_id != "orig"
        assert h.result(timeout=10) == 40
        assert ran == ["b2"]
        assert engine.handle("orig").result() == 20  # untouched
        assert [s.name for s in engine.steps("orig")] == ["a", "b"]
        ran.clear()
        again = engine.fork("orig", 0, new_workflow_id="restarted")  # from the beginning
        assert again.workflow_id == "restarted" and again.result(timeout=10) == 40
        assert ran == ["a", "b2"]
        with pytest.raises(errors.WorkflowConflictError):
            engine.fork("orig", 0, new_workflow_id="restarted")
        with pytest.raises(errors.WorkflowNotFoundError):
            engine.fork("nope", 0)
        with pytest.raises(errors.UsageError):
            engine.fork("orig", -1)


def test_fork_of_an_async_workflow_with_branches_replays_the_kept_steps(make_engine) -> None:
    engine = make_engine()
    ran: list[int] = []

    @engine.step(name="s")
    async def s(x: int) -> int:
        ran.append(x)
        await asyncio.sleep(0.001 * (3 - x))
        return x

    @engine.workflow(name="fan")
    async def fan() -> int:
        parts = await asyncio.gather(*[s(i) for i in range(3)])
        return sum(parts) + await s(10)

    with engine:
        assert engine.run(fan, workflow_id="f") == 13
        ran.clear()
        assert engine.fork("f", 3).result(timeout=10) == 13
        assert ran == [10]


# -- introspection -------------------------------------------------------------------


def test_workflow_info_carries_input_output_error_queue_and_recovery_data(make_engine) -> None:
    engine = make_engine()
    q = engine.queue("jobs", concurrency=1)

    @engine.workflow(name="add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    @engine.workflow(name="bad")
    def bad() -> None:
        raise ValueError("nope")

    with engine:
        ok = engine.start(add, 1, y=2, workflow_id="ok", timeout=3600)
        ok.result(timeout=10)
        info = ok.info()
        assert info.input == ((1,), {"y": 2}) and info.output == 3 and info.error is None
        assert info.deadline is not None and info.recovery_attempts == 0
        assert info.executor == engine.executor_id
        failed = engine.start(bad, workflow_id="bad")
        with pytest.raises(errors.WorkflowFailedError):
            failed.result(timeout=10)
        assert isinstance(failed.info().error, ValueError)
        queued = q.enqueue(add, 5, priority=3, workflow_id="queued")
        queued.result(timeout=10)
        qi = queued.info()
        assert (qi.queue, qi.priority) == ("jobs", 3) and qi.dequeued_at >= qi.created_at


class _RacyClock(durably.SystemClock):
    """The system clock, read slowly: the test's thread is held up between
    reading it for an entry (its not_before) and the entry's creation; the
    queue dispatcher waits a moment, reads it, then is held up before its
    claim runs (as when the writer is busy)."""

    def __init__(self, caller: threading.Thread) -> None:
        super().__init__()
        self.caller = caller

    def now(self) -> float:
        me = threading.current_thread()
        if me.name == "durably-queues":
            time.sleep(0.05)
            t = time.time()
            time.sleep(0.2)
            return t
        t = time.time()
        if me is self.caller:
            time.sleep(0.1)
        return t


def test_a_queued_workflow_never_leaves_its_queue_before_it_entered_it(make_engine) -> None:
    """created_at <= dequeued_at <= updated_at for an entry enqueued while a
    dispatcher round is under way. (On 785dce3 the round read the clock
    between the entry's not_before and its creation, and recorded that as
    its start: the README's test once saw dequeued_at 2 ms before created_at
    on PostgreSQL.)"""
    engine = make_engine(clock=_RacyClock(threading.current_thread()))
    q = engine.queue("jobs")

    @engine.workflow(name="add")
    def add(x: int) -> int:
        return x + 1

    with engine:
        first = q.enqueue(add, 1, workflow_id="first")  # kicks a dispatcher round
        second = q.enqueue(add, 2, workflow_id="second")  # created while that round is under way
        assert (first.result(timeout=10), second.result(timeout=10)) == (2, 3)
        for info in (first.info(), second.info()):
            assert info.dequeued_at is not None and info.created_at <= info.dequeued_at <= info.updated_at, info


def test_list_workflows_filters_pages_and_sorts_in_a_total_order(make_engine) -> None:
    engine = make_engine()
    q = engine.queue("q")

    @engine.workflow(name="w")
    def w(i: int) -> int:
        return i

    @engine.workflow(name="parent")
    def parent() -> int:
        return w(1) + w(2)

    with engine:
        hs = [engine.start(w, i, workflow_id=f"job-{i:02d}") for i in range(20)]
        for h in hs:
            h.result(timeout=10)
        # created within the same millisecond or not, listing order is creation order
        listed = [i.workflow_id for i in engine.list_workflows(name="w", limit=None, newest_first=False)]
        assert listed == [f"job-{i:02d}" for i in range(20)]
        newest = [i.workflow_id for i in engine.list_workflows(name=w, limit=5)]
        assert newest == [f"job-{i:02d}" for i in range(19, 14, -1)]
        page = engine.list_workflows(name="w", limit=5, offset=5, newest_first=False)
        assert [i.workflow_id for i in page] == [f"job-{i:02d}" for i in range(5, 10)]
        assert [i.workflow_id for i in engine.list_workflows(id_prefix="job-1", limit=None, newest_first=False)] == [
            f"job-{i}" for i in range(10, 20)
        ]
        mid = engine.handle("job-10").info().created_at
        assert all(i.created_at >= mid for i in engine.list_workflows(start_time=mid, name="w", limit=None))
        assert all(i.created_at < mid for i in engine.list_workflows(end_time=mid, name="w", limit=None))
        engine.run(parent, workflow_id="p")
        assert sorted(i.workflow_id for i in engine.list_workflows(parent_id="p")) == ["p/0", "p/1"]
        q.enqueue(w, 7, workflow_id="in-q").result(timeout=10)
        assert [i.workflow_id for i in engine.list_workflows(queue="q")] == ["in-q"]
        assert engine.list_workflows(status="SUCCESS", limit=None, id_prefix="job-") and not engine.list_workflows(
            status="ERROR"
        )
        for bad in (dict(limit=-1), dict(offset="x"), dict(status="DONE"), dict(id_prefix="a\x00")):
            with pytest.raises(errors.UsageError):
                engine.list_workflows(**bad)


@pytest.mark.parametrize(
    "bad",
    [
        dict(offset=2**63),
        dict(limit=2**63),
        dict(offset=-(2**70)),
        dict(limit=True),
        dict(offset=False),
        dict(start_time=10**400),
        dict(end_time=float("nan")),
        dict(start_time=True),
    ],
)
def test_listing_bounds_out_of_range_are_a_usage_error_on_both_backends(make_engine, bad) -> None:
    """Issue 19 item 10: on 785dce3 offset=2**63 raised a raw OverflowError
    on SQLite and ValueTooLargeError on PostgreSQL; bools passed as ints."""
    engine = make_engine()
    with engine:
        with pytest.raises(errors.UsageError, match=next(iter(bad))):
            engine.list_workflows(**bad)


def test_listing_bounds_at_the_edge_of_the_range_are_fine(make_engine) -> None:
    engine = make_engine()

    @engine.workflow(name="one")
    def one() -> int:
        return 1

    with engine:
        engine.run(one, workflow_id="w1")
        assert engine.list_workflows(offset=2**63 - 1) == []
        assert [i.workflow_id for i in engine.list_workflows(limit=2**63 - 1)] == ["w1"]
        assert [i.workflow_id for i in engine.list_workflows(start_time=-(2**70), end_time=2**70)] == ["w1"]


def test_steps_list_start_and_end_times(make_engine) -> None:
    engine = make_engine()

    @engine.step(name="slow")
    def slow() -> int:
        time.sleep(0.05)
        return 1

    @engine.workflow(name="f")
    def f() -> int:
        return slow()

    with engine:
        engine.run(f, workflow_id="t")
        (step,) = engine.steps("t")
        assert step.started_at is not None and step.recorded_at - step.started_at >= 0.04


# -- poison workflows ----------------------------------------------------------------

_POISON = textwrap.dedent("""
    import os, signal, sys
    import durably
    engine = durably.Engine(sys.argv[1])

    @engine.step(name="boom")
    def boom() -> int:
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies at every attempt

    @engine.workflow(name="poison", max_recovery_attempts=2)
    def poison() -> int:
        return boom()

    with engine:
        if sys.argv[2] == "start":
            engine.start(poison, workflow_id="p").result(timeout=30)
        else:
            import time
            time.sleep(2)
""")


def test_a_workflow_that_kills_its_process_at_every_attempt_ends_max_recovery_attempts_exceeded(
    make_engine, db_path
) -> None:
    env = dict(os.environ, PYTHONPATH=SRC)
    first = subprocess.run([sys.executable, "-c", _POISON, db_path, "start"], env=env, timeout=60)
    assert first.returncode == -signal.SIGKILL
    for _ in range(2):  # two recoveries allowed: each kills the process again
        again = subprocess.run([sys.executable, "-c", _POISON, db_path, "open"], env=env, timeout=60)
        assert again.returncode == -signal.SIGKILL
    engine = make_engine()
    ran: list[int] = []

    @engine.step(name="boom")
    def boom() -> int:
        ran.append(1)
        return 7

    @engine.workflow(name="poison", max_recovery_attempts=2)
    def poison() -> int:
        return boom()

    with engine:
        assert engine.recovery.exceeded == ["p"]
        assert ran == []
        h = engine.handle("p")
        assert h.status() is Status.MAX_RECOVERY_ATTEMPTS_EXCEEDED
        with pytest.raises(errors.MaxRecoveryAttemptsExceededError) as exc:
            h.result(timeout=5)
        assert exc.value.attempts == 3
        assert engine.list_workflows(status="MAX_RECOVERY_ATTEMPTS_EXCEEDED")[0].workflow_id == "p"
        assert engine.resume("p").result(timeout=10) == 7  # resume takes it out
        assert h.info().recovery_attempts == 0


# -- steps: attempts, retry predicates, timeouts -------------------------------------------


def test_the_attempt_number_is_visible_in_a_step_and_retry_predicates_choose(make_engine) -> None:
    engine = make_engine()
    seen: list[int | None] = []

    @engine.step(retries=3, initial_delay=0.0)
    def flaky() -> int:
        seen.append(engine.step_attempt)
        if len(seen) < 3:
            raise ConnectionError("again")
        return len(seen)

    @engine.step(retries=5, initial_delay=0.0, retry_on=ConnectionError)
    def only_connection(kind: str) -> None:
        seen.append(engine.step_attempt)
        raise (ConnectionError if kind == "conn" else ValueError)(kind)

    @engine.step(retries=5, initial_delay=0.0, should_retry=lambda exc: "retry" in str(exc))
    def predicate() -> None:
        seen.append(engine.step_attempt)
        raise RuntimeError("give up" if len(seen) > 1 else "retry me")

    @engine.workflow()
    def flow() -> list[Any]:
        out: list[Any] = [flaky()]
        for kind in ("value", "conn"):
            try:
                only_connection(kind)
            except Exception as exc:
                out.append((type(exc).__name__, len(seen)))
        return out

    @engine.workflow()
    def flow2() -> str:
        try:
            predicate()
        except RuntimeError as exc:
            return str(exc)
        return "no"

    with engine:
        assert engine.step_attempt is None
        assert engine.run(flow) == [3, ["ValueError", 4], ["ConnectionError", 10]]  # JSON result
        assert seen[:3] == [0, 1, 2] and seen[3] == 0 and seen[4:10] == [0, 1, 2, 3, 4, 5]
        seen.clear()
        assert engine.run(flow2) == "give up" and seen == [0, 1]


def test_an_async_step_timeout_cancels_the_body_and_its_retry_policy_applies(make_engine) -> None:
    engine = make_engine()
    attempts: list[int] = []
    cancelled: list[int] = []

    @engine.step(timeout=0.05, retries=2, initial_delay=0.0)
    async def slow() -> int:
        attempts.append(engine.step_attempt)
        try:
            await asyncio.sleep(0 if len(attempts) == 3 else 10)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise
        return len(attempts)

    @engine.step(timeout=0.05)
    async def never() -> None:
        await asyncio.sleep(10)

    @engine.workflow()
    async def flow() -> Any:
        first = await slow()
        try:
            await never()
        except errors.StepTimeoutError as exc:
            return first, exc.timeout
        return first, None

    with engine:
        assert engine.run(flow) == [3, 0.05]  # JSON result
        assert attempts == [0, 1, 2] and len(cancelled) == 2
    with pytest.raises(errors.UsageError, match="async"):

        @engine.step(timeout=1)
        def sync_step() -> None:
            pass


def test_cancel_without_children_leaves_the_children_running(make_engine) -> None:
    engine = make_engine()
    gate = threading.Event()

    @engine.step()
    def wait() -> int:
        gate.wait(10)
        return 1

    @engine.workflow(name="kid")
    def kid() -> int:
        return wait()

    @engine.workflow(name="mom")
    def mom() -> int:
        h = engine.start(kid)
        return engine.recv("never", timeout=60) or h.result()

    with engine:
        m = engine.start(mom, workflow_id="m")
        deadline = time.monotonic() + 10
        while not engine.list_workflows(parent_id="m"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        engine.cancel("m", children=False)
        assert m.status() is Status.CANCELLED
        assert engine.handle("m/0").status() is Status.PENDING
        gate.set()
        assert engine.handle("m/0").result(timeout=10) == 1


# -- queue slot, get_event, order ---------------------------------------------------------


def test_cancelling_a_running_queued_workflow_frees_its_slot_when_the_cancel_commits(make_engine) -> None:
    engine = make_engine()
    q = engine.queue("one", concurrency=1)
    gate = threading.Event()

    @engine.step()
    def block() -> None:
        gate.wait(30)

    @engine.workflow(name="long")
    def long() -> None:
        block()

    @engine.workflow(name="quick")
    def quick() -> str:
        return "ran"

    with engine:
        first = q.enqueue(long, workflow_id="first")
        deadline = time.monotonic() + 10
        while first.status() is not Status.PENDING:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = q.enqueue(quick, workflow_id="second")
        engine.cancel("first")  # its body still blocks
        t0 = time.monotonic()
        assert second.result(timeout=10) == "ran"
        assert time.monotonic() - t0 < 5  # not after the first body's 30 s
        gate.set()


def test_get_event_from_outside_waits_for_a_workflow_that_does_not_exist_yet(make_engine) -> None:
    engine = make_engine()

    @engine.workflow(name="pub")
    def pub() -> None:
        engine.set_event("ready", 42)

    with engine:
        assert engine.get_event("later", "ready", timeout=0.05) is None  # no error: not started yet
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(engine.get_event("later", "ready", timeout=10)))
        reader.start()
        time.sleep(0.1)
        engine.start(pub, workflow_id="later")
        reader.join(10)
        assert got == [42]
