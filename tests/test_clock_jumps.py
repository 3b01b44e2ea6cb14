"""What a wall-clock jump does to durable waits (README: Clock jumps). A
recorded wake-up time is a wall-clock instant (it must mean the same after a
restart), but a wait armed in this process also ends when the time that
remained at arming has passed: a backward jump never stretches it, a
forward jump ends the waits whose instant it passed. Tested by patching the
wall clock (``time.time``) the engine reads."""

from __future__ import annotations

import time

import pytest


class _Wall:
    """``time.time`` with an adjustable offset."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.real = time.time

    def __call__(self) -> float:
        return self.real() + self.offset


@pytest.fixture
def wall(monkeypatch):
    w = _Wall()
    monkeypatch.setattr(time, "time", w)
    return w


def test_a_backward_jump_does_not_stretch_an_armed_sleep_or_receive_timeout(make_engine, wall) -> None:
    engine = make_engine()

    @engine.workflow(name="napper")
    def napper() -> str:
        engine.sleep(1.0)
        return "woke"

    @engine.workflow(name="listener")
    def listener() -> object:
        return engine.recv("t", timeout=1.0)

    with engine:
        hs = [engine.start(napper), engine.start(listener)]
        time.sleep(0.2)  # both armed
        wall.offset = -3600.0  # the wall clock goes back an hour
        t0 = time.monotonic()
        assert [h.result(timeout=10) for h in hs] == ["woke", None]
        assert time.monotonic() - t0 < 5  # not an hour
        assert engine.get_event("nobody", "k", timeout=0.5) is None  # a client wait too


def test_a_forward_jump_ends_the_waits_whose_instant_it_passed(make_engine, wall) -> None:
    engine = make_engine()

    @engine.workflow(name="napper")
    def napper() -> str:
        engine.sleep(3600)
        return "woke"

    with engine:
        h = engine.start(napper)
        time.sleep(0.2)
        wall.offset = 2 * 3600.0  # the recorded wake-up instant is now in the past
        assert h.result(timeout=10) == "woke"  # as a restart at this moment would


def test_a_rate_limited_queue_is_not_stalled_by_a_backward_jump(make_engine, wall) -> None:
    engine = make_engine()
    q = engine.queue("limited", rate_limit=(1, 0.5))

    @engine.workflow(name="job")
    def job(i: int) -> int:
        return i

    with engine:
        first = q.enqueue(job, 0)
        assert first.result(timeout=10) == 0
        wall.offset = -3600.0
        t0 = time.monotonic()
        assert q.enqueue(job, 1).result(timeout=10) == 1
        assert time.monotonic() - t0 < 5
