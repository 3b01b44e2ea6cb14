"""Closing: a clean close never runs a step body again, a grace period
that expires is logged, and close() inside a workflow is refused
(SQLite).

How each test failed on 8213365 (run there with DURABLY_NO_EXTENSIONS=1; the
error classes it lacked, InvalidNameError, WorkflowInterruptedError and
WorkflowParkedError, stood in by never-raised stubs so that each test could
show the old behaviour instead of an AttributeError):

* clean_close / callers_event_loop_ending: the step body ran twice;
  close(timeout=...) and the grace-period test: TypeError (no such argument).
* close_inside_a_sync_workflow: close() half-closed the engine from its
  worker (RuntimeError "cannot join current thread" inside the workflow,
  NotOpenError for the caller); inside an async workflow: deadlock on the
  engine's loop (timeout; the fixture's close hung too), and on the caller's
  loop close() closed the engine under the caller (NotOpenError).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

import durably
from durably import errors


def _warnings(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("durably") and r.levelno >= level]


# -- a clean close never re-runs a step body ---------------------------------------


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


# -- close() inside a workflow ----------------------------------------------------


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
