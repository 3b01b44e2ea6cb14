"""Declare once, bind anywhere: a durably.Registry's workflows, steps,
queues and schedules bound to a file (or PostgreSQL) engine and to a
:memory: engine with a VirtualClock, calls resolving against the engine
running the workflow."""

from __future__ import annotations

import asyncio
import pickle
import time
from datetime import UTC, datetime
from typing import Any

import pytest

import durably
from durably import errors

from . import _declared as d

T0 = datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp()


@pytest.fixture(autouse=True)
def _clear() -> None:
    d.bodies.clear()


def _names(engine: durably.Engine) -> list[str]:
    return sorted(w.name for w in engine.list_workflows(limit=None))


def test_one_registry_bound_to_a_file_engine_and_a_memory_engine(make_engine) -> None:
    app = make_engine(registry=d.reg)
    test = durably.Engine(":memory:", clock=durably.VirtualClock(T0), registry=d.reg)
    with app, test:
        assert app.run(d.parent, 1) == [4, 7]  # child(1) = 2 + 2; the queued child(2) = 4 + 3
        assert test.run(d.parent, 10) == [31, 34]
        # Each engine recorded its own workflows: the children and the
        # enqueue resolved to the engine running the parent.
        assert _names(app) == _names(test) == ["tests._declared.child"] * 2 + ["tests._declared.parent"]
        parent_id = next(w.workflow_id for w in test.list_workflows() if w.name.endswith("parent"))
        assert [s.name for s in test.steps(parent_id)] == [
            "enqueue:tests._declared.child",
            "start:tests._declared.child",
        ]
        assert sorted(d.bodies) == ["double(1)", "double(10)", "double(11)", "double(2)"]


def test_async_workflow_and_step_resolve_to_the_running_engine(make_engine) -> None:
    with make_engine(registry=d.reg) as engine:
        assert engine.run(d.async_parent, 2) == 6 + 7
        assert asyncio.run(_start_async(engine)) == 9 + 10


async def _start_async(engine: durably.Engine) -> int:
    handle = await engine.start_async(d.async_parent, 3)
    return await handle.result_async()


def test_called_directly_outside_a_workflow_runs_on_the_one_open_engine(make_engine) -> None:
    with make_engine(registry=d.reg) as engine:
        assert d.child(4) == 8 + 5
        assert d.jobs.enqueue(d.child, 1).result(timeout=10) == 4
        assert _names(engine) == ["tests._declared.child"] * 2
    # A step outside a workflow is a plain call, bound or not.
    assert d.double(5) == 10


def test_unbound_declarations_raise_a_typed_error(make_engine) -> None:
    engine = make_engine()
    with engine:
        with pytest.raises(errors.UnboundError, match="does not include"):
            engine.start(d.child, 1)
        with pytest.raises(errors.UnboundError, match="no open engine"):
            d.child(1)
        with pytest.raises(errors.UnboundError, match="no open engine"):
            d.jobs.enqueue(d.child, 1)

        @engine.workflow()
        def calls_declared() -> int:
            return d.double(1)

        with pytest.raises(errors.WorkflowFailedError) as failed:
            engine.run(calls_declared)
        assert isinstance(failed.value.error, errors.UnboundError)
    with pytest.raises(errors.UsageError, match="outside a workflow"):
        d.count(1)


def test_binding_twice_is_idempotent_and_two_open_engines_need_a_choice(make_engine) -> None:
    engine = make_engine(registry=d.reg)
    assert engine.include(d.reg) is engine  # again: nothing changes
    other = durably.Engine(":memory:", registry=d.reg)
    with engine, other:
        assert engine.run(d.child, 1) == 4
        with pytest.raises(errors.UsageError, match="bound to 2 engines"):
            d.child(1)
    with pytest.raises(errors.UsageError, match="takes a durably.Registry"):
        engine.include(object())  # type: ignore[arg-type]


def test_a_later_declaration_binds_to_the_engines_already_bound(make_engine) -> None:
    reg = durably.Registry()
    with make_engine(registry=reg) as engine:

        @reg.workflow(name="late")
        def late(x: int) -> int:
            return x * 7

        assert engine.run(late, 3) == 21
        assert engine.run("late", 2) == 14


def test_engine_bound_and_declared_names_are_the_same(make_engine) -> None:
    """A workflow recorded by an engine-bound decorator is the declared one's."""
    reg = durably.Registry()

    def plain(x: int) -> int:
        return x

    declared = reg.workflow(plain)
    engine = make_engine()
    assert engine.workflow(plain).__name__ == declared.__name__
    with engine:
        engine.include(reg)
        assert engine.run(declared, 3) == 3


