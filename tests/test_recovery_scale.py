"""Recovery at scale: journals whose large values are read one at a time
(and replayed a few workflows at a time), and pending workflows claimed in
waves. The replay must be the one a whole journal gives."""

from __future__ import annotations

import asyncio
import threading

import pytest

import durably
from durably.runtime import coordination
from durably.runtime.admission import LargeReplays
from durably.store._base import LARGE_VALUE

BIG = LARGE_VALUE * 3  # characters: well past the size a journal read leaves out


def _flow(engine: durably.Engine, ran: list[str], is_async: bool) -> None:
    """``flow(n)``: a small step, a large result, a step that raises a
    large error, then it waits for a message and returns what it saw."""
    if is_async:

        @engine.step(name="small")
        async def small_a() -> int:
            ran.append("small")
            return 7

        @engine.step(name="big")
        async def big_a(n: int) -> str:
            ran.append("big")
            return "b" * n

        @engine.step(name="bad")
        async def bad_a(n: int) -> None:
            ran.append("bad")
            raise ValueError("e" * n)

        @engine.workflow(name="flow")
        async def flow_a(n: int) -> list[object]:
            a = await small_a()
            b = await big_a(n)
            try:
                await bad_a(n)
            except ValueError as exc:
                err = str(exc)
            msg = await engine.recv_async(timeout=60)
            return [a, len(b), b[:3], len(err), err[:2], msg]

        return

    @engine.step(name="small")
    def small() -> int:
        ran.append("small")
        return 7

    @engine.step(name="big")
    def big(n: int) -> str:
        ran.append("big")
        return "b" * n

    @engine.step(name="bad")
    def bad(n: int) -> None:
        ran.append("bad")
        raise ValueError("e" * n)

    @engine.workflow(name="flow")
    def flow(n: int) -> list[object]:
        a = small()
        b = big(n)
        try:
            bad(n)
        except ValueError as exc:
            err = str(exc)
        msg = engine.recv(timeout=60)
        return [a, len(b), b[:3], len(err), err[:2], msg]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_large_values_replay_as_recorded_after_a_restart(make_engine, is_async: bool) -> None:
    ran: list[str] = []
    first = make_engine()
    _flow(first, ran, is_async)
    with first:
        ids = [f"w{i}" for i in range(4)]
        for wid in ids:
            first.start("flow", BIG, workflow_id=wid)
        for wid in ids:  # each waits for its message: three steps recorded
            for _ in range(200):
                if len(first.steps(wid)) >= 3:
                    break
                threading.Event().wait(0.05)
            assert [s.name for s in first.steps(wid)][:3] == ["small", "big", "bad"]
    assert sorted(ran) == sorted(["small", "big", "bad"] * 4)
    ran.clear()
    second = make_engine()
    _flow(second, ran, is_async)
    with second:
        assert sorted(second.recovery.resumed) == ids
        for wid in ids:
            second.send(wid, f"go {wid}")
        for wid in ids:
            assert second.handle(wid).result(timeout=60) == [7, BIG, "bbb", BIG, "ee", f"go {wid}"]
    assert ran == []  # every recorded step replayed, none run again


def test_large_replays_take_turns_and_give_their_slot_on() -> None:
    large = [(0, "big", None, None, None, True), (1, "big", None, None, None, True)]
    small = [(0, "small", "1", None, None, False)]
    slots = LargeReplays(slots=1)
    assert slots.enter("s", small, None) is None  # no large values: never waits
    assert slots.enter("a", large, None) is None  # the slot
    b = slots.enter("b", large, None)
    c = slots.enter("c", large[:1], None)
    assert b is not None and c is not None and not b.is_set()
    slots.read("a")
    assert not b.is_set()  # "a" has one large value left to read
    slots.ended("c")  # left the line before its turn (cancelled, closing)
    slots.read("a")
    assert b.is_set() and not c.is_set()  # "a" read its last one: "b" holds the slot now
    slots.ended("b")
    assert slots.enter("d", large, None) is None  # free again


def test_large_replays_wake_an_async_waiter_on_its_loop() -> None:
    slots = LargeReplays(slots=1)
    rows = [(0, "big", None, None, None, True)]

    async def main() -> None:
        assert slots.enter("a", rows, asyncio.get_running_loop()) is None
        waiter = slots.enter("b", rows, asyncio.get_running_loop())
        assert waiter is not None
        threading.Thread(target=slots.read, args=("a",)).start()
        await asyncio.wait_for(waiter, 10)

    asyncio.run(main())


def test_pending_workflows_are_recovered_in_waves_all_of_them(make_engine, db_path: str, monkeypatch) -> None:
    monkeypatch.setattr(coordination, "CLAIM_LIMIT", 7)
    ran: list[int] = []
    first = make_engine()
    gate = threading.Event()

    @first.workflow(name="job")
    def job(i: int) -> int:
        gate.wait(0.01)
        ran.append(i)
        return i * 2

    first.open()
    first.close()
    client = durably.Engine(db_path, client=True)
    with client:  # started by a client: PENDING, owned by no one
        client.start_many("job", [(i,) for i in range(30)], workflow_ids=[f"j{i:02d}" for i in range(30)])
    second = make_engine()
    second.workflow(name="job")(job.__wrapped__)
    with second:
        assert second.recovery.resumed == [f"j{i:02d}" for i in range(29, 22, -1)]  # a wave, newest first
        assert [second.handle(f"j{i:02d}").result(timeout=60) for i in range(30)] == [i * 2 for i in range(30)]
    assert sorted(ran) == list(range(30))
