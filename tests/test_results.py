"""Waiting for results: result(timeout=) is bounded by its timeout, a
workflow parked by non-determinism gives its waiters a typed error, and
waiting on finished workflows leaves nothing behind (SQLite).

How each test failed on 8213365 (run there with DURABLY_NO_EXTENSIONS=1; the
error classes it lacked, InvalidNameError, WorkflowInterruptedError and
WorkflowParkedError, stood in by never-raised stubs so that each test could
show the old behaviour instead of an AttributeError):

* result_with_a_timeout (longer workflow; durable sleep): the caller ran the
  queued workflow inline, result(timeout=0.1) returned after 1 s / 5 s
  ("DID NOT RAISE ResultTimeoutError").
* parked_by_non_determinism: ResultTimeoutError after 5 s, nothing logged.
* result_on_finished_workflows: 20,000 entries left in the waiters' table.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import Any

import pytest

import durably
from durably import Status, errors


def _warnings(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("durably") and r.levelno >= level]


def _completions(engine: durably.Engine) -> dict[str, Any]:
    """The engine's table of waiters per workflow id (its runner's)."""
    return engine._runner.completions


# -- result(timeout=t) is bounded by t ----------------------------------------------


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


# -- a parked workflow tells its waiters ------------------------------------------


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


# -- memory ----------------------------------------------------------------------


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
