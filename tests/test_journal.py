"""The group-commit journal, both implementations: batching, isolation, fail-stop."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest

from durably import _records as R
from durably import errors
from durably.journal import _journal_py
from durably.store import Store
from durably.store._writes import WRITES

from .conftest import expected_implementation
from .faultvfs import FaultVFS

IMPLEMENTATIONS = [_journal_py]
if expected_implementation() == "cython":
    from durably.journal import _journal_c

    IMPLEMENTATIONS.append(_journal_c)


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def impl(request: pytest.FixtureRequest) -> Any:
    return request.param


def test_concurrent_submitters_share_batches(impl) -> None:
    flushed: list[int] = []

    def flush(batch: list[Any]) -> None:
        time.sleep(0.005)  # a slow fsync: submitters pile up behind it
        flushed.append(len(batch))
        for rec in batch:
            rec.result = rec.params * 2

    journal = impl.Journal(flush)
    journal.start()
    results: list[int] = []
    lock = threading.Lock()

    def worker(base: int) -> None:
        for i in range(20):
            value = journal.submit(impl.Record(R.WRITE, base + i))
            with lock:
                results.append(value)

    threads = [threading.Thread(target=worker, args=(k * 100,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.stop()
    assert sorted(results) == sorted(2 * (k * 100 + i) for k in range(16) for i in range(20))
    assert sum(flushed) == 320 == journal.records
    assert journal.batches == len(flushed) < 320  # group commit happened
    assert max(flushed) > 1


def test_async_waiters_on_two_loops_are_woken(impl) -> None:
    def flush(batch: list[Any]) -> None:
        for rec in batch:
            rec.result = rec.params

    journal = impl.Journal(flush)
    journal.start()

    async def many(offset: int) -> list[int]:
        return list(await asyncio.gather(*[journal.submit_async(impl.Record(R.WRITE, offset + i)) for i in range(200)]))

    out: dict[int, list[int]] = {}
    threads = [threading.Thread(target=lambda o=o: out.__setitem__(o, asyncio.run(many(o)))) for o in (0, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.stop()
    assert out[0] == list(range(200)) and out[1000] == list(range(1000, 1200))


def test_fatal_flush_error_fails_every_waiter_and_stops(impl) -> None:
    calls: list[int] = []
    release = threading.Event()

    def flush(batch: list[Any]) -> None:
        calls.append(len(batch))
        release.wait(5)
        raise OSError("fsync: EIO")

    journal = impl.Journal(flush)
    journal.start()
    errs: list[BaseException] = []

    def submit() -> None:
        try:
            journal.submit(impl.Record(R.WRITE, None))
        except BaseException as exc:
            errs.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    release.set()
    for t in threads:
        t.join()
    assert len(errs) == 5 and all(isinstance(e, errors.JournalStoppedError) for e in errs)
    assert len(calls) == 1  # never retried
    with pytest.raises(errors.JournalStoppedError):
        journal.submit(impl.Record(R.WRITE, None))
    assert not journal.running and isinstance(journal.failure, errors.JournalStoppedError)
    journal.stop()


def test_stop_commits_what_is_pending(impl) -> None:
    seen: list[int] = []

    def flush(batch: list[Any]) -> None:
        time.sleep(0.01)
        seen.extend(r.params for r in batch)

    journal = impl.Journal(flush)
    journal.start()
    threads = [threading.Thread(target=journal.submit, args=(impl.Record(R.WRITE, i),)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.stop()
    assert sorted(seen) == list(range(10))
    with pytest.raises(errors.NotOpenError):
        journal.submit(impl.Record(R.WRITE, 1))


def test_a_rejected_record_fails_alone(impl, db_path, monkeypatch) -> None:
    # a named write that breaks the status CHECK (none of the real ones does)
    monkeypatch.setitem(WRITES, "test:bad_status", "UPDATE workflows SET status = 'BAD' WHERE workflow_id = 'w'")
    store = Store(db_path)
    store.open()
    store.flush([impl.Record(R.START, ("w", "flow", "[[],{}]", None, None))])
    store.flush([impl.Record(R.STEP, ("w", 0, "s", "1", None, None, None))])
    # one batch: a duplicate position, a step of an unknown workflow (FK), good ones around
    recs = [
        impl.Record(R.STEP, ("w", 1, "s", "2", None, None, None)),
        impl.Record(R.STEP, ("w", 0, "dup", "9", None, None, None)),
        impl.Record(R.STEP, ("ghost", 0, "s", "1", None, None, None)),
        impl.Record(R.STEP, ("w", 2, "s", "3", None, None, None)),
        impl.Record(R.WRITE, ("test:bad_status", ())),
        impl.Record(R.COMPLETE, ("SUCCESS", "6", None, "w")),
    ]
    store.flush(recs)
    assert isinstance(recs[1].error, errors.ConstraintError)
    assert isinstance(recs[2].error, errors.ConstraintError)
    assert isinstance(recs[4].error, errors.ConstraintError)  # CHECK (status IN ...)
    assert [r.error for r in (recs[0], recs[3], recs[5])] == [None, None, None]
    assert [(r[0], r[1]) for r in store.load_steps("w")] == [(0, "s"), (1, "s"), (2, "s")]
    assert store.get_workflow("w")[2] == "SUCCESS"
    store.close()


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except errors.DurablyError as exc:
        return exc


def test_failed_fsync_stops_the_engine_with_a_typed_error(make_engine, db_path) -> None:
    vfs = FaultVFS("fault-sync")
    engine = make_engine(vfs="fault-sync")

    @engine.step()
    def step(i: int) -> int:
        return i

    @engine.workflow()
    def flow(n: int) -> int:
        return sum(step(i) for i in range(n))

    engine.open()
    assert engine.run(flow, 3, workflow_id="before") == 3
    vfs.fail_sync = True
    with pytest.raises(errors.JournalStoppedError) as info:
        engine.run(flow, 3, workflow_id="during")
    assert isinstance(info.value.__cause__, errors.DiskIOError)
    with pytest.raises(errors.JournalStoppedError):
        engine.start(flow, 1)
    engine.close()
    vfs.fail_sync = False
    with make_engine() as again:  # reopen through the normal VFS: what was acked is there
        assert again.handle("before").result(timeout=10) == 3
        assert again.list_workflows(status="ERROR") == []
    vfs.unregister()


def test_disk_full_fails_with_a_typed_error(make_engine) -> None:
    vfs = FaultVFS("fault-full")
    engine = make_engine(vfs="fault-full")

    @engine.workflow()
    def flow(blob: str) -> int:
        return len(blob)

    engine.open()
    assert engine.run(flow, "x") == 1
    vfs.fail_write = True
    with pytest.raises(errors.JournalStoppedError) as info:
        engine.run(flow, "y" * 100_000)
    assert isinstance(info.value.__cause__, errors.DiskFullError)
    engine.close()
    vfs.unregister()


def test_a_lone_caller_writes_its_own_record_and_others_queue(impl) -> None:
    threads_seen: list[str] = []
    release = threading.Event()

    def flush(batch: list[Any]) -> None:
        threads_seen.append(threading.current_thread().name)
        if batch[0].params == "slow":
            release.wait(5)
        for rec in batch:
            rec.result = rec.params

    journal = impl.Journal(flush)
    journal.start()
    assert journal.submit(impl.Record(R.WRITE, "alone")) == "alone"
    assert threads_seen == [threading.current_thread().name]  # no hand-off
    # while a leader's flush is in flight, other records go to the writer thread
    leader = threading.Thread(target=journal.submit, args=(impl.Record(R.WRITE, "slow"),), name="leader")
    leader.start()
    while len(threads_seen) < 2:
        time.sleep(0.001)
    out: list[Any] = []
    followers = [
        threading.Thread(target=lambda i=i: out.append(journal.submit(impl.Record(R.WRITE, i)))) for i in range(5)
    ]
    for t in followers:
        t.start()
    time.sleep(0.05)
    assert out == []  # nobody overtook the leader's commit
    release.set()
    leader.join()
    for t in followers:
        t.join()
    journal.stop()
    assert sorted(out) == list(range(5))
    assert threads_seen[1] == "leader" and set(threads_seen[2:]) == {"durably-journal"}


def _one_batch(impl: Any) -> tuple[Any, threading.Event, list[int]]:
    """A journal busy flushing a first record until the returned event is
    set, so that the records submitted meanwhile commit as one batch (the
    sizes of the batches after it are listed)."""
    started, release = threading.Event(), threading.Event()
    batches: list[int] = []

    def flush(batch: list[Any]) -> None:
        if batch[0].params == "first":
            started.set()
            release.wait(5)
        else:
            batches.append(len(batch))
        for rec in batch:
            rec.result = rec.params

    journal = impl.Journal(flush)
    journal.start()
    threading.Thread(target=journal.submit, args=(impl.Record(R.WRITE, "first"),)).start()
    assert started.wait(5)
    return journal, release, batches


def test_a_batchs_done_callbacks_run_in_order_and_a_failing_one_goes_to_the_loop(impl) -> None:
    """The journal runs its futures' done callbacks itself, within the batch's
    wake-up (_resolve): in batch order, each in its own context, every one
    of them; one that raises is reported by the loop's exception handler,
    as a callback run by the loop would be."""
    journal, release, batches = _one_batch(impl)
    seen: list[tuple[int, Any, str]] = []
    reported: list[BaseException] = []
    where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="outside")

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
        futures = [journal.submit_async(impl.Record(R.WRITE, i)) for i in range(5)]
        where.set("registered")
        futures[1].add_done_callback(lambda f: 1 / 0)
        for i, f in enumerate(futures):
            f.add_done_callback(lambda f, i=i: seen.append((i, f.result(), where.get())))
        release.set()
        return list(await asyncio.gather(*futures))

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    journal.stop()
    assert batches == [5]  # the five records committed together
    assert seen == [(i, i, "registered") for i in range(5)]
    assert len(reported) == 1 and isinstance(reported[0], ZeroDivisionError)


def test_a_keyboard_interrupt_in_a_done_callback_leaves_the_rest_of_the_batch_for_later(impl) -> None:
    """Ctrl-C raised in one future's callback goes up out of the loop, as
    from any callback; the callbacks and futures after it in the batch are
    not lost: they run when the loop runs again."""
    journal, release, _ = _one_batch(impl)
    seen: list[int] = []
    loop = asyncio.new_event_loop()

    def interrupt(_: Any) -> None:
        raise KeyboardInterrupt

    async def submit() -> list[Any]:
        futures = [journal.submit_async(impl.Record(R.WRITE, i)) for i in range(4)]
        futures[1].add_done_callback(interrupt)
        for i, f in enumerate(futures):
            f.add_done_callback(lambda _f, i=i: seen.append(i))
        return futures

    async def commit() -> None:
        release.set()
        await asyncio.sleep(5)

    try:
        futures = loop.run_until_complete(submit())
        with pytest.raises(KeyboardInterrupt):  # (the batch commits only now)
            loop.run_until_complete(commit())
        assert loop.run_until_complete(asyncio.gather(*futures)) == [0, 1, 2, 3]
        assert sorted(seen) == [0, 1, 2, 3]
    finally:
        loop.close()
        journal.stop()
