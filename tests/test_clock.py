"""Clocks: virtual time fires timers in order, at once when already due;
the system clock fires on time."""

from __future__ import annotations

import threading
import time

import pytest

import durably


def test_virtual_clock_fires_due_timers_in_order() -> None:
    clock = durably.VirtualClock(100.0)
    fired: list[str] = []
    clock.call_at(130.0, lambda: fired.append("c"))
    clock.call_at(110.0, lambda: fired.append("a"))
    cancelled = clock.call_at(115.0, lambda: fired.append("x"))
    clock.call_at(120.0, lambda: fired.append("b"))
    cancelled.cancel()
    assert clock.pending() == 3
    clock.advance(20)
    assert fired == ["a", "b"] and clock.now() == 120.0
    assert clock.advance_to_next() and fired == ["a", "b", "c"] and clock.now() == 130.0
    assert not clock.advance_to_next()


def test_virtual_clock_fires_a_past_due_timer_at_once() -> None:
    clock = durably.VirtualClock(100.0)
    fired = threading.Event()
    clock.call_at(99.0, fired.set)
    assert fired.is_set() and clock.pending() == 0


def test_virtual_clock_refuses_to_go_back_and_times_out_waiting() -> None:
    clock = durably.VirtualClock(0.0)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(TimeoutError):
        clock.wait_for_timers(1, timeout=0.05)


def test_system_clock_fires_on_time() -> None:
    clock = durably.SystemClock()
    fired = threading.Event()
    start = time.time()
    clock.call_at(start + 0.05, fired.set)
    assert fired.wait(5)
    assert time.time() - start >= 0.05
    clock.close()


def test_a_large_queue_drains_in_virtual_time_without_advancing(make_engine) -> None:
    engine = make_engine(clock=durably.VirtualClock(0.0))
    queue = engine.queue("bulk")

    @engine.workflow(name="noop")
    def noop(i: int) -> int:
        return i

    with engine:
        handles = [queue.enqueue(noop, i) for i in range(250)]  # more than one dispatcher round
        assert [h.result(timeout=20) for h in handles] == list(range(250))


def test_cancelled_timers_do_not_accumulate() -> None:
    clock = durably.VirtualClock(0.0)
    for i in range(10_000):  # e.g. receives that got their message long before their timeout
        clock.call_at(1e9 + i, lambda: None).cancel()
    assert len(clock._heap) <= 2048 and clock.pending() == 0
    fired: list[int] = []
    clock.call_at(5.0, lambda: fired.append(1))
    clock.advance(5)
    assert fired == [1]


def test_an_engine_stops_the_clock_thread_it_started(make_engine) -> None:
    engine = make_engine()

    @engine.workflow(name="nap")
    def nap() -> None:
        # long enough to outlast recording the sleep under load (a wake-up
        # time already past when the sleep is armed needs no timer: no thread)
        engine.sleep(0.5)

    with engine:
        engine.run(nap)
        thread = engine._clock._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive() and engine._clock._thread is None


def test_finish_skips_time_until_the_workflow_ends(make_engine) -> None:
    clock = durably.VirtualClock(0.0)
    engine = make_engine(clock=clock)

    @engine.workflow(name="drip")
    def drip() -> float:
        for _ in range(5):
            engine.sleep(86400)  # five days
        engine.recv(timeout=3600)  # nobody sends: an hour's timeout
        return engine.now().timestamp()

    with engine:  # (days of sleeping for real would hit the test's timeout)
        assert clock.finish(engine.start(drip)) == 5 * 86400 + 3600


@pytest.mark.timeout(30)
def test_virtual_clock_finish_works_after_an_earlier_workflow_ran() -> None:
    """The virtual-time snippet of docs/guides/toolkit.md (Durable time), run as written (on 8213365: hung)."""
    emails: list[str] = []
    clock = durably.VirtualClock()
    engine = durably.Engine(":memory:", clock=clock)

    @engine.step()
    def email(user: str, text: str) -> None:
        emails.append(user)

    @engine.workflow()
    def reminder(user: str) -> None:
        sent_at = engine.now()
        engine.sleep(24 * 3600)
        email(user, f"since {sent_at:%c}")

    with engine:
        h = engine.start(reminder, "ann")
        clock.wait_for_timers(1)
        clock.advance(24 * 3600)
        h.result(timeout=5)
        clock.finish(engine.start(reminder, "bob"))
    assert emails == ["ann", "bob"]
