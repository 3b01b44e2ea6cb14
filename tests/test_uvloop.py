"""Async workflows on uvloop's event loop (extra ``durably[uvloop]``): the
same contract as on asyncio's (steps journaled once, gather in order, a
durable sleep, messages, a replay after the engine reopens). durably never
requires uvloop; its ordered-delivery gate reads asyncio's ready queue where
the loop has one and falls back to counting loop iterations on uvloop."""

from __future__ import annotations

import asyncio

import pytest

from durably import testing

uvloop = pytest.importorskip("uvloop", reason="uvloop tests skipped: uvloop is not installed (extra durably[uvloop])")


def test_async_workflows_run_on_uvloop(make_engine, any_path: str) -> None:
    engine = make_engine(any_path)
    ran: list[int] = []

    @engine.step()
    async def double(x: int) -> int:
        ran.append(x)
        await asyncio.sleep(0)
        return x * 2

    @engine.workflow()
    async def fan(n: int) -> list[int]:
        values = await asyncio.gather(*[double(i) for i in range(n)])
        await engine.sleep_async(0.01)
        got = await engine.recv_async("go", timeout=5)
        return [*values, got]

    async def main() -> list[int]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        handle = await engine.start_async(fan, 4, workflow_id="u1")
        await engine.send_async("u1", 99, topic="go")
        result: list[int] = await handle.result_async()
        return result

    with engine:
        assert uvloop.run(main()) == [0, 2, 4, 6, 99]
        assert sorted(ran) == [0, 1, 2, 3]  # each body once
        doubles = [s for s in testing.steps(engine, "u1") if s.name.endswith("double")]
        assert len(doubles) == 4  # journaled once each

    if any_path != ":memory:":
        with make_engine(any_path) as again:  # reopened: the recorded result, nothing run again
            assert again.handle("u1").result() == [0, 2, 4, 6, 99]
        assert sorted(ran) == [0, 1, 2, 3]
