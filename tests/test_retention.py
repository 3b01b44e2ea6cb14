"""Retention: ``engine.gc(older_than, statuses)`` and ``Engine(retention=...)``
delete finished workflows with every row that belongs to them, in small
batches, and never a workflow that is still needed (pending, parked,
enqueued, or a child whose parent stays). Both backends.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import apsw
import pytest

import durably
from durably import testing

EMPTY = {"workflows": 0, "steps": 0, "messages": 0, "events": 0, "queue_entries": 0, "send_keys": 0, "notices": 0}


def _kinds(engine: durably.Engine) -> dict[str, int]:
    """Rows of the tables gc deletes from (schedules and executors are not a workflow's)."""
    counts = testing.counts(engine)
    return {k: counts[k] for k in EMPTY}


def _report_rows(report: durably.GcReport) -> dict[str, int]:
    return {k: getattr(report, k) for k in EMPTY}


def _build(engine: durably.Engine) -> dict[str, Any]:
    @engine.step()
    def double(x: int) -> int:
        return 2 * x

    @engine.workflow(name="work")
    def work(x: int) -> int:
        engine.set_event("progress", x)
        return double(x) + double(x + 1)

    @engine.workflow(name="boom")
    def boom() -> None:
        double(1)
        raise ValueError("boom")

    @engine.workflow(name="waiter")
    def waiter() -> str:
        double(0)
        return str(engine.recv("go"))

    @engine.workflow(name="parent")
    def parent() -> str:
        child = engine.start(work, 10)
        child.result()
        return str(engine.recv("go"))

    return {"work": work, "boom": boom, "waiter": waiter, "parent": parent}


def _settle(engine: durably.Engine, ids: list[str], status: str = "PENDING") -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(engine.handle(i).status() != status for i in ids):
            return
        time.sleep(0.01)
    raise AssertionError(f"still {status}: {ids}")


def test_gc_deletes_finished_workflows_with_every_row_and_counts_exactly(
    make_engine: Callable[..., durably.Engine],
) -> None:
    engine = make_engine()
    wf = _build(engine)
    q = engine.queue("q")
    with engine:
        done = [engine.start(wf["work"], i, workflow_id=f"done-{i}") for i in range(5)]
        queued = q.enqueue(wf["work"], 7, workflow_id="queued", dedup_key="d1")
        failed = engine.start(wf["boom"], workflow_id="failed")
        talk = engine.start(wf["waiter"], workflow_id="talk")
        # a keyed client send, consumed; then a message to a finished workflow, never consumed
        _wait_steps(engine, "talk", 1)
        engine.send("talk", "hi", topic="go", idempotency_key="k1")
        for h in [*done, queued, talk]:
            h.result(timeout=20)
        with pytest.raises(durably.WorkflowFailedError):
            failed.result(timeout=20)
        engine.send("done-0", "late", topic="nobody-listens")
        before = _kinds(engine)
        assert before["send_keys"] == 1 and before["queue_entries"] == 1 and before["messages"] == 1
        assert before["events"] == 6 and before["workflows"] == 8
        keep = engine.start(wf["waiter"], workflow_id="keep")  # PENDING: stays, with its rows
        _wait_steps(engine, "keep", 1)
        kept = {"steps": len(testing.steps(engine, "keep")), "notices": 0}
        kept["notices"] = sum(1 for n in testing.notices(engine) if n.workflow_id == "keep")

        report = engine.gc(older_than=0)

        after = _kinds(engine)
        assert after == {**EMPTY, "workflows": 1, "steps": kept["steps"], "notices": kept["notices"]}
        removed = {k: before[k] + (1 if k == "workflows" else kept.get(k, 0)) - after[k] for k in EMPTY}
        assert _report_rows(report) == removed
        assert report.workflows == 8 and report.batches >= 1 and report.longest_batch > 0
        assert [w.workflow_id for w in testing.workflows(engine)] == ["keep"]
        assert testing.send_keys(engine) == [] and testing.queue_entries(engine) == []
        _assert_whole(engine)
        assert engine.gc(older_than=0) == durably.GcReport()  # nothing left to do: no batch at all
        engine.send("keep", "bye", topic="go")
        assert keep.result(timeout=20) == "bye"


def _wait_steps(engine: durably.Engine, workflow_id: str, n: int) -> None:
    deadline = time.monotonic() + 20
    while len(testing.steps(engine, workflow_id)) < n:
        assert time.monotonic() < deadline, f"{workflow_id} recorded fewer than {n} steps"
        time.sleep(0.01)


def test_gc_never_deletes_pending_enqueued_parked_or_children_of_a_pending_parent(
    make_engine: Callable[..., durably.Engine], db_path: str
) -> None:
    first = make_engine()

    @first.workflow(name="gone")
    def gone() -> str:
        return str(first.recv("go"))

    with first:
        first.start(gone, workflow_id="parked")
        _wait_steps(first, "parked", 0)
        time.sleep(0.1)
    engine = make_engine()  # "gone" is not registered here: its workflow is parked
    wf = _build(engine)
    q = engine.queue("slow", concurrency=1)
    with engine:
        assert engine.handle("parked").status() == "PENDING"
        parent = engine.start(wf["parent"], workflow_id="parent")
        _wait_child(engine, "parent")
        waiting = engine.start(wf["waiter"], workflow_id="waiting")
        blocker = q.enqueue(wf["waiter"], workflow_id="blocker")
        enqueued = q.enqueue(wf["work"], 3, workflow_id="enqueued")
        delayed = q.enqueue(wf["work"], 4, workflow_id="delayed", delay=3600)
        finished = engine.start(wf["work"], 1, workflow_id="finished")
        finished.result(timeout=20)
        _wait_steps(engine, "blocker", 1)
        assert enqueued.status() == "ENQUEUED" and delayed.status() == "ENQUEUED"
        child = testing.workflows(engine)
        child_ids = [w.workflow_id for w in child if w.parent_id == "parent"]
        assert len(child_ids) == 1 and engine.handle(child_ids[0]).status() == "SUCCESS"

        report = engine.gc(older_than=0)

        assert report.workflows == 1  # "finished" alone
        left = {w.workflow_id for w in testing.workflows(engine)}
        assert left == {"parked", "parent", child_ids[0], "waiting", "blocker", "enqueued", "delayed"}
        assert testing.steps(engine, child_ids[0]) != []
        # the parent ends: now its child may go with it
        engine.send("parent", "done", topic="go")
        assert parent.result(timeout=20) == "done"
        report = engine.gc(older_than=0)
        assert report.workflows == 2
        left = {w.workflow_id for w in testing.workflows(engine)}
        assert left == {"parked", "waiting", "blocker", "enqueued", "delayed"}
        for wid in ("waiting", "blocker"):
            engine.send(wid, "ok", topic="go")
        assert waiting.result(timeout=20) == "ok" and blocker.result(timeout=20) == "ok"
        assert enqueued.result(timeout=20) == 2 * 3 + 2 * 4


def _wait_child(engine: durably.Engine, parent: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        kids = [w for w in testing.workflows(engine) if w.parent_id == parent and w.status == "SUCCESS"]
        if kids and testing.steps(engine, parent):
            return
        assert time.monotonic() < deadline, "the child did not finish"
        time.sleep(0.01)


def test_gc_honours_the_cut_off_and_the_statuses(make_engine: Callable[..., durably.Engine]) -> None:
    # The cut-off is the engine's clock minus older_than; end times are the database's.
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    wf = _build(engine)
    with engine:
        engine.run(wf["work"], 1, workflow_id="ok-old")
        with pytest.raises(durably.WorkflowFailedError):
            engine.run(wf["boom"], workflow_id="err-old")
        assert engine.gc(older_than=timedelta(hours=1)) == durably.GcReport()  # they ended just now
        clock.advance(7200)  # the engine's clock: two hours later
        assert engine.gc(older_than=timedelta(hours=3)).workflows == 0
        report = engine.gc(older_than=3600, statuses=["ERROR", "CANCELLED"])
        assert _report_rows(report) == {**EMPTY, "workflows": 1, "steps": 1}
        assert [w.workflow_id for w in testing.workflows(engine)] == ["ok-old"]
        report = engine.gc(older_than=timedelta(hours=1), statuses=("SUCCESS", "SUCCESS"))
        assert _report_rows(report) == {**EMPTY, "workflows": 1, "steps": 3, "events": 1, "notices": 1}
        assert testing.workflows(engine) == []


def test_a_workflow_id_used_again_after_gc_starts_anew(make_engine: Callable[..., durably.Engine]) -> None:
    engine = make_engine()
    wf = _build(engine)
    with engine:
        assert engine.run(wf["work"], 1, workflow_id="order-1") == 2 + 4
        assert engine.run(wf["work"], 5, workflow_id="order-1") == 2 + 4  # idempotent: the first one's result
        engine.gc(older_than=0)
        assert engine.run(wf["work"], 5, workflow_id="order-1") == 10 + 12  # its row is gone: a new run


def test_many_workflows_go_in_several_batches_children_with_their_parents(
    make_engine: Callable[..., durably.Engine],
) -> None:
    engine = make_engine()

    @engine.workflow(name="leaf")
    def leaf(i: int) -> int:
        return i

    @engine.workflow(name="tree")
    def tree(i: int) -> int:
        return leaf(i) + leaf(i + 1)

    with engine:
        handles = [engine.start(tree, i) for i in range(400)]
        for h in handles:
            h.result(timeout=60)
        assert testing.counts(engine)["workflows"] == 1200
        report = engine.gc(older_than=0)
        assert report.workflows == 1200 and report.batches >= 2
        assert testing.counts(engine)["workflows"] == 0 and testing.counts(engine)["steps"] == 0


def test_background_retention_on_the_engines_clock(make_engine: Callable[..., durably.Engine]) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock, retention=timedelta(days=1))
    wf = _build(engine)
    with engine:
        engine.run(wf["work"], 1, workflow_id="a")
        waiting = engine.start(wf["waiter"], workflow_id="waiting")
        _wait_steps(engine, "waiting", 1)
        clock.advance(3600)  # passes ran (the first soon after open, then every 2.4 h): nothing old enough
        time.sleep(0.3)
        assert {w.workflow_id for w in testing.workflows(engine)} == {"a", "waiting"}
        clock.advance(86400)  # a day later: "a" ended more than a day ago
        _until(lambda: {w.workflow_id for w in testing.workflows(engine)} == {"waiting"})
        engine.run(wf["work"], 2, workflow_id="b")
        clock.advance(86400 + 9000)
        _until(lambda: {w.workflow_id for w in testing.workflows(engine)} == {"waiting"})
        engine.send("waiting", "x", topic="go")
        assert waiting.result(timeout=20) == "x"


def _until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_gc_on_a_client_engine_while_an_executor_runs(make_engine: Callable[..., durably.Engine]) -> None:
    executor = make_engine()
    wf = _build(executor)
    client = make_engine(client=True)
    stop = threading.Event()
    started: list[str] = []
    errors: list[BaseException] = []

    def load() -> None:
        i = 0
        try:
            while not stop.is_set():
                wid = f"live-{i}"
                executor.run(wf["work"], i, workflow_id=wid)
                started.append(wid)
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with executor:
        for i in range(300):
            executor.start(wf["work"], i, workflow_id=f"old-{i}")
        _until(lambda: testing.counts(executor)["workflows"] == 300 and _all_done(executor))
        waiting = executor.start(wf["waiter"], workflow_id="waiting")
        worker = threading.Thread(target=load)
        worker.start()
        try:
            with client:
                total = durably.GcReport()
                for _ in range(3):
                    total += client.gc(older_than=0)
        finally:
            stop.set()
            worker.join()
        assert errors == []
        assert total.workflows >= 300  # the old ones, and live ones that had ended
        left = {w.workflow_id for w in testing.workflows(executor)}
        assert "waiting" in left and not any(w.startswith("old-") for w in left)
        _assert_whole(executor)
        for w in testing.workflows(executor):
            assert w.status == "PENDING" or w.workflow_id.startswith("live-")
            assert len(testing.steps(executor, w.workflow_id)) == (1 if w.workflow_id == "waiting" else 3)
        executor.send("waiting", "done", topic="go")
        assert waiting.result(timeout=20) == "done"


def _assert_whole(engine: durably.Engine) -> None:
    """No row left behind by a deleted workflow (every row's workflow exists)."""
    ids = {w.workflow_id for w in testing.workflows(engine)}
    counts = testing.counts(engine)
    assert counts["steps"] == sum(len(testing.steps(engine, wid)) for wid in ids)
    assert {e.workflow_id for e in testing.events(engine)} <= ids
    assert {m.dest for m in testing.messages(engine)} <= ids
    assert {q.workflow_id for q in testing.queue_entries(engine)} <= ids
    assert {k.dest for k in testing.send_keys(engine)} <= ids
    assert {n.workflow_id for n in testing.notices(engine) if n.workflow_id is not None} <= ids


def _all_done(engine: durably.Engine) -> bool:
    return all(w.status != "PENDING" for w in testing.workflows(engine))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"older_than": -1}, ">= 0"),
        ({"older_than": timedelta(seconds=-5)}, ">= 0"),
        ({"older_than": math.nan}, ">= 0"),
        ({"older_than": math.inf}, ">= 0"),
        ({"older_than": "7d"}, "timedelta or a number"),
        ({"older_than": True}, "timedelta or a number"),
        ({"older_than": None}, "timedelta or a number"),
        ({"older_than": 0, "statuses": ["PENDING"]}, "finished statuses"),
        ({"older_than": 0, "statuses": ["ENQUEUED"]}, "finished statuses"),
        ({"older_than": 0, "statuses": ["SUCCES"]}, "finished statuses"),
        ({"older_than": 0, "statuses": []}, "empty list"),
        ({"older_than": 0, "statuses": "SUCCESS"}, "a list of statuses"),
        ({"older_than": 0, "statuses": 3}, "a list of statuses"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_deleted(
    make_engine: Callable[..., durably.Engine], kwargs: dict[str, Any], match: str
) -> None:
    engine = make_engine()
    wf = _build(engine)
    with engine:
        engine.run(wf["work"], 1)
        before = testing.counts(engine)
        with pytest.raises(durably.UsageError, match=match):
            engine.gc(**kwargs)
        assert testing.counts(engine) == before


@pytest.mark.parametrize("retention", [0, -1, timedelta(0), math.nan, "1d", True])
def test_bad_retention_is_refused(make_engine: Callable[..., durably.Engine], retention: Any) -> None:
    with pytest.raises(durably.UsageError, match="retention"):
        make_engine(retention=retention)


def test_a_client_engine_takes_no_retention(make_engine: Callable[..., durably.Engine]) -> None:
    with pytest.raises(durably.UsageError, match="client engine"):
        make_engine(client=True, retention=60)


def test_gc_needs_an_open_engine_and_refuses_workflow_code(make_engine: Callable[..., durably.Engine]) -> None:
    engine = make_engine()

    @engine.workflow()
    def inside() -> str:
        try:
            engine.gc(older_than=0)
        except durably.UsageError as exc:
            return str(exc)
        return "no error"

    with pytest.raises(durably.NotOpenError):
        engine.gc(older_than=0)
    with engine:
        assert "inside a workflow" in engine.run(inside)


@pytest.mark.sqlite_only
def test_a_new_file_shrinks_after_gc(make_engine: Callable[..., durably.Engine], db_path: str) -> None:
    engine = make_engine()

    @engine.step()
    def blob(i: int) -> str:
        return "x" * 4000 + str(i)

    @engine.workflow()
    def big(i: int) -> int:
        return len(blob(i)) + len(blob(i + 1))

    with engine:
        for h in [engine.start(big, i) for i in range(1500)]:
            h.result(timeout=60)
    grown = _file_pages(db_path)
    with engine:
        report = engine.gc(older_than=0)
        assert report.workflows == 1500 and report.pages_freed > 1000
    shrunk = _file_pages(db_path)
    assert shrunk["auto_vacuum"] == 2  # INCREMENTAL, set when the file was created
    assert shrunk["page_count"] < grown["page_count"] / 4 and shrunk["freelist_count"] < 256


def _file_pages(path: str) -> dict[str, int]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {p: int(conn.pragma(p)) for p in ("page_count", "freelist_count", "auto_vacuum")}
    finally:
        conn.close()
