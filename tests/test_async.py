"""Async workflows and steps: the same contract on asyncio."""

from __future__ import annotations

import asyncio

import pytest

import durably
from durably import Status, errors, testing


def test_async_workflows_on_the_callers_loop(make_engine, any_path) -> None:
    engine = make_engine(any_path)
    ran: list[int] = []

    @engine.step()
    async def double(x: int) -> int:
        ran.append(x)
        await asyncio.sleep(0)
        return x * 2

    @engine.step()
    def plus_one(x: int) -> int:  # a sync step awaited from an async workflow
        return x + 1

    @engine.transaction()
    def remember(db: durably.Tx, x: int) -> int:
        db.execute("CREATE TABLE IF NOT EXISTS seen(x INTEGER)")
        db.execute("INSERT INTO seen VALUES (?)", (x,))
        return x

    @engine.workflow()
    async def flow(x: int) -> int:
        y = await double(x)
        y = await plus_one(y)
        return await remember(y)

    async def main() -> list[int]:
        handles = [await engine.start_async(flow, i, workflow_id=f"a{i}") for i in range(50)]
        again = await engine.start_async(flow, 0, workflow_id="a0")
        assert again.workflow_id == "a0"
        return [await h.result_async(timeout=10) for h in handles]

    with engine:
        assert asyncio.run(main()) == [2 * i + 1 for i in range(50)]
        assert sorted(ran) == list(range(50))
        assert testing.query(engine, "SELECT count(*) FROM seen") == [(50,)]
        # an async workflow started from sync code runs on the engine's own loop
        assert engine.run(flow, 10) == 21


def test_gather_inside_a_workflow_is_deterministic(make_engine) -> None:
    engine = make_engine()

    @engine.step()
    async def ident(x: int) -> int:
        await asyncio.sleep(0.001 * (5 - x))  # finish in reverse order
        return x

    @engine.workflow()
    async def fan() -> list[int]:
        return list(await asyncio.gather(*[ident(i) for i in range(5)]))

    with engine:
        assert engine.run(fan, workflow_id="g") == [0, 1, 2, 3, 4]
        steps = engine.steps("g")
        # identified by call order (the order of the gather's arguments),
        # recorded in the order they finished
        assert sorted((s.position, s.output) for s in steps) == [(i, str(i)) for i in range(5)]
        assert [s.output for s in steps] == [str(i) for i in reversed(range(5))]


def test_async_errors_timeouts_and_cancel(make_engine) -> None:
    engine = make_engine()
    gate = asyncio.Event()

    @engine.step()
    async def wait_gate() -> None:
        await gate.wait()

    @engine.step()
    async def boom() -> None:
        raise LookupError("missing")

    @engine.workflow()
    async def fails() -> None:
        await boom()

    @engine.workflow()
    async def blocked() -> int:
        await wait_gate()
        await wait_gate()
        return 1

    async def main() -> None:
        h = await engine.start_async(fails)
        with pytest.raises(errors.WorkflowFailedError) as info:
            await h.result_async(timeout=10)
        assert isinstance(info.value.error, LookupError)
        b = await engine.start_async(blocked, workflow_id="b")
        with pytest.raises(errors.ResultTimeoutError):
            await b.result_async(timeout=0.05)
        engine.cancel("b")
        gate.set()
        with pytest.raises(errors.WorkflowCancelledError):
            await b.result_async(timeout=10)
        assert b.status() == Status.CANCELLED

    with engine:
        asyncio.run(main())


def test_async_direct_call_and_children(make_engine) -> None:
    engine = make_engine()

    @engine.workflow()
    async def child(x: int) -> int:
        return x + 100

    @engine.workflow()
    async def parent() -> int:
        a = await child(1)
        h = await engine.start_async(child, 2)
        return a + await h.result_async()

    async def main() -> int:
        return await parent()

    with engine:
        assert asyncio.run(main()) == 203
        assert len(engine.list_workflows(name=child)) == 2


def test_async_workflow_outlives_the_callers_event_loop(make_engine) -> None:
    engine = make_engine()
    ran: list[int] = []

    @engine.step()
    async def slow(i: int) -> int:
        await asyncio.sleep(0.01)
        ran.append(i)
        return i

    @engine.workflow()
    async def flow() -> int:
        return sum([await slow(i) for i in range(20)])

    async def start_and_leave() -> str:
        h = await engine.start_async(flow, workflow_id="leaver")
        await asyncio.sleep(0.03)  # the loop ends while the workflow is mid-way
        return h.workflow_id

    with engine:
        wid = asyncio.run(start_and_leave())
        assert engine.handle(wid).result(timeout=20) == sum(range(20))
        assert sorted(ran) == list(range(20))  # each step ran once, none lost
