"""``engine.start_many`` / ``start_many_async``: many starts in one journal
record (one commit), with the idempotency of ``start`` per workflow id."""

from __future__ import annotations

import asyncio
import threading

import pytest

import durably
from durably import errors


def test_start_many_runs_each_once_and_returns_handles_in_order(make_engine) -> None:
    engine = make_engine()
    runs: list[tuple[int, str]] = []
    gate = threading.Event()

    @engine.workflow()
    def double(x: int, tag: str) -> str:
        gate.wait(10)
        runs.append((x, tag))
        return f"{tag}{x * 2}"

    with engine:
        before = engine.stats().journal_records
        handles = engine.start_many(double, [(i, "t") for i in range(50)])
        assert engine.stats().journal_records - before == 1  # the 50 starts: one record, one commit
        gate.set()
        assert [h.result(timeout=10) for h in handles] == [f"t{i * 2}" for i in range(50)]
        assert len({h.workflow_id for h in handles}) == 50
    assert sorted(runs) == [(i, "t") for i in range(50)]


def test_start_many_ids_are_idempotency_keys(make_engine) -> None:
    engine = make_engine()
    runs: list[int] = []

    @engine.workflow()
    def once(x: int) -> int:
        runs.append(x)
        return x + 100

    @engine.workflow()
    def other(x: int) -> int:
        return x

    with engine:
        assert engine.start(once, 1, workflow_id="a").result() == 101
        # "a" exists, "b" comes twice: the first "b" runs, the second finds it.
        handles = engine.start_many(once, [(5,), (2,), (3,), (4,)], workflow_ids=["a", "b", "b", "c"])
        assert [h.workflow_id for h in handles] == ["a", "b", "b", "c"]
        assert [h.result(timeout=10) for h in handles] == [101, 102, 102, 104]
        with pytest.raises(errors.WorkflowConflictError) as info:
            engine.start_many(other, [(7,), (8,)], workflow_ids=["d", "a"])
        assert info.value.workflow_id == "a"
        assert engine.handle("d").result(timeout=10) == 7  # the other start of the call went ahead
        with pytest.raises(errors.UsageError):
            engine.start_many(once, [(1,)], workflow_ids=["x", "y"])
        with pytest.raises(errors.UsageError):
            engine.start_many(once, [(1,)], workflow_ids=[""])
    with make_engine() as again:  # the ids survive reopening
        again.workflow(name=once.__durably_workflow__.name)(lambda x: runs.append(-x))
        assert [
            h.result(timeout=10) for h in again.start_many(once.__durably_workflow__.name, [(9,)], workflow_ids=["c"])
        ] == [104]
    assert sorted(runs) == [1, 2, 4]


def test_start_many_async_runs_on_the_calling_loop(make_engine) -> None:
    engine = make_engine()
    loops: list[object] = []

    @engine.workflow()
    async def echo(x: int) -> int:
        loops.append(asyncio.get_running_loop())
        return x

    async def main() -> list[int]:
        handles = await engine.start_many_async(
            echo, [(i,) for i in range(200)], workflow_ids=[f"e{i}" for i in range(200)]
        )
        again = await engine.start_many_async(echo, [(0,)], workflow_ids=["e7"])
        assert again[0].workflow_id == "e7"
        results = [await h.result_async() for h in handles]
        assert await again[0].result_async() == 7
        assert set(loops) == {asyncio.get_running_loop()}
        return results

    with engine:
        assert asyncio.run(main()) == list(range(200))
    assert len(loops) == 200


def test_start_many_inside_a_workflow_starts_children_one_by_one(make_engine) -> None:
    engine = make_engine()
    runs: list[int] = []

    @engine.workflow()
    def child(x: int) -> int:
        runs.append(x)
        return x * 3

    @engine.workflow()
    def parent(n: int) -> list[int]:
        return [h.result() for h in engine.start_many(child, [(i,) for i in range(n)])]

    with engine:
        assert engine.run(parent, 4, workflow_id="p") == [0, 3, 6, 9]
        assert [s.name for s in engine.steps("p")][:4] == [f"start:{child.__durably_workflow__.name}"] * 4
    assert sorted(runs) == [0, 1, 2, 3]


def test_start_many_of_a_client_is_run_by_an_executor(make_engine, db_path: str) -> None:
    done = threading.Event()
    executor = make_engine()

    @executor.workflow(name="job")
    def job(x: int) -> int:
        done.set()
        return -x

    with executor, durably.Engine(db_path, client=True) as client:
        handles = client.start_many("job", [(1,), (2,)], workflow_ids=["j1", "j2"])
        assert [h.result(timeout=30) for h in handles] == [-1, -2]
