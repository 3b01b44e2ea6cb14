"""Declare once, bind anywhere: a durably.Registry's workflows, steps,
queues, schedules and durable calls (reg.sleep, reg.patched, reg.send ...)
bound to a file (or PostgreSQL) engine and to a :memory: engine with a
VirtualClock, calls resolving against the engine running the workflow."""

from __future__ import annotations

import asyncio
import gc
import pickle
import time
import weakref
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


# -- the durable calls on the registry (reg.sleep, reg.now, reg.patched, reg.send, reg.recv ...)


def test_a_declared_workflow_sleeps_on_the_engine_running_it(make_engine) -> None:
    """reg.sleep and reg.now are the running engine's: a day of virtual time
    on the :memory: engine, a real 50 ms on the file (or PostgreSQL) engine,
    both bound and open at once."""
    clock = durably.VirtualClock(T0)
    app = make_engine(registry=d.reg)
    test = durably.Engine(":memory:", clock=clock, registry=d.reg)
    with app, test:
        day = test.start(d.nap, 86400)
        assert clock.finish(day, timeout=10) == 86400.0
        assert [s.name for s in test.steps(day.workflow_id)] == ["now", "sleep", "now"]
        day_async = test.start(d.nap_async, 86400)
        assert clock.finish(day_async, timeout=10) == 86400.0
        assert "sleep" in [s.name for s in test.steps(day_async.workflow_id)]
        real = app.start(d.nap, 0.05)
        assert 0.05 <= real.result(timeout=10) < 3600
        assert [s.name for s in app.steps(real.workflow_id)] == ["now", "sleep", "now"]
        assert app.list_workflows(name=d.nap_async) == []  # each call went to the engine running it


def test_reg_patched_in_a_declared_workflow_replays_after_a_restart(make_engine) -> None:
    clock, recorded = durably.VirtualClock(T0), ["patch:declared-change", "tests._declared.double", "sleep"]
    with make_engine(clock=clock, registry=d.reg) as first:
        first.start(d.patched_flow, 2, workflow_id="patched-1")
        clock.wait_for_timers(1)  # in its sleep: the marker and the step recorded
        assert [s.name for s in first.steps("patched-1")] == recorded
    with make_engine(clock=clock, registry=d.reg) as second:
        assert clock.finish(second.handle("patched-1"), timeout=10) == "new:4"  # the patched path, replayed
        assert [s.name for s in second.steps("patched-1")] == recorded  # nothing recorded again
    assert d.bodies == ["double(2)"]  # replay ran nothing again


@pytest.mark.parametrize("listen", [d.listener, d.listener_async], ids=["sync", "async"])
def test_reg_send_and_recv_between_two_declared_workflows(make_engine, listen) -> None:
    with make_engine(registry=d.reg) as engine:
        listening = engine.start(listen, workflow_id="listener-1")
        sent = engine.options(workflow_id="greeter-1").run(d.greeter, "listener-1", "hello")
        assert len(sent) == 36  # reg.uuid4(), recorded
        assert listening.result(timeout=10) == "hello"
        assert [s.name for s in engine.steps("greeter-1")] == ["send", "set_event:sent", "uuid4"]
        assert "recv:greeting" in [s.name for s in engine.steps("listener-1")]
        # Outside a workflow: the one open engine bound.
        assert d.reg.get_event("greeter-1", "sent", timeout=10) == "hello"
        assert d.reg.get_all_events("greeter-1") == {"sent": "hello"}


def test_reg_calls_outside_a_workflow_follow_the_registry_rule(make_engine) -> None:
    with pytest.raises(errors.UnboundError, match="no open engine"):
        durably.Registry().sleep(1)
    with pytest.raises(errors.UnboundError, match="no open engine"):
        asyncio.run(durably.Registry().now_async())
    clock = durably.VirtualClock(T0)
    with durably.Engine(":memory:", clock=clock, registry=d.reg):
        assert d.reg.now() == datetime.fromtimestamp(T0, UTC)  # that engine's clock
        with pytest.raises(errors.UsageError, match="only valid inside a workflow"):
            d.reg.recv("greeting")  # the engine's own rule, as engine.recv
        with make_engine(registry=d.reg):
            with pytest.raises(errors.UsageError, match="bound to 2 engines"):
                d.reg.now()


def test_reg_calls_in_a_workflow_of_an_engine_without_the_registry_raise(make_engine) -> None:
    engine = make_engine()

    @engine.workflow()
    def naps() -> None:
        d.reg.sleep(1)

    with engine, durably.Engine(":memory:", registry=d.reg):  # bound elsewhere, not here
        with pytest.raises(errors.WorkflowFailedError) as failed:
            engine.run(naps)
        assert isinstance(failed.value.error, errors.UnboundError)
        assert "not bound to the engine running this workflow" in str(failed.value.error)


def test_an_engine_that_includes_a_registry_is_freed_by_reference_counting() -> None:
    gc.collect()
    gc.disable()
    try:
        engine = durably.Engine(":memory:", registry=d.reg)
        with engine:
            assert engine.run(d.child, 1) == 4
        ref = weakref.ref(engine)
        del engine
        assert ref() is None
    finally:
        gc.enable()
