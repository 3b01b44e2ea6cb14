"""Closing from asyncio: ``await engine.close_async()`` and ``async with
engine:`` wait for the step bodies running on the caller's own loop and
record them, as ``close()`` does from a thread; ``close()`` on such a loop
refuses (it could not wait for them) instead of returning early and letting
the bodies run again at the next open. Also: an Engine object opens again
after a close."""

from __future__ import annotations

import asyncio
import logging

import pytest

import durably
from durably import errors


def _order_flow(engine: durably.Engine, runs: list[str], seconds: float = 0.5) -> object:
    @engine.step(name="charge")
    async def charge(order: str) -> str:
        runs.append(f"charge {order}")
        await asyncio.sleep(seconds)  # in flight when the close begins
        return f"ch-{order}"

    @engine.step(name="ship")
    async def ship(order: str) -> str:
        runs.append(f"ship {order}")
        return f"parcel-{order}"

    @engine.workflow(name="order")
    async def order(order_id: str) -> str:
        receipt = await charge(order_id)
        return receipt + "/" + await ship(order_id)

    return order


async def _start_and_wait_in_body(engine: durably.Engine, flow: object, runs: list[str], n: int = 3) -> None:
    for i in range(n):
        await engine.start_async(flow, f"o{i}", workflow_id=f"order-{i}")
    while len(runs) < n:  # every workflow is inside its charge body
        await asyncio.sleep(0.01)


def _finish_after_reopen(engine: durably.Engine, n: int = 3) -> list[str]:
    with engine:
        return [engine.handle(f"order-{i}").result(timeout=30) for i in range(n)]


def test_close_async_records_the_bodies_running_on_the_callers_loop(make_engine) -> None:
    engine = make_engine()
    runs: list[str] = []
    flow = _order_flow(engine, runs)

    async def main() -> list[str]:
        engine.open()
        await _start_and_wait_in_body(engine, flow, runs)
        return await engine.close_async(timeout=30)

    assert asyncio.run(main()) == []
    assert not engine.is_open
    # The charges ran once and are recorded; ship is not run yet (stopped at the step boundary).
    assert sorted(runs) == ["charge o0", "charge o1", "charge o2"]
    assert _finish_after_reopen(engine) == [f"ch-o{i}/parcel-o{i}" for i in range(3)]
    assert sorted(runs) == sorted([f"charge o{i}" for i in range(3)] + [f"ship o{i}" for i in range(3)])


def test_async_with_engine_closes_like_close_async(make_engine) -> None:
    engine = make_engine()
    runs: list[str] = []
    flow = _order_flow(engine, runs)

    async def main() -> None:
        async with engine as opened:
            assert opened is engine and engine.is_open
            await _start_and_wait_in_body(engine, flow, runs)
        assert not engine.is_open

    asyncio.run(main())
    assert _finish_after_reopen(engine) == [f"ch-o{i}/parcel-o{i}" for i in range(3)]
    assert sorted(runs).count("charge o0") == 1 and len(runs) == 6, runs


def test_close_on_a_loop_running_workflows_raises_and_stays_open(make_engine) -> None:
    engine = make_engine()
    runs: list[str] = []
    flow = _order_flow(engine, runs)

    async def main() -> None:
        engine.open()
        await _start_and_wait_in_body(engine, flow, runs)
        with pytest.raises(errors.UsageError, match="close_async"):
            engine.close(timeout=30)
        assert engine.is_open  # nothing was torn down
        assert await engine.close_async() == []

    asyncio.run(main())
    assert _finish_after_reopen(engine) == [f"ch-o{i}/parcel-o{i}" for i in range(3)]
    assert len(runs) == 6, runs


def test_close_on_a_loop_running_none_of_its_workflows_closes(make_engine) -> None:
    engine = make_engine()

    @engine.workflow()
    def hello(name: str) -> str:
        return f"hello {name}"

    async def main() -> None:
        engine.open()
        assert engine.run(hello, "x") == "hello x"  # a sync workflow: not on this loop
        assert engine.close() == []

    asyncio.run(main())
    assert not engine.is_open


def test_close_async_inside_a_workflow_is_a_usage_error(make_engine) -> None:
    engine = make_engine()

    @engine.workflow()
    async def closer() -> str:
        try:
            await engine.close_async()
        except errors.UsageError as exc:
            return str(exc)
        return "closed"

    async def main() -> str:
        async with engine:
            return await (await engine.start_async(closer)).result_async(timeout=10)

    assert "inside a workflow" in asyncio.run(main())


def test_close_async_gives_up_after_its_timeout_and_says_which(make_engine, caplog) -> None:
    engine = make_engine()
    release = asyncio.Event()
    ran: list[int] = []

    @engine.step()
    async def blocked() -> str:
        ran.append(1)
        await release.wait()  # outside any durable point, past the close's timeout
        return "done"

    @engine.workflow(name="stuck")
    async def stuck() -> str:
        return await blocked()

    async def main() -> list[str]:
        engine.open()
        await engine.start_async(stuck, workflow_id="stuck-1")
        while not ran:
            await asyncio.sleep(0.01)
        with caplog.at_level(logging.ERROR, logger="durably"):
            return await engine.close_async(timeout=0.3)

    assert asyncio.run(main()) == ["stuck-1"]
    assert any("stuck-1" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_close_async_when_closed_returns_nothing(make_engine) -> None:
    engine = make_engine()
    assert asyncio.run(engine.close_async()) == []
    with pytest.raises(errors.UsageError):
        asyncio.run(engine.close_async(timeout=-1))


def test_an_engine_opens_again_after_close(make_engine) -> None:
    # At 785dce3 the second open of one Engine object on a file failed with a
    # UNIQUE constraint on its executor row (a lifespan reopening its engine).
    engine = make_engine()

    @engine.workflow()
    def echo(x: int) -> int:
        return x

    for i in range(3):
        with engine:
            assert engine.run(echo, i) == i
    first = engine.executor_id
    with engine:
        assert engine.executor_id != first  # each open registers a new executor
