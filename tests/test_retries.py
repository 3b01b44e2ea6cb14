"""Step retries: the backoff waits on the engine's clock and ends when the
workflow is cancelled, its deadline passes or the engine closes; jitter,
retry_deadline, and the WARNING logged for each retry."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import durably
from durably import errors

# Where the step runs: "<step kind>-in-<workflow kind>". A sync step awaited
# from an async workflow runs each attempt in a thread, its backoff on the
# workflow's loop; an async step called from a sync workflow runs on a loop
# of its own in the workflow's thread.
SHAPES = ["sync-in-sync", "async-in-async", "sync-in-async", "async-in-sync"]


def flaky_flow(
    engine: durably.Engine,
    shape: str,
    calls: list[int],
    succeed_at: int,
    failed: threading.Event | None = None,
    **options: Any,
) -> Callable[..., Any]:
    """A workflow of one step that fails until its body ran ``succeed_at``
    times in all; ``calls`` gets each body run's attempt number."""
    step_kind, _, flow_kind = shape.partition("-in-")

    def body() -> int:
        calls.append(engine.step_attempt)  # type: ignore[arg-type]
        if len(calls) < succeed_at:
            if failed is not None:
                failed.set()
            raise ConnectionError(f"try again ({len(calls)})")
        return len(calls)

    if step_kind == "sync":
        step = engine.step(name="flaky", **options)(body)
    else:

        async def abody() -> int:
            return body()

        step = engine.step(name="flaky", **options)(abody)

    if flow_kind == "sync":

        def flow() -> int:
            return step()  # type: ignore[no-any-return]
    else:

        async def flow() -> int:  # type: ignore[misc]
            return await step()  # type: ignore[no-any-return]

    return engine.workflow(name="flow")(flow)


@pytest.mark.parametrize("shape", SHAPES)
def test_virtual_clock_skips_the_backoff(make_engine, shape: str) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    calls: list[int] = []
    flow = flaky_flow(engine, shape, calls, succeed_at=3, retries=2, initial_delay=1000, max_delay=5000)
    with engine:
        begun = time.monotonic()
        start = clock.now()
        assert clock.finish(engine.start(flow), timeout=15) == 3
        # A real sleep would take 1000 + 2000 s; the virtual clock skipped it.
        assert time.monotonic() - begun < 15
        assert clock.now() - start == pytest.approx(3000)
    assert calls == [0, 1, 2]


def test_backoffs_advance_virtual_time_seen_by_the_workflow(make_engine) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    seen: list[float] = []

    @engine.step(retries=2, initial_delay=1)
    def flaky() -> None:
        seen.append(clock.now())
        if len(seen) < 3:
            raise ConnectionError("again")

    @engine.workflow()
    def flow() -> float:
        before = engine.now()
        flaky()
        return (engine.now() - before).total_seconds()

    with engine:
        assert clock.finish(engine.start(flow), timeout=15) == pytest.approx(3.0)
    assert [round(b - a, 6) for a, b in zip(seen, seen[1:], strict=False)] == [1.0, 2.0]


@pytest.mark.parametrize("shape", SHAPES)
def test_cancel_ends_a_backoff(make_engine, shape: str) -> None:
    engine = make_engine()
    calls: list[int] = []
    failed = threading.Event()
    flow = flaky_flow(engine, shape, calls, succeed_at=99, failed=failed, retries=3, initial_delay=30)
    with engine:
        h = engine.start(flow)
        assert failed.wait(10)  # the first attempt failed: the step backs off for 30 s
        engine.cancel(h.workflow_id)
        with pytest.raises(errors.WorkflowCancelledError):
            h.result(timeout=10)
        # The workflow stopped (close finds nothing left running), well
        # before the 30 s backoff would have ended.
        assert engine.close(timeout=10) == []
    assert calls == [0]


def test_close_ends_a_backoff_and_the_step_runs_again_after_reopen(make_engine, db_path: str) -> None:
    calls: list[int] = []
    failed = threading.Event()
    engine = make_engine()
    flow = flaky_flow(engine, "sync-in-sync", calls, succeed_at=2, failed=failed, retries=3, initial_delay=30)
    engine.open()
    h = engine.start(flow, workflow_id="closing")
    assert failed.wait(10)
    assert engine.close(timeout=10) == []  # not held by the 30 s backoff
    assert calls == [0]

    again = make_engine()
    flaky_flow(again, "sync-in-sync", calls, succeed_at=2, retries=3, initial_delay=30)
    with again:
        assert again.handle(h.workflow_id).result(timeout=10) == 2
    assert calls == [0, 0]  # nothing was recorded: it ran again from attempt 0


def test_workflow_deadline_ends_a_backoff(make_engine) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    calls: list[int] = []
    failed = threading.Event()
    flow = flaky_flow(
        engine, "sync-in-sync", calls, succeed_at=99, failed=failed, retries=3, initial_delay=1000, max_delay=5000
    )
    with engine:
        h = engine.start(flow, timeout=100)
        # Both timers armed before time jumps: the deadline's (+100 s) and the
        # backoff's (+1000 s). Else, on a loaded machine, finish() could jump
        # to the backoff before the deadline's timer was armed (seen once in CI).
        assert failed.wait(10)
        clock.wait_for_timers(2)
        # To the deadline and no further: finish() would jump on to the
        # backoff's timer whenever the cancel took more than its 5 ms settle
        # (a loaded CI machine on PostgreSQL: attempt 1 ran, seen twice).
        clock.advance(100)
        with pytest.raises(errors.WorkflowCancelledError):
            h.result(timeout=10)
        give_up = time.monotonic() + 10
        while clock.next_timer() is not None and time.monotonic() < give_up:
            time.sleep(0.01)  # the cancel reaches the step's backoff, in real time
        assert clock.next_timer() is None  # the backoff's timer went with it, before close
        assert engine.close(timeout=10) == []
    assert calls == [0]


