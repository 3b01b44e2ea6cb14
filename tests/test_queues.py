"""Queues: concurrency and rate limits (also across a restart), priority,
FIFO, deduplication, delayed start, bad input."""

from __future__ import annotations

import asyncio
import time

import pytest

import durably
from durably import errors, testing

T0 = 1_800_000_000.0


def _wait_until(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def _build(make_engine, clock, order: list, **queue_kw):
    engine = make_engine(clock=clock)
    queue = engine.queue("jobs", **queue_kw)

    @engine.workflow(name="job")
    def job(tag: str, hold: bool = False) -> str:
        order.append(tag)
        if hold:
            engine.recv()  # held until a message releases it
        return tag

    return engine, queue, job


def _running(engine) -> int:
    return sum(1 for e in testing.queue_entries(engine) if e.started_at is not None and not e.done)


def test_concurrency_limit_priority_and_fifo(make_engine) -> None:
    order: list[str] = []
    engine, queue, job = _build(make_engine, durably.VirtualClock(T0), order, concurrency=1)
    with engine:
        blocker = queue.enqueue(job, "blocker", True)
        _wait_until(lambda: order == ["blocker"])
        handles = [
            queue.enqueue(job, tag, priority=prio)
            for tag, prio in [("low-1", 5), ("high-1", 0), ("low-2", 5), ("high-2", 0), ("mid", 1)]
        ]
        assert _running(engine) == 1 and all(h.status() == "ENQUEUED" for h in handles)
        assert {w.workflow_id for w in engine.list_workflows(status="ENQUEUED")} == {h.workflow_id for h in handles}
        assert [w.workflow_id for w in engine.list_workflows(status="PENDING")] == [blocker.workflow_id]
        engine.send(blocker.workflow_id, "go")
        assert [h.result(timeout=10) for h in handles] == ["low-1", "high-1", "low-2", "high-2", "mid"]
        assert order == ["blocker", "high-1", "high-2", "mid", "low-1", "low-2"]


def test_concurrency_limit_holds_across_a_restart(make_engine) -> None:
    order: list[str] = []
    clock = durably.VirtualClock(T0)
    engine, queue, job = _build(make_engine, clock, order, concurrency=2)
    with engine:
        held = [queue.enqueue(job, f"h{i}", True, workflow_id=f"h{i}") for i in range(5)]
        _wait_until(lambda: len(order) == 2)
        assert _running(engine) == 2
    started_before = sorted(order)
    order.clear()
    engine2, _, _ = _build(make_engine, clock, order, concurrency=2)
    with engine2:
        _wait_until(lambda: len(order) == 2)  # the two running ones resume; no third starts
        assert sorted(order) == started_before and _running(engine2) == 2
        time.sleep(0.05)
        assert len(order) == 2
        for h in held:
            engine2.send(h.workflow_id, "go")
        assert sorted(engine2.handle(h.workflow_id).result(timeout=10) for h in held) == [f"h{i}" for i in range(5)]


def test_rate_limit_in_virtual_time_and_across_a_restart(make_engine) -> None:
    order: list[str] = []
    clock = durably.VirtualClock(T0)
    engine, queue, job = _build(make_engine, clock, order, rate_limit=(2, 10.0))
    with engine:
        for i in range(5):
            queue.enqueue(job, f"j{i}", workflow_id=f"j{i}")
        _wait_until(lambda: len(order) == 2)
        time.sleep(0.05)
        assert len(order) == 2
    engine2, _, _ = _build(make_engine, clock, order, rate_limit=(2, 10.0))
    with engine2:
        time.sleep(0.05)
        assert len(order) == 2  # the window still holds the two starts made before the restart
        clock.advance(10)
        _wait_until(lambda: len(order) == 4)
        clock.advance(10)
        _wait_until(lambda: len(order) == 5)
        assert engine2.handle("j4").result(timeout=10) == "j4"
        starts = sorted(e.started_at for e in testing.queue_entries(engine2))
        assert starts == [T0, T0, T0 + 10, T0 + 10, T0 + 20]


def test_dedup_key_returns_the_live_workflow_and_is_reusable_after(make_engine) -> None:
    order: list[str] = []
    engine, queue, job = _build(make_engine, durably.VirtualClock(T0), order)
    with engine:
        first = queue.enqueue(job, "a", True, dedup_key="user-1")
        again = queue.enqueue(job, "b", dedup_key="user-1")
        assert again.workflow_id == first.workflow_id
        engine.send(first.workflow_id, "go")
        assert first.result(timeout=10) == "a"
        later = queue.enqueue(job, "c", dedup_key="user-1")
        assert later.workflow_id != first.workflow_id and later.result(timeout=10) == "c"


def test_delay_and_async_enqueue(make_engine) -> None:
    order: list[str] = []
    clock = durably.VirtualClock(T0)
    engine, queue, job = _build(make_engine, clock, order)

    async def main() -> str:
        h = await queue.enqueue_async(job, "later", delay=3600)
        await asyncio.sleep(0.05)
        assert order == [] and h.status() == "ENQUEUED"
        clock.advance(3600)
        return await h.result_async()

    with engine:
        assert asyncio.run(main()) == "later"


def test_enqueue_from_a_workflow_is_journaled(make_engine) -> None:
    order: list[str] = []
    engine, queue, job = _build(make_engine, durably.VirtualClock(T0), order)

    @engine.workflow(name="fan")
    def fan() -> list:
        handles = [queue.enqueue(job, f"c{i}") for i in range(3)]
        return [h.result() for h in handles]

    with engine:
        h = engine.start(fan, workflow_id="fan")
        assert h.result(timeout=10) == ["c0", "c1", "c2"]
        assert [s.name for s in engine.steps("fan")] == ["enqueue:job"] * 3
        assert engine.handle("fan/0").result(timeout=5) == "c0"


@pytest.mark.parametrize(
    "call",
    [
        lambda e, q, j: e.queue("jobs", concurrency=0),
        lambda e, q, j: e.queue("other", concurrency=1.5),
        lambda e, q, j: e.queue("other", rate_limit=(0, 1)),
        lambda e, q, j: e.queue("other", rate_limit=(1, -1)),
        lambda e, q, j: e.queue("other", rate_limit=5),
        lambda e, q, j: e.queue(""),
        lambda e, q, j: e.queue("jobs", concurrency=3),
        lambda e, q, j: e.enqueue("undeclared", j, "x"),
        lambda e, q, j: q.enqueue(j, "x", priority="high"),
        lambda e, q, j: q.enqueue(j, "x", delay=-1),
        lambda e, q, j: q.enqueue(j, "x", dedup_key=""),
        lambda e, q, j: q.enqueue(print, "x"),
    ],
    ids=[
        "zero-concurrency",
        "float-concurrency",
        "zero-rate",
        "negative-period",
        "rate-not-a-pair",
        "empty-name",
        "redeclared-differently",
        "undeclared",
        "bad-priority",
        "negative-delay",
        "empty-dedup",
        "not-a-workflow",
    ],
)
def test_bad_queue_input_is_refused_with_a_typed_error(make_engine, call) -> None:
    engine, queue, job = _build(make_engine, durably.VirtualClock(T0), [], concurrency=2)
    with engine:
        with pytest.raises(errors.UsageError):
            call(engine, queue, job)
        assert testing.queue_entries(engine) == []


def test_a_queue_of_another_engine_is_refused(make_engine, tmp_path) -> None:
    engine, _queue, job = _build(make_engine, durably.VirtualClock(T0), [])
    other = make_engine(str(tmp_path / "other.db"))
    foreign = other.queue("jobs")
    with engine:
        with pytest.raises(errors.UsageError):
            engine._queues.check(foreign)


def test_a_queued_workflow_deadline_cancels_it_while_it_waits(make_engine) -> None:
    order: list[str] = []
    clock = durably.VirtualClock(T0)
    engine, queue, job = _build(make_engine, clock, order, concurrency=1)
    with engine:
        blocker = queue.enqueue(job, "blocker", True)
        _wait_until(lambda: order == ["blocker"])
        waiting = queue.enqueue(job, "late", timeout=60)
        clock.advance(60)
        with pytest.raises(errors.WorkflowCancelledError):
            waiting.result(timeout=10)
        engine.send(blocker.workflow_id, "go")
        assert blocker.result(timeout=10) == "blocker"
        time.sleep(0.05)
        assert order == ["blocker"]  # the cancelled entry never started


def test_blocking_forms_are_refused_in_async_workflows(make_engine) -> None:
    engine = make_engine(clock=durably.VirtualClock(T0))

    @engine.workflow(name="wrong")
    async def wrong() -> None:
        engine.sleep(1)

    with engine:
        with pytest.raises(errors.WorkflowFailedError) as info:
            engine.run(wrong)
    assert "sleep_async" in str(info.value)
