"""Replay and recovery inside one process: determinism, parking, unknown names."""

from __future__ import annotations

import pytest

import durably
from durably import Status, errors


def _register(engine: durably.Engine, order: list[str], log: list[str]):
    steps = {}
    for name in ("a", "b", "c"):

        def body(x: int, _n: str = name) -> int:
            log.append(_n)
            return x + 1

        body.__name__ = body.__qualname__ = name
        steps[name] = engine.step(name=name)(body)

    @engine.workflow(name="flow")
    def flow() -> int:
        x = 0
        for name in order:
            x = steps[name](x)
        return x

    return flow


def _crash_after_first_step(db_path: str) -> None:
    """Leave a PENDING workflow whose journal holds step 'a' at position 0."""
    from durably import _records as R
    from durably.journal import Journal, Record
    from durably.store import make_store

    store = make_store(db_path)
    store.open()
    journal = Journal(store.flush)
    journal.start()
    journal.submit(Record(R.START, ("w", "flow", "[[],{}]", None, None)))
    journal.submit(Record(R.STEP, ("w", 0, "a", "1", None, None, None)))
    journal.stop()
    store.close()


def test_recovery_resumes_after_the_last_recorded_step(make_engine, db_path) -> None:
    _crash_after_first_step(db_path)
    log: list[str] = []
    engine = make_engine()
    _register(engine, ["a", "b", "c"], log)
    with engine:
        assert engine.recovery.resumed == ["w"]
        assert engine.handle("w").result(timeout=10) == 3
    assert log == ["b", "c"]  # 'a' was recorded: never re-run


def test_renamed_step_parks_the_workflow_and_resume_after_fix(make_engine, db_path) -> None:
    _crash_after_first_step(db_path)
    log: list[str] = []
    engine = make_engine()
    _register(engine, ["b", "c"], log)  # the code changed: 'b' now comes first
    with engine:
        h = engine.handle("w")
        with pytest.raises(errors.WorkflowParkedError) as parked:  # at once, not a silent wait
            h.result(timeout=10)
        assert "'b'" in parked.value.reason and "'a'" in parked.value.reason
        info = h.info()
        assert info.status == Status.PENDING
        assert "code changed" in info.parked and "'b'" in info.parked and "'a'" in info.parked
        assert [s.name for s in engine.steps("w")] == ["a"]  # never marked failed
    assert log == []
    log2: list[str] = []
    engine2 = make_engine()
    _register(engine2, ["a", "b", "c"], log2)  # the fix: the old order is back
    with engine2:
        assert engine2.handle("w").result(timeout=10) == 3
        assert engine2.handle("w").info().parked is None
    assert log2 == ["b", "c"]


def test_user_code_cannot_swallow_nondeterminism(make_engine, db_path) -> None:
    _crash_after_first_step(db_path)
    engine = make_engine()

    @engine.step(name="z")
    def z() -> int:
        return 0

    @engine.workflow(name="flow")
    def flow() -> str:
        try:
            z()
        except Exception:
            return "swallowed"
        return "no"

    with engine:
        h = engine.handle("w")
        with pytest.raises(errors.WorkflowParkedError):
            h.result(timeout=10)
        assert h.status() == Status.PENDING and h.info().parked


def test_unknown_workflow_stays_pending_and_is_reported(make_engine, db_path, caplog) -> None:
    _crash_after_first_step(db_path)
    engine = make_engine()
    with caplog.at_level("WARNING", logger="durably"), engine:
        assert engine.recovery.unknown == [("w", "flow")]
        info = engine.handle("w").info()
        assert info.status == Status.PENDING and "flow" in info.parked
        with pytest.raises(errors.UnknownWorkflowError):
            engine.resume("w")
    assert "not registered" in caplog.text
    engine2 = make_engine()
    _register(engine2, ["a", "b", "c"], [])
    with engine2:  # registered again: it runs
        assert engine2.handle("w").result(timeout=10) == 3


def test_close_leaves_running_workflows_pending_for_the_next_open(make_engine) -> None:
    import threading

    engine = make_engine()
    started = threading.Event()
    release = threading.Event()
    log: list[int] = []

    @engine.step(name="s")
    def s(i: int) -> int:
        log.append(i)
        if i == 0:
            started.set()
            release.wait(10)
        return i

    @engine.workflow(name="loop")
    def loop() -> int:
        return sum(s(i) for i in range(3))

    engine.open()
    engine.start(loop, workflow_id="L")
    assert started.wait(10)
    threading.Timer(0.1, release.set).start()
    engine.close()  # stops at the next step boundary
    engine2 = make_engine()
    engine2.step(name="s")(lambda i: log.append(i) or i)
    engine2.workflow(name="loop")(loop.__wrapped__)
    with engine2:
        assert engine2.handle("L").result(timeout=10) == 3
    assert log.count(0) == 1


def test_recovering_many_parents_and_children_cannot_deadlock_the_pool(make_engine, db_path) -> None:
    """Regression (chaos seed 3): after a crash every pending parent and child
    is queued at once; parents waiting on children queued behind them used to
    fill every worker and wait forever."""
    from durably import _records as R
    from durably.journal import Journal, Record
    from durably.store import make_store

    store = make_store(db_path)
    store.open()
    journal = Journal(store.flush)
    journal.start()
    for i in range(6):
        parent, child = f"p{i}", f"p{i}/0"
        journal.submit(Record(R.START, (parent, "parent", "[[],{}]", None, None)))
        journal.submit(
            Record(R.START, (child, "child", f"[[{i}],{{}}]", parent, (parent, (0, None), "start:child", f'"{child}"')))
        )
    journal.stop()
    store.close()

    engine = make_engine(workers=2)

    @engine.workflow(name="child")
    def child(x: int) -> int:
        return x * 10

    @engine.workflow(name="parent")
    def parent() -> int:
        return engine.start(child, -1).result() + 1  # replays the recorded start

    with engine:
        assert len(engine.recovery.resumed) == 12
        assert sorted(engine.handle(f"p{i}").result(timeout=20) for i in range(6)) == [1, 11, 21, 31, 41, 51]
