"""Faults a real application meets in its first hour (issue 18): a durable
call on the wrong engine, an event set from a step body, and children that
outlive their parent's deadline."""

from __future__ import annotations

import threading

import pytest

import durably
from durably import Status, errors

# -- a workflow calling another engine's toolkit ----------------------------------------------


def test_toolkit_call_on_another_engine_is_a_usage_error_naming_both(make_engine, tmp_path) -> None:
    # At 785dce3: AttributeError 'NoneType' object has no attribute 'submit'
    # (other engine closed) or a FOREIGN KEY error (both open).
    runs_on = make_engine()
    other = durably.Engine(str(tmp_path / "other.db"))

    @runs_on.workflow(name="flow")
    def flow() -> str:
        try:
            other.sleep(0.01)
        except errors.UsageError as exc:
            return str(exc)
        return "no error"

    with runs_on:
        closed_message = runs_on.run(flow)
        with other:
            open_message = runs_on.run(flow, workflow_id="again")
    for message in (closed_message, open_message):
        assert "engine.sleep() was called on the engine of" in message
        assert "other.db" in message and runs_on.path.split("?")[0] in message
        assert "'flow'" in message and "register the workflow" in message


@pytest.mark.parametrize("call", ["send", "set_event", "now", "start", "patched", "enqueue"])
def test_every_durable_call_checks_its_engine(make_engine, call: str) -> None:
    runs_on = make_engine()
    other = make_engine(":memory:")

    @other.workflow(name="child")
    def child() -> int:
        return 1

    q = other.queue("q")

    @runs_on.workflow(name="flow")
    def flow() -> str:
        try:
            if call == "send":
                other.send("x", "m")
            elif call == "set_event":
                other.set_event("k", 1)
            elif call == "now":
                other.now()
            elif call == "start":
                other.start(child)
            elif call == "patched":
                other.patched("p")
            else:
                q.enqueue(child)
        except errors.UsageError as exc:
            return str(exc)
        return "no error"

    with runs_on, other:
        message = runs_on.run(flow)
    assert "inside workflow 'flow'" in message and "another Engine object" in message, message


def test_async_toolkit_call_on_another_engine(make_engine) -> None:
    runs_on = make_engine()
    other = make_engine(":memory:")

    @runs_on.workflow(name="aflow")
    async def aflow() -> str:
        try:
            await other.sleep_async(0.01)
        except errors.UsageError as exc:
            return str(exc)
        return "no error"

    with runs_on, other:
        assert "engine.sleep_async() was called" in runs_on.run(aflow)


# -- set_event from a step body -----------------------------------------------------------------


def test_a_step_body_publishes_progress_with_set_event(make_engine) -> None:
    # At 785dce3: UsageError "set_event() is only valid inside a workflow".
    engine = make_engine()
    seen: list[object] = []
    halfway = threading.Event()
    go_on = threading.Event()

    @engine.step()
    def long_step(n: int) -> int:
        engine.set_event("progress", 0.5)
        halfway.set()
        assert go_on.wait(10)
        engine.set_event("progress", 1.0)
        return n

    @engine.workflow(name="job")
    def job(n: int) -> int:
        return long_step(n) + 1

    with engine:
        h = engine.start(job, 41, workflow_id="job-1")
        assert halfway.wait(10)
        seen.append(engine.get_event("job-1", "progress", timeout=5))  # visible while the step runs
        go_on.set()
        assert h.result(timeout=10) == 42
        seen.append(engine.get_event("job-1", "progress", timeout=5))
        # Not a journaled position: the journal holds the step only.
        assert [s.name for s in engine.steps("job-1")] == [long_step.__durably_step__.name]
    assert seen == [0.5, 1.0]


def test_an_async_step_body_sets_an_event(make_engine) -> None:
    engine = make_engine()

    @engine.step()
    async def fetch() -> str:
        await engine.set_event_async("stage", "fetching")
        return "page"

    @engine.workflow(name="crawl")
    async def crawl() -> str:
        return await fetch()

    with engine:
        h = engine.start(crawl, workflow_id="c-1")
        assert h.result(timeout=10) == "page"
        assert engine.get_all_events("c-1") == {"stage": "fetching"}


def test_set_event_outside_any_workflow_is_still_refused(make_engine) -> None:
    engine = make_engine()
    with engine, pytest.raises(errors.UsageError, match="only valid inside a workflow"):
        engine.set_event("k", 1)


# -- children inherit the parent's deadline ---------------------------------------------------------


def test_children_inherit_the_parents_deadline(make_engine) -> None:
    # At 785dce3 a child started (or enqueued) by a parent that returns before
    # its deadline has no deadline and runs forever.
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    q = engine.queue("slow")

    @engine.workflow(name="sleeper")
    def sleeper() -> str:
        engine.sleep(10_000)
        return "woke"

    @engine.workflow(name="own")
    def own() -> str:
        engine.sleep(10_000)
        return "woke"

    @engine.workflow(name="parent")
    def parent() -> list[str]:
        started = engine.start(sleeper)
        queued = q.enqueue(sleeper)
        mine = engine.start(own, timeout=50_000)  # its own deadline wins
        return [started.workflow_id, queued.workflow_id, mine.workflow_id]

    with engine:
        started, queued, mine = engine.start(parent, workflow_id="p", timeout=100).result(timeout=10)
        assert engine.handle("p").status() == Status.SUCCESS
        clock.wait_for_timers(3)
        clock.advance(101)  # past the parent's deadline
        for wid in (started, queued):
            with pytest.raises(errors.WorkflowCancelledError):
                engine.handle(wid).result(timeout=10)
        assert engine.handle(mine).status() == Status.PENDING
        assert engine.handle(mine).info().deadline is not None
        clock.advance(10_000)
        assert engine.handle(mine).result(timeout=10) == "woke"


def test_a_child_of_a_parent_without_deadline_has_none(make_engine) -> None:
    engine = make_engine()

    @engine.workflow(name="kid")
    def kid() -> int:
        return 1

    @engine.workflow(name="root")
    def root() -> str:
        h = engine.start(kid)
        h.result()
        return h.workflow_id

    with engine:
        child = engine.run(root)
        assert engine.handle(child).info().deadline is None


def test_every_durably_error_is_exported() -> None:
    # At 785dce3 FencedError, which the README lists, was not in durably's namespace.
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, (errors.DurablyError, errors.WorkflowCancelled))
    ]
    assert len(classes) > 30
    missing = [c.__name__ for c in classes if getattr(durably, c.__name__, None) is not c]
    assert missing == []


def test_arming_a_deadline_already_past_on_a_virtual_clock_does_not_deadlock() -> None:
    # Deadlines.arm held its lock while a VirtualClock fired the already-due
    # timer in the same thread, whose callback takes that lock: a hang (seen
    # reopening an engine after the clock passed a workflow's deadline).
    from durably.runtime.deadlines import Deadlines

    clock = durably.VirtualClock()
    cancelled: list[str] = []
    done = threading.Event()
    deadlines = Deadlines(clock, lambda wid, reason: (cancelled.append(wid), done.set()))
    armer = threading.Thread(target=deadlines.arm, args=("w", clock.now() - 1), daemon=True)
    armer.start()
    armer.join(10)
    assert not armer.is_alive(), "arm() deadlocked"
    assert done.wait(10) and cancelled == ["w"]
