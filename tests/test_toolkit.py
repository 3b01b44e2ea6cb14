"""The workflow toolkit: durable time, messages, events, deadlines, patches,
with a restart in the middle of each (the engine closes while the workflow
waits; a new engine on the same file, with a later clock, carries on)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from datetime import datetime

import pytest

import durably
from durably import errors, testing

T0 = 1_800_000_000.0  # a fixed virtual start time


def _engine(make_engine, clock, **kw) -> durably.Engine:
    return make_engine(clock=clock, **kw)


def _register_sleeper(engine: durably.Engine, log: list):
    @engine.step(name="mark")
    def mark(tag: str) -> str:
        log.append(tag)
        return tag

    @engine.workflow(name="sleeper")
    def sleeper(seconds: float) -> list:
        before = (engine.now().timestamp(), engine.random(), engine.uuid4())
        mark("before")
        engine.sleep(seconds)
        mark("after")
        return [*before, engine.now().timestamp()]

    @engine.workflow(name="sleeper_async")
    async def sleeper_async(seconds: float) -> list:
        before = (await engine.now_async()).timestamp()
        await engine.sleep_async(seconds)
        return [before, (await engine.now_async()).timestamp()]

    return sleeper, sleeper_async


def test_sleep_runs_in_virtual_time(make_engine) -> None:
    clock = durably.VirtualClock(T0)
    engine = _engine(make_engine, clock)
    log: list[str] = []
    sleeper, _ = _register_sleeper(engine, log)
    with engine:
        h = engine.start(sleeper, 3 * 86400)
        clock.wait_for_timers(1)
        assert h.status() == "PENDING" and log == ["before"]
        clock.advance(3 * 86400 - 1)
        assert h.status() == "PENDING"
        clock.advance(1)
        now0, _r, _u, now1 = h.result(timeout=10)
        assert now0 == T0 and now1 == T0 + 3 * 86400
        assert log == ["before", "after"]


def test_async_sleep_runs_in_virtual_time(make_engine) -> None:
    clock = durably.VirtualClock(T0)
    engine = _engine(make_engine, clock)
    _, sleeper_async = _register_sleeper(engine, [])

    async def main() -> list:
        h = await engine.start_async(sleeper_async, 3600)
        await asyncio.to_thread(clock.wait_for_timers, 1)
        clock.advance(3600)
        return await h.result_async()

    with engine:
        assert asyncio.run(main()) == [T0, T0 + 3600]


def test_sleep_wakes_at_the_recorded_time_after_a_restart(make_engine, db_path) -> None:
    """Slept an hour, died after 30 minutes, restarted: wakes 30 minutes
    later, and now/random/uuid4 replay the values recorded before the crash."""
    clock = durably.VirtualClock(T0)
    log: list[str] = []
    engine = _engine(make_engine, clock)
    sleeper, _ = _register_sleeper(engine, log)
    with engine:
        h = engine.start(sleeper, 3600, workflow_id="nap")
        clock.wait_for_timers(1)
        recorded = [s.output for s in engine.steps("nap")]
    assert h.status is not None
    later = durably.VirtualClock(T0 + 1800)
    engine2 = _engine(make_engine, later)
    sleeper2, _ = _register_sleeper(engine2, log)
    with engine2:
        assert engine2.recovery.resumed == ["nap"]
        later.wait_for_timers(1)
        later.advance(1799)
        assert engine2.handle("nap").status() == "PENDING"
        later.advance(1)
        now0, rnd, uid, now1 = engine2.handle("nap").result(timeout=10)
        assert now0 == T0 and now1 == T0 + 3600
        assert [str(now0), str(rnd), f'"{uid}"'] == [recorded[0], recorded[1], recorded[2]]
    assert log == ["before", "after"]  # the step before the sleep did not run again


def test_cancel_interrupts_a_sleep_and_resume_keeps_the_wake_time(make_engine) -> None:
    clock = durably.VirtualClock(T0)
    engine = _engine(make_engine, clock)
    log: list[str] = []
    sleeper, _ = _register_sleeper(engine, log)
    with engine:
        h = engine.start(sleeper, 600)
        clock.wait_for_timers(1)
        engine.cancel(h.workflow_id)
        with pytest.raises(errors.WorkflowCancelledError):
            h.result(timeout=10)
        assert clock.pending() == 0  # the sleep's timer is gone
        clock.advance(300)
        engine.resume(h.workflow_id)
        clock.wait_for_timers(1)
        clock.advance(300)  # the original wake-up time, not 600 s after resume
        assert h.result(timeout=10)[3] == T0 + 600
        assert log == ["before", "after"]


def test_messages_are_received_once_in_order_per_topic(make_engine) -> None:
    engine = _engine(make_engine, durably.VirtualClock(T0))

    @engine.workflow(name="rx")
    def rx() -> list:
        return [engine.recv("a"), engine.recv("b"), engine.recv("a"), engine.recv()]

    with engine:
        h = engine.start(rx)
        wid = h.workflow_id
        for topic, msg in [("a", 1), (None, "plain"), ("a", {"n": 2}), ("b", [3])]:
            engine.send(wid, msg, topic=topic)
        assert h.result(timeout=10) == [1, [3], {"n": 2}, "plain"]
        assert testing.counts(engine)["messages"] == 0


def test_recv_wakes_on_commit_from_another_thread_and_async(make_engine) -> None:
    engine = _engine(make_engine, durably.VirtualClock(T0))

    @engine.workflow(name="rx_async")
    async def rx_async() -> list:
        return [await engine.recv_async("t"), await engine.recv_async("t")]

    async def main() -> list:
        h = await engine.start_async(rx_async)
        await engine.send_async(h.workflow_id, "one", topic="t")
        threading.Thread(target=engine.send, args=(h.workflow_id, "two", "t")).start()
        return await h.result_async()

    with engine:
        assert asyncio.run(main()) == ["one", "two"]


def test_a_message_sent_before_a_crash_is_received_once_after_it(make_engine) -> None:
    clock = durably.VirtualClock(T0)

    def build(c):
        engine = _engine(make_engine, c)

        @engine.workflow(name="pair")
        def pair() -> list:
            first = engine.recv()
            second = engine.recv()
            return [first, second]

        return engine, pair

    engine, pair = build(clock)
    with engine:
        h = engine.start(pair, workflow_id="p")
        engine.send("p", "m1")
        # wait until m1 is consumed (recorded), then send m2 and "crash"
        for _ in range(1000):
            if len(engine.steps("p")) == 1:
                break
            threading.Event().wait(0.005)
        assert [s.output for s in engine.steps("p")] == ['"m1"']
        engine.send("p", "m2")
    engine2, _ = build(clock)
    with engine2:
        assert engine2.handle("p").result(timeout=10) == ["m1", "m2"]
        assert testing.counts(engine2)["messages"] == 0
    assert h.workflow_id == "p"


def test_recv_timeout_is_durable_across_a_restart(make_engine) -> None:
    def build(c):
        engine = _engine(make_engine, c)

        @engine.workflow(name="waiter")
        def waiter() -> object:
            return engine.recv("x", timeout=60)

        return engine, waiter

    clock = durably.VirtualClock(T0)
    engine, waiter = build(clock)
    with engine:
        engine.start(waiter, workflow_id="w")
        clock.wait_for_timers(1)
    later = durably.VirtualClock(T0 + 30)
    engine2, _ = build(later)
    with engine2:
        later.wait_for_timers(1)
        later.advance(29)
        assert engine2.handle("w").status() == "PENDING"
        later.advance(1)
        assert engine2.handle("w").result(timeout=10) is None


def test_send_from_a_workflow_is_not_repeated_on_replay(make_engine) -> None:
    clock = durably.VirtualClock(T0)

    def build(c):
        engine = _engine(make_engine, c)

        @engine.workflow(name="inbox")
        def inbox() -> list:
            return [engine.recv(timeout=None) for _ in range(2)]

        @engine.workflow(name="sender")
        def sender(dest: str) -> str:
            engine.send(dest, "hello")
            engine.sleep(10)  # the process dies here
            engine.send(dest, "bye")
            return "sent"

        return engine, inbox, sender

    engine, inbox, sender = build(clock)
    with engine:
        engine.start(inbox, workflow_id="in")
        engine.start(sender, "in", workflow_id="out")
        clock.wait_for_timers(1)
    engine2, _, _ = build(clock)
    with engine2:
        clock.wait_for_timers(1)
        clock.advance(10)
        assert engine2.handle("out").result(timeout=10) == "sent"
        assert engine2.handle("in").result(timeout=10) == ["hello", "bye"]


def test_events_latest_wins_and_readers_wake_on_commit(make_engine) -> None:
    clock = durably.VirtualClock(T0)
    engine = _engine(make_engine, clock)

    @engine.workflow(name="publisher")
    def publisher() -> None:
        engine.set_event("stage", "started")
        engine.set_event("stage", "half")
        engine.recv("go")
        engine.set_event("stage", {"done": True})

    @engine.workflow(name="reader")
    def reader(wid: str) -> object:
        return engine.get_event(wid, "stage", timeout=5)

    with engine:
        h = engine.start(publisher)
        got: list[object] = []

        def blocked_reader() -> None:
            try:
                got.append(engine.get_event(h.workflow_id, "never", timeout=None))
            except errors.NotOpenError as exc:
                got.append(exc)

        t = threading.Thread(target=blocked_reader)
        t.start()
        assert engine.get_event(h.workflow_id, "stage") in ("started", "half")
        engine.send(h.workflow_id, None, topic="go")
        h.result(timeout=10)
        assert engine.get_event(h.workflow_id, "stage", timeout=0) == {"done": True}
        assert engine.run(reader, h.workflow_id) == {"done": True}
        assert engine.get_event(h.workflow_id, "missing", timeout=0) is None
        # a workflow not started yet has no event yet (it is waited for)
        assert engine.get_event("nobody", "stage", timeout=0) is None
    t.join(5)  # engine close wakes the blocked reader (with NotOpenError)
    assert not t.is_alive() and len(got) == 1 and isinstance(got[0], errors.NotOpenError)


def test_workflow_deadline_cancels_it_and_survives_a_restart(make_engine) -> None:
    def build(c):
        engine = _engine(make_engine, c)

        @engine.workflow(name="child")
        def child() -> None:
            engine.recv()

        @engine.workflow(name="parent")
        def parent() -> None:
            engine.start(child)
            engine.recv()

        return engine, parent

    clock = durably.VirtualClock(T0)
    engine, parent = build(clock)
    with engine:
        engine.start(parent, workflow_id="p", timeout=100)
        clock.wait_for_timers(1)
    later = durably.VirtualClock(T0 + 50)
    engine2, _ = build(later)
    with engine2:
        later.advance(49)
        assert engine2.handle("p").status() == "PENDING"
        later.advance(1)
        with pytest.raises(errors.WorkflowCancelledError, match="deadline"):
            engine2.handle("p").result(timeout=10)
        with pytest.raises(errors.WorkflowCancelledError):
            engine2.handle("p/0").result(timeout=10)


def test_patched_keeps_running_workflows_on_the_old_path(make_engine) -> None:
    clock = durably.VirtualClock(T0)
    calls: list[str] = []

    def build(c, patched: bool):
        engine = _engine(make_engine, c)

        @engine.step(name="a")
        def a() -> None:
            calls.append("a")

        @engine.step(name="b")
        def b() -> None:
            calls.append("b")

        @engine.workflow(name="flow")
        def flow() -> str:
            a()
            if patched and engine.patched("add-b"):
                b()
                path = "new"
            else:
                path = "old"
            engine.sleep(5)
            return path

        return engine, flow

    engine, flow = build(clock, patched=False)
    with engine:
        engine.start(flow, workflow_id="old-run")
        clock.wait_for_timers(1)
    engine2, flow2 = build(clock, patched=True)
    with engine2:
        h_new = engine2.start(flow2, workflow_id="new-run")
        clock.wait_for_timers(2)
        clock.advance(5)
        assert engine2.handle("old-run").result(timeout=10) == "old"
        assert h_new.result(timeout=10) == "new"
        assert [s.name for s in engine2.steps("new-run")] == ["a", "patch:add-b", "b", "sleep"]
    assert calls == ["a", "a", "b"]


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda e: e.sleep(-1), errors.UsageError),
        (lambda e: e.sleep(float("nan")), errors.UsageError),
        (lambda e: e.sleep(1e12), errors.UsageError),
        (lambda e: e.sleep("1"), errors.UsageError),
        (lambda e: e.recv(), errors.UsageError),
        (lambda e: e.set_event("k", 1), errors.UsageError),
        (lambda e: e.patched("x"), errors.UsageError),
        (lambda e: e.send("nobody", 1), errors.WorkflowNotFoundError),
        (lambda e: e.send("", 1), errors.UsageError),
        (lambda e: e.send("w", 1, topic=3), errors.UsageError),
        (lambda e: e.send("w", object()), errors.SerializationError),
        (lambda e: e.get_event("w", "k", timeout=-5), errors.UsageError),
        (lambda e: e.start("flow", timeout=-1), errors.UsageError),
    ],
    ids=[
        "negative",
        "nan",
        "absurd",
        "not-a-number",
        "recv-outside",
        "set_event-outside",
        "patched-outside",
        "unknown-id",
        "empty-id",
        "bad-topic",
        "unencodable",
        "bad-timeout",
        "bad-workflow-timeout",
    ],
)
def test_bad_input_gets_a_typed_error_and_nothing_is_stored(make_engine, call, exc) -> None:
    engine = _engine(make_engine, durably.VirtualClock(T0))

    @engine.workflow(name="flow")
    def flow() -> None:
        engine.recv()

    with engine:
        engine.start(flow, workflow_id="w")
        with pytest.raises(exc):
            call(engine)
        assert testing.counts(engine)["messages"] == 0
        assert testing.counts(engine)["workflows"] == 1


def test_a_bad_message_inside_a_workflow_fails_it_with_a_serialization_error(make_engine) -> None:
    engine = _engine(make_engine, durably.VirtualClock(T0))

    @engine.workflow(name="bad")
    def bad() -> None:
        engine.send(engine.workflow_id, object())

    with engine:
        with pytest.raises(errors.WorkflowFailedError) as info:
            engine.run(bad)
        assert "SerializationError" in str(info.value)


def test_clock_must_be_a_durably_clock() -> None:
    with pytest.raises(errors.UsageError):
        durably.Engine(":memory:", clock=object())  # type: ignore[arg-type]


def test_async_events_timeouts_and_client_reads(make_engine) -> None:
    """The *_async forms: events set and read inside async workflows, an
    async client read woken by the commit, a recv timeout in virtual time."""
    clock = durably.VirtualClock(T0)
    engine = _engine(make_engine, clock)

    @engine.workflow(name="stages")
    async def stages() -> object:
        await engine.set_event_async("stage", 1)
        late = await engine.recv_async("never", timeout=30)
        await engine.set_event_async("stage", 2)
        return late

    @engine.workflow(name="watcher")
    async def watcher(wid: str) -> object:
        return await engine.get_event_async(wid, "stage", timeout=None)

    async def main() -> tuple:
        h = await engine.start_async(stages)
        first = await engine.get_event_async(h.workflow_id, "stage", timeout=None)
        seen = await engine.start_async(watcher, h.workflow_id)
        await asyncio.to_thread(clock.wait_for_timers, 1)
        clock.advance(30)
        return (
            first,
            await h.result_async(),
            await seen.result_async(),
            await engine.get_event_async(h.workflow_id, "stage", timeout=0),
        )

    with engine:
        first, late, watched, last = asyncio.run(main())
    assert (first, late, last) == (1, None, 2) and watched in (1, 2)


def test_async_schedule_workflow(make_engine) -> None:
    clock = durably.VirtualClock(T0)
    engine = _engine(make_engine, clock)
    fired: list[datetime] = []

    @engine.workflow(name="atick")
    async def atick(slot: datetime) -> None:
        await engine.sleep_async(0)
        fired.append(slot)

    engine.schedule("hourly", "@hourly", atick)
    with engine:
        import time as _time

        _time.sleep(0.05)
        clock.advance(3600)
        for _ in range(500):
            if fired:
                break
            _time.sleep(0.01)
    assert [f.timestamp() for f in fired] == [(T0 // 3600 + 1) * 3600]


@dataclasses.dataclass
class Order:
    id: str
    qty: int


def test_typed_messages_and_events(make_engine) -> None:
    engine = _engine(make_engine, durably.VirtualClock(T0))

    @engine.workflow(name="typed")
    def typed() -> str:
        order = engine.recv("orders", type=Order)
        assert isinstance(order, Order)
        engine.set_event("last", order)
        try:
            engine.recv("orders", type=Order)
        except errors.SerializationError as exc:
            return f"{order.id}x{order.qty}; bad: {type(exc).__name__}"
        return "no error"

    with engine:
        h = engine.start(typed)
        engine.send(h.workflow_id, Order("o-1", 3), topic="orders")
        engine.send(h.workflow_id, {"id": "o-2"}, topic="orders")  # qty missing
        assert h.result(timeout=10) == "o-1x3; bad: SerializationError"
        assert engine.get_event(h.workflow_id, "last", type=Order) == Order("o-1", 3)