def test_a_declared_schedule_fires_on_the_bound_engine(make_engine) -> None:
    clock = durably.VirtualClock(T0)
    engine = make_engine(clock=clock, registry=[d.reg, d.ticks])
    with engine:
        assert [s.name for s in engine.list_schedules()] == ["declared-five"]
        time.sleep(0.05)
        clock.advance(300)
        handle = engine.handle("schedule:declared-five@2027-01-01T00:05:00+00:00") if _fired(engine) else None
        assert handle is not None
        assert handle.result(timeout=10) == "2027-01-01T00:05:00+00:00"


def _fired(engine: durably.Engine, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not any(w.name == "tests._declared.tick" for w in engine.list_workflows()):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_declarations_check_their_options_at_once() -> None:
    reg = durably.Registry()
    with pytest.raises(errors.UsageError, match="retries"):
        reg.step(retries=-1)(lambda: None)
    with pytest.raises(errors.UsageError, match="plain def"):

        @reg.transaction()
        async def not_plain(db: durably.Tx) -> None: ...

    with pytest.raises(errors.UsageError, match="concurrency"):
        reg.queue("q", concurrency=0)
    with pytest.raises(errors.UsageError, match="not a workflow declared on this registry"):
        reg.schedule("s", "* * * * *", print)  # type: ignore[arg-type]
    with pytest.raises(errors.UsageError, match="already a durably step"):
        reg.step()(d.double)


def test_a_client_engine_starts_declared_workflows_an_executor_runs(make_engine, db_path) -> None:
    """The same registry on a client (starts, reads) and on the executor
    that runs the workflows, on one database."""
    with make_engine(registry=d.reg) as executor, make_engine(db_path, client=True, registry=d.reg) as client:
        handle = client.start(d.child, 5)
        assert handle.result(timeout=10) == 10 + 6
        assert client.run(d.parent, 2, timeout=30) == [4 + 3, 6 + 4]
        assert {w.executor for w in executor.list_workflows(limit=None)} == {executor.executor_id}


def test_aio_awaits_a_sync_step_in_an_async_workflow(make_engine) -> None:
    """``step.aio(...)``: the same durable call, typed as awaitable; outside
    a workflow an awaitable of the plain call."""
    reg = durably.Registry()

    @reg.workflow(name="aio_flow")
    async def aio_flow(x: int) -> int:
        return await d.double.aio(x) + await d.count.aio(x)

    with make_engine(registry=[d.reg, reg]) as engine:
        handle = engine.start(aio_flow, 4)
        assert handle.result(timeout=10) == 8 + 5
        assert [s.name for s in engine.steps(handle.workflow_id)] == ["tests._declared.double", "tests._declared.count"]
    assert asyncio.run(_outside(d.double.aio, 6)) == 12
    assert d.bodies == ["double(4)", "double(6)"]


async def _outside(call: Any, x: int) -> Any:
    return await call(x)


def test_declarations_pickle_by_reference() -> None:
    """As the functions they replace (multiprocessing, the pickle codec)."""
    for declared in (d.parent, d.double, d.count, d.async_parent):
        assert pickle.loads(pickle.dumps(declared)) is declared


def _release(version: int) -> durably.Registry:
    """An application declared on a registry: release 1, and release 2 with
    its steps swapped (a change a deployed history would park on)."""
    reg = durably.Registry()

    @reg.step(name="first")
    def first(x: int) -> int:
        return x + 1

    @reg.step(name="second")
    def second(x: int) -> int:
        return x * 2

    @reg.workflow(name="pipeline")
    def pipeline(x: int) -> int:
        return second(first(x)) if version == 1 else first(second(x))

    return reg


def test_the_replayer_checks_a_registry_against_a_recorded_history(make_engine, db_path) -> None:
    """durably.testing.replay takes the registry as the application: the
    history release 1 recorded replays under release 1 and parks under
    release 2, naming both steps."""
    from durably import testing

    with make_engine(registry=_release(1)) as engine:
        assert engine.run("pipeline", 3, workflow_id="p-1") == 8
    assert testing.replay(db_path, _release(1)).ok
    report = testing.replay(db_path, _release(2))
    assert not report.ok
    assert [(f.workflow_id, f.outcome) for f in report.failures] == [("p-1", "parked")]
    assert "first" in str(report.failures[0]) and "second" in str(report.failures[0])


def test_the_crash_check_runs_a_declared_workflow(db_path, tmp_path) -> None:
    """durably.testing.crash_check on a workflow of a registry: its child
    processes bind the module's registries to an engine on the check's
    database; killed at each step boundary, the workflow ends as it would
    have (the step bodies are pure: nothing to report but re-runs)."""
    from durably import testing

    report = testing.crash_check(d.child, 3, db=db_path, random_kills=0, max_points=2, workdir=tmp_path)
    report.assert_ok()
    assert report.reference == {"status": "SUCCESS", "output": "10", "error": None}  # 2 * 3 + (3 + 1)
    assert ("step.after_body", "tests._declared.double") in [(p.point, p.step) for p in report.points]
