"""Removing a code change in stages, as in Temporal and DBOS: old code ->
``patched(change)`` -> ``deprecate_patch(change)`` -> plain new code, with
workflows started at each stage and finished at each later one."""

from __future__ import annotations

import pytest

import durably
from durably import errors

T0 = 1_800_000_000.0
STAGES = ("old", "patched", "deprecated", "plain")

# What a workflow started under one stage's code does when it finishes under
# a later stage's code: the path it takes, or "parked" (the code does not
# match its journal; it stays PENDING and resumable, nothing is re-run).
OUTCOME = {
    ("old", "old"): "old",
    ("old", "patched"): "old",
    ("old", "deprecated"): "parked",
    ("old", "plain"): "parked",
    ("patched", "patched"): "new",
    ("patched", "deprecated"): "new",
    ("patched", "plain"): "parked",
    ("deprecated", "deprecated"): "new",
    ("deprecated", "plain"): "new",
    ("plain", "plain"): "new",
}
# The steps a run started under each stage records.
RECORDED = {
    "old": ["a", "c", "sleep"],
    "patched": ["a", "patch:use-b", "b", "sleep"],
    "deprecated": ["a", "b", "sleep"],
    "plain": ["a", "b", "sleep"],
}


def _build(make_engine, clock, stage: str, calls: list, is_async: bool = False) -> durably.Engine:
    """The workflow ``flow`` as the code of ``stage`` writes it: step a, then
    the new path (step b) or the old one (step c), then a durable sleep (so a
    run can be left half-way at a restart)."""
    engine = make_engine(clock=clock)

    def take_new_path() -> bool:
        if stage == "old":
            return False
        if stage == "patched":
            return engine.patched("use-b")
        if stage == "deprecated":
            assert engine.deprecate_patch("use-b") is True
            return True
        return True

    def step(name: str):
        if is_async:

            async def body() -> None:
                calls.append(name)
        else:

            def body() -> None:  # type: ignore[misc]
                calls.append(name)

        return engine.step(name=name)(body)

    a, b, c = step("a"), step("b"), step("c")  # b: the new path, c: the old one

    if is_async:

        @engine.workflow(name="flow")
        async def flow_async() -> str:
            await a()
            new = take_new_path()
            await (b() if new else c())
            await engine.sleep_async(5)
            return "new" if new else "old"
    else:

        @engine.workflow(name="flow")
        def flow() -> str:
            a()
            new = take_new_path()
            b() if new else c()
            engine.sleep(5)
            return "new" if new else "old"

    return engine


@pytest.mark.parametrize("started, finished", sorted(OUTCOME, key=lambda k: (STAGES.index(k[0]), STAGES.index(k[1]))))
def test_a_workflow_started_at_one_stage_finishes_at_a_later_one(make_engine, started, finished) -> None:
    clock, calls = durably.VirtualClock(T0), []
    first = _build(make_engine, clock, started, calls)
    with first:
        first.start("flow", workflow_id="run")
        clock.wait_for_timers(1)
        assert [s.name for s in first.steps("run")] == RECORDED[started]
    ran_before = list(calls)
    second = _build(make_engine, clock, finished, calls)
    with second:
        handle = second.handle("run")
        if OUTCOME[started, finished] == "parked":
            with pytest.raises(errors.WorkflowParkedError):
                clock.finish(handle, timeout=10)
            assert handle.status() == "PENDING"
        else:
            assert clock.finish(handle, timeout=10) == OUTCOME[started, finished]
        assert [s.name for s in second.steps("run")] == RECORDED[started]  # nothing new recorded
    assert calls == ran_before  # replay never re-runs a recorded step


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_patched_run_resumed_under_deprecate_patch_replays_past_its_marker(make_engine, is_async) -> None:
    clock, calls = durably.VirtualClock(T0), []
    first = _build(make_engine, clock, "patched", calls, is_async)
    with first:
        first.start("flow", workflow_id="run")
        clock.wait_for_timers(1)
    second = _build(make_engine, clock, "deprecated", calls, is_async)
    with second:
        assert clock.finish(second.handle("run"), timeout=10) == "new"
        wake = ["wake"] if is_async else []  # an async sleep's end is a recorded delivery
        assert [s.name for s in second.steps("run")] == ["a", "patch:use-b", "b", "sleep", *wake]
        assert second.handle("run").info().parked is None
    assert calls == ["a", "b"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_new_run_under_deprecate_patch_records_no_marker(make_engine, is_async) -> None:
    clock, calls = durably.VirtualClock(T0), []
    engine = _build(make_engine, clock, "deprecated", calls, is_async)
    with engine:
        h = engine.start("flow", workflow_id="fresh")
        assert clock.finish(h, timeout=10) == "new"
        wake = ["wake"] if is_async else []  # an async sleep's end is a recorded delivery
        assert [s.name for s in engine.steps("fresh")] == ["a", "b", "sleep", *wake]
    # ... so the plain code (the call deleted) replays it.
    plain = _build(make_engine, clock, "plain", calls, is_async)
    with plain:
        assert plain.handle("fresh").result(timeout=10) == "new"
        forked = plain.fork("fresh", 2)  # a and b kept, the sleep runs again
        assert clock.finish(forked, timeout=10) == "new"
    assert calls == ["a", "b"]


def test_deprecate_patch_outside_a_workflow_or_with_a_bad_name_is_refused(make_engine) -> None:
    engine = _build(make_engine, durably.VirtualClock(T0), "plain", [])
    with engine:
        with pytest.raises(errors.UsageError):
            engine.deprecate_patch("use-b")
        with pytest.raises(errors.InvalidNameError):
            engine.deprecate_patch("")