def test_cancel_ends_every_branch_in_backoff(make_engine) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    calls: dict[str, int] = {"a": 0, "b": 0}

    def make(label: str) -> Any:
        @engine.step(name=f"flaky-{label}", retries=3, initial_delay=1000)
        async def flaky() -> None:
            calls[label] += 1
            raise ConnectionError(label)

        return flaky

    a, b = make("a"), make("b")

    @engine.workflow()
    async def flow() -> None:
        await asyncio.gather(a(), b())

    with engine:
        h = engine.start(flow)
        clock.wait_for_timers(2)  # both branches back off
        engine.cancel(h.workflow_id)
        with pytest.raises(errors.WorkflowCancelledError):
            h.result(timeout=10)
        deadline = time.monotonic() + 10
        while clock.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert clock.pending() == 0  # both backoffs ended (their timers went)
        clock.advance(5000)  # a backoff still waiting would run its next attempt now
        assert engine.close(timeout=10) == []
    assert calls == {"a": 1, "b": 1}


def test_a_loop_ending_during_a_backoff_hands_the_workflow_over(make_engine) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    calls: list[int] = []
    flow = flaky_flow(engine, "async-in-async", calls, succeed_at=3, retries=3, initial_delay=1000)
    wid: list[str] = []

    async def start_and_leave() -> None:
        h = await engine.start_async(flow)
        wid.append(h.workflow_id)
        while clock.pending() < 1:  # the first attempt failed: it backs off
            await asyncio.sleep(0.01)

    with engine:
        # The caller's loop ends during the backoff: asyncio.run returns (the
        # backoff, unlike a running body, does not hold the loop's shutdown).
        runner = threading.Thread(target=asyncio.run, args=(start_and_leave(),))
        runner.start()
        runner.join(10)
        assert not runner.is_alive()
        # It continues on the engine's loop, from its journal: the step from attempt 0.
        assert clock.finish(engine.handle(wid[0]), timeout=15) == 3
    assert calls == [0, 0, 1]


@pytest.mark.parametrize("jitter", [0.5, 1.0])
def test_jitter_draws_each_delay_within_its_bounds(make_engine, jitter: float) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    seen: list[float] = []

    @engine.step(retries=8, backoff=1.0, initial_delay=10, jitter=jitter)
    def flaky() -> None:
        seen.append(clock.now())
        if len(seen) < 9:
            raise ConnectionError("again")

    @engine.workflow()
    def flow() -> None:
        flaky()

    with engine:
        clock.finish(engine.start(flow), timeout=15)
    gaps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
    assert len(gaps) == 8
    assert all(10 * (1 - jitter) - 1e-6 <= g <= 10 + 1e-6 for g in gaps), gaps
    assert len({round(g, 6) for g in gaps}) > 1  # drawn, not the plain 10 s each time


def test_retry_deadline_stops_retrying(make_engine) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    seen: list[float] = []

    @engine.step(retries=10, backoff=2.0, initial_delay=10, retry_deadline=50)
    def flaky() -> None:
        seen.append(clock.now())
        raise ConnectionError(f"failure {len(seen)}")

    @engine.workflow()
    def flow() -> None:
        flaky()

    with engine:
        h = engine.start(flow)
        with pytest.raises(errors.WorkflowFailedError) as info:
            clock.finish(h, timeout=15)
        assert "failure 3" in str(info.value)  # the last error is the outcome
    # Attempts at +0, +10, +30; the next backoff (40 s) would end at +70 > +50.
    assert [round(t - seen[0], 6) for t in seen] == [0.0, 10.0, 30.0]


def test_each_retry_logs_a_warning_with_fields(make_engine, caplog) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    calls: list[int] = []
    flow = flaky_flow(engine, "sync-in-sync", calls, succeed_at=3, retries=2, initial_delay=2)
    caplog.set_level(logging.WARNING, logger="durably.steps")
    with engine:
        h = engine.start(flow, workflow_id="logged")
        assert clock.finish(h, timeout=15) == 3
    records = [r for r in caplog.records if r.name == "durably.steps"]
    assert [r.levelno for r in records] == [logging.WARNING] * 2
    first = records[0]
    fields = [(r.workflow_id, r.workflow_name, r.step, r.attempt, r.delay) for r in records]  # type: ignore[attr-defined]
    assert fields == [("logged", "flow", "flaky", 0, 2.0), ("logged", "flow", "flaky", 1, 4.0)]
    text = first.getMessage()
    assert "'logged'" in text and "'flaky'" in text and "ConnectionError('try again (1)')" in text
    assert "2.000 s" in text


@pytest.mark.parametrize(
    "options",
    [
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"jitter": True},
        {"jitter": "0.5"},
        {"retry_deadline": 0},
        {"retry_deadline": -1},
        {"retry_deadline": float("inf")},
        {"retry_deadline": True},
        {"retry_deadline": "10"},
    ],
)
def test_bad_jitter_or_retry_deadline_is_refused_at_decoration(options: dict[str, Any]) -> None:
    engine = durably.Engine(":memory:")
    with pytest.raises(errors.UsageError):
        engine.step(retries=1, **options)(lambda: None)
