"""The store contract (src/durably/store/contract.py), exercised directly on
a store, without an engine: what each record kind and op guarantees,
atomically, including claims and fencing between two executors.

The ``backend`` fixture builds stores; a second backend joins by adding a
parameter, and is held to the same tests.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from durably import _records as R
from durably import errors
from durably.journal import Record
from durably.store import make_store
from durably.store.contract import StoreContract

from .conftest import pg_schema_url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    made: list[Any] = []
    if request.param == "postgresql":
        urls = pg_schema_url()
        path = next(urls)
        request.addfinalizer(lambda: next(urls, None))
    else:
        path = str(tmp_path / "contract.db")

    def make() -> Any:
        store = make_store(path)
        store.open("json")
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _flush(store: Any, *recs: Record) -> list[Record]:
    store.flush(list(recs))
    return list(recs)


def _op(store: Any, op: str, *args: Any) -> Any:
    (rec,) = _flush(store, Record(R.OP, (None, None, op, op, args)))
    if rec.error is not None:
        raise rec.error
    return rec.result[0]


def _register(store: Any, eid: str, lease: float, pid: int = 1) -> None:
    """Register ``eid`` with a lease of ``lease`` seconds on the store's clock
    (negative: already run out)."""
    store.executor = store.start_owner = eid
    store.app_version = "v1"
    _op(store, "register_executor", eid, pid, None, "v1", lease)


def test_the_store_fulfils_the_contract(backend) -> None:
    assert isinstance(backend(), StoreContract)


def test_start_is_idempotent_and_complete_applies_only_while_pending(backend) -> None:
    store = backend()
    first, again = _flush(
        store,
        Record(R.START, ("w", "flow", "[[],{}]", None, None)),
        Record(R.START, ("w", "flow", "[[],{}]", None, None)),
    )
    assert first.result is None and again.result == ("flow", "PENDING")
    _flush(store, Record(R.WRITE, ("cancel", (None, "w"))))
    (done,) = _flush(store, Record(R.COMPLETE, ("SUCCESS", "1", None, "w")))
    assert done.error is None and store.get_workflow("w")[2] == "CANCELLED"  # a cancel wins


def test_a_rejected_step_fails_alone_and_the_batch_commits(backend) -> None:
    store = backend()
    _flush(store, Record(R.START, ("w", "flow", "[[],{}]", None, None)))
    recs = _flush(
        store,
        Record(R.STEP, ("w", 0, "a", "1", None, None, None)),
        Record(R.STEP, ("w", 0, "dup", "2", None, None, None)),
        Record(R.STEP, ("w", 1, "b", "3", None, None, None)),
    )
    assert [type(r.error) for r in recs] == [type(None), errors.ConstraintError, type(None)]
    assert [r[1] for r in store.load_steps("w")] == ["a", "b"]


def test_a_message_is_consumed_once_and_its_notice_is_visible(backend) -> None:
    store = backend()
    _flush(store, Record(R.START, ("w", "flow", "[[],{}]", None, None)))
    last = store.last_notice()
    _op(store, "send", "w", "t", '"hi"')
    assert [(k, w, d) for _i, k, w, d in store.notices_since(last)] == [("msg", "w", "t")]
    recv = [Record(R.OP, ("w", (i, None), "recv:t", "recv", ("w", "t", False))) for i in range(2)]
    store.flush(recv)
    assert recv[0].result == ('"hi"', None) and recv[1].result is R.NOTHING


def test_a_cancel_leaves_a_notice_for_other_processes(backend) -> None:
    store = backend()
    _flush(store, Record(R.START, ("w", "flow", "[[],{}]", None, None)))
    last = store.last_notice()
    _flush(store, Record(R.WRITE, ("cancel", (None, "w"))))
    assert [(k, w) for _i, k, w, _d in store.notices_since(last)] == [("cancel", "w")]


def test_claims_take_only_what_no_live_executor_owns(backend) -> None:
    x, y = backend(), backend()
    _register(x, "X", 60)
    _register(y, "Y", 60)
    _flush(x, Record(R.START, ("mine", "flow", "[[],{}]", None, None)))  # owned by X
    x.start_owner = None
    _flush(x, Record(R.START, ("free", "flow", "[[],{}]", None, None)))  # a client's: no owner
    names = json.dumps(["flow"])
    taken = _op(y, "claim", "Y", "v1", names, "[]", "[]", 100, None)
    assert [(r[0], r[3], r[4]) for r in taken] == [("free", 0, 1)]  # no attempt counted: it had no owner
    assert _op(y, "claim", "Y", "v1", names, "[]", "[]", 100, None) == []
    _op(x, "stop_executor", "X")  # a clean close releases "mine"
    taken = _op(y, "claim", "Y", "v1", names, "[]", "[]", 100, None)
    assert [(r[0], r[3]) for r in taken] == [("mine", 0)]
    # a workflow started by an executor of v1 is not taken by one of v2
    x2 = backend()
    _register(x2, "X2", 60)
    _flush(x2, Record(R.START, ("other", "flow", "[[],{}]", None, None)))
    _op(x2, "stop_executor", "X2")
    assert _op(y, "claim", "Y", "v2", names, "[]", "[]", 100, None) == []
    assert [r[0] for r in _op(y, "claim", "Y", "v1", names, "[]", "[]", 100, None)] == ["other"]


def test_others_live_sees_a_live_executor_and_not_a_stopped_or_expired_one(backend) -> None:
    x, y = backend(), backend()
    assert not x.others_live("X")  # nobody registered
    _register(x, "X", 60, pid=os.getpid())
    assert not x.others_live("X") and y.others_live("Y")
    _op(x, "stop_executor", "X")
    assert not y.others_live("Y")
    _register(x, "X2", -1, pid=os.getpid())  # its lease has run out
    assert not y.others_live("Y")


def test_an_expired_lease_or_a_dead_process_lets_another_executor_take_over(backend) -> None:
    x, y = backend(), backend()
    _register(x, "X", 60)
    _register(y, "Y", 60)
    _flush(x, Record(R.START, ("a", "flow", "[[],{}]", None, None)))
    names = json.dumps(["flow"])
    assert _op(y, "claim", "Y", "v1", names, "[]", "[]", 100, None) == []
    # X's process is dead on this host: taken at once, one recovery attempt counted
    taken = _op(y, "claim", "Y", "v1", names, json.dumps(["X"]), "[]", 100, None)
    assert [(r[0], r[3], r[4]) for r in taken] == [("a", 1, 1)]
    # Y's lease runs out (its heartbeat stops): X's claim takes it back
    _op(y, "heartbeat", "Y", -1.0)
    taken = _op(x, "claim", "X", "v1", names, "[]", "[]", 100, None)
    assert [(r[0], r[4]) for r in taken] == [("a", 2)]


def test_fencing_refuses_the_records_of_a_workflow_taken_over(backend) -> None:
    x, y = backend(), backend()
    _register(x, "X", 60)
    _register(y, "Y", 60)
    _flush(
        x, Record(R.START, ("a", "flow", "[[],{}]", None, None)), Record(R.START, ("b", "flow", "[[],{}]", None, None))
    )
    x.owned.update({"a": 0, "b": 0})
    lost: list[list[str]] = []
    x.on_fenced = lost.append
    _flush(x, Record(R.STEP, ("a", 0, "s", "1", None, None, None)))
    # X is paused past its lease: Y takes "a" over (only "a": the claim is limited to it)
    _op(x, "heartbeat", "X", -1.0)
    taken = _op(y, "claim", "Y", "v1", json.dumps(["flow"]), "[]", "[]", 100, json.dumps(["a"]))
    assert [r[0] for r in taken] == ["a"]
    late = _flush(
        x,
        Record(R.STEP, ("a", 1, "s", "2", None, None, None)),
        Record(R.STEP, ("b", 0, "s", "3", None, None, None)),
        Record(R.COMPLETE, ("SUCCESS", "9", None, "a")),
    )
    assert isinstance(late[0].error, errors.FencedError) and isinstance(late[2].error, errors.FencedError)
    assert late[1].error is None  # "b" is still X's
    assert lost == [["a"]]
    assert [r[0] for r in x.load_steps("a")] == [0] and x.get_workflow("a")[2] == "PENDING"
    assert [r[0] for r in x.load_steps("b")] == [0]
    # the lone-step path (a batch of one step record) is fenced too
    (alone,) = _flush(x, Record(R.STEP, ("a", 5, "s", "4", None, None, None)))
    assert isinstance(alone.error, errors.FencedError) and [r[0] for r in x.load_steps("a")] == [0]


def test_a_registration_lost_before_it_was_made_is_fenced_at_the_next_batch(backend) -> None:
    """``own`` registers a workflow outside the writer (a relaunch after
    ``still_owns``): a change of owner the writer already saw, before the
    registration, must still fence it. Its next record is refused, on the
    lone-step path too, and the other workflows are not re-checked for it."""
    x, y = backend(), backend()
    _register(x, "X", 60)
    _register(y, "Y", 60)
    _flush(
        x, Record(R.START, ("a", "flow", "[[],{}]", None, None)), Record(R.START, ("b", "flow", "[[],{}]", None, None))
    )
    x.owned["b"] = 0
    lost: list[list[str]] = []
    x.on_fenced = lost.append
    _op(x, "heartbeat", "X", -1.0)  # X paused past its lease: Y takes "a" over
    taken = _op(y, "claim", "Y", "v1", json.dumps(["flow"]), "[]", "[]", 100, json.dumps(["a"]))
    assert [r[0] for r in taken] == ["a"]
    (seen,) = _flush(x, Record(R.STEP, ("b", 0, "s", "1", None, None, None)))  # X's writer sees the change
    assert seen.error is None and lost == []
    x.own("a", 0)  # a stale registration, made after that
    (late,) = _flush(x, Record(R.STEP, ("a", 0, "s", "2", None, None, None)))
    assert isinstance(late.error, errors.FencedError)
    assert lost == [["a"]] and x.load_steps("a") == []
    (more,) = _flush(x, Record(R.STEP, ("b", 1, "s", "3", None, None, None)))
    assert more.error is None and lost == [["a"]]


def test_a_queue_claim_counts_what_other_executors_run(backend) -> None:
    x, y = backend(), backend()
    _register(x, "X", 60)
    _register(y, "Y", 60)
    for i in range(5):
        _op(x, "enqueue", f"q{i}", "slot", "[[],{}]", None, None, "q", 0, 0.0, None, lambda i: i)
    claimed, _, _ = _op(x, "claim_queue", "X", "v1", "q", 2, None, None, 64)
    assert len(claimed) == 2
    claimed_y, _, _ = _op(y, "claim_queue", "Y", "v1", "q", 2, None, None, 64)
    assert claimed_y == []
    _flush(x, Record(R.COMPLETE, ("SUCCESS", None, None, claimed[0][0])))
    claimed_y, _, _ = _op(y, "claim_queue", "Y", "v1", "q", 2, None, None, 64)
    assert len(claimed_y) == 1


def test_prune_deletes_a_bounded_number_of_gone_executors_and_keeps_an_owner(backend) -> None:
    """Issue 19 item 8: the lease keeper's prune (at most ``limit`` rows a
    round). Executors killed two days ago go; one still owning a PENDING
    workflow stays (its workflow is not taken over yet), and so does a live one."""
    store = backend()
    old = -2 * 86400  # a lease that ran out two days ago (seconds from now on the store's clock)
    for i in range(5):
        _register(store, f"D{i}", old)  # killed without close()
    _register(store, "OWNER", old)
    _flush(store, Record(R.START, ("w", "flow", "[[],{}]", None, None)))  # owned by OWNER
    _register(store, "ME", 60)
    assert _op(store, "prune", 3) == (3, 0)
    assert _op(store, "prune", 3) == (2, 0)
    assert {r[0] for r in store.query("SELECT executor_id FROM executors")} == {"OWNER", "ME"}
    _flush(store, Record(R.COMPLETE, ("SUCCESS", "1", None, "w")))
    assert _op(store, "prune", 3) == (1, 0)


def test_data_version_moves_when_another_connection_commits(backend) -> None:
    x, y = backend(), backend()
    before = x.data_version()
    assert x.data_version() == before
    _flush(y, Record(R.START, ("w", "flow", "[[],{}]", None, None)))  # a client's start: a notice
    deadline = time.monotonic() + 5  # PostgreSQL delivers the notification asynchronously
    while x.data_version() == before and time.monotonic() < deadline:
        time.sleep(0.005)
    assert x.data_version() != before
    assert [n[1:3] for n in x.notices_since(0)] == [("start", "w")]


def test_sqlite_data_version_ignores_the_stores_own_commits(tmp_path: Path) -> None:
    """The lease keeper polls data_version to learn of other processes'
    commits; on SQLite the store's own batches must not move it (each
    would wake the keeper to read notices for nothing, 100 times a
    second under load), another connection's commit must."""
    path = str(tmp_path / "own.db")
    x, y = make_store(path), make_store(path)
    x.open("json")
    y.open("json")
    try:
        before = x.data_version()
        for i in range(3):  # its own commits, a notice among them
            _flush(x, Record(R.START, (f"own{i}", "flow", "[[],{}]", None, None)))
        assert x.data_version() == before
        _flush(y, Record(R.START, ("theirs", "flow", "[[],{}]", None, None)))
        assert x.data_version() != before
    finally:
        x.close()
        y.close()


def test_sqlite_data_version_never_waits_for_a_busy_writer_and_keeps_ignoring_own_commits(tmp_path: Path) -> None:
    """While the writer holds its lock (here a transaction step running
    inside its batch, as one may for its whole budget), data_version()
    answers at once: the first time "changed" (a value never returned, so
    the watcher reads the notices), and asks the writer to read the version
    after its batch; the next answer under a busy writer is that reading,
    which the store's own commits did not move."""
    path = str(tmp_path / "busy.db")
    x = make_store(path)
    x.open("json")
    try:
        _flush(x, Record(R.START, ("w", "flow", "[[],{}]", None, None)))
        before = x.data_version()
        answers = []
        for pos in range(2):
            inside, go = threading.Event(), threading.Event()

            def body(tx: Any, inside: threading.Event = inside, go: threading.Event = go) -> tuple[str, None]:
                inside.set()
                assert go.wait(30)
                return "1", None

            rec = Record(R.TX, ("w", (pos, None), "t", body))
            writer = threading.Thread(target=x.flush, args=([rec],))
            writer.start()
            try:
                assert inside.wait(30)
                answers.append(x.data_version())  # the writer's lock is held meanwhile
            finally:
                go.set()
                writer.join(30)
            assert rec.error is None and rec.result == ("1", None)
        assert answers[0] < 0 and answers[0] != before  # "changed": nothing read yet
        assert answers[1] == before  # read by the writer after the first batch
        assert x.data_version() == before  # the lock is free: read directly
    finally:
        x.close()


def test_schedule_progress_only_moves_forward(backend) -> None:
    store = backend()
    _flush(store, Record(R.WRITE, ("schedule_upsert", ("s", "* * * * *", "flow", 100.0, None, "latest"))))
    advanced = _flush(
        store,
        Record(R.WRITE, ("schedule_advance", (160.0, "s", 160.0))),
        Record(R.WRITE, ("schedule_advance", (120.0, "s", 120.0))),
    )
    assert [r.result for r in advanced] == [1, 0]  # a second runner's older slot does nothing
    assert store.schedules("s")[0][3] == 160.0
