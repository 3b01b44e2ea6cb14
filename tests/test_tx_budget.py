"""A transaction step holds the writer for everyone, so its SQL has a time
budget enforced inside SQLite: past it (or when its workflow is cancelled,
or the engine closes) the SQL is interrupted and undone, the step's outcome
is TransactionTimeoutError, and the other workflows in the same batch are
not touched."""

from __future__ import annotations

import time

import pytest

import durably
from durably import errors, testing

ENDLESS = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"


def test_an_endless_query_ends_with_transaction_timeout_error_and_others_go_on(make_engine, db_path) -> None:
    engine = make_engine(transaction_timeout=0.3)

    @engine.transaction(name="endless")
    def endless(db: durably.Tx) -> int:
        db.execute("CREATE TABLE IF NOT EXISTS mine (x INTEGER)")
        db.execute("INSERT INTO mine VALUES (1)")
        return db.query_one(ENDLESS)[0]

    @engine.transaction(name="write_forever", timeout=0.2)
    def write_forever(db: durably.Tx) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS big (x BIGINT)")
        db.execute("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) INSERT INTO big SELECT n FROM r")

    @engine.workflow(name="slow")
    def slow(which: str) -> str:
        try:
            (endless if which == "read" else write_forever)()
        except errors.TransactionTimeoutError as exc:
            return f"timed out after {exc.timeout}"
        return "finished?"

    @engine.step(name="quick")
    def quick(i: int) -> int:
        return i

    @engine.workflow(name="other")
    def other(i: int) -> int:
        return quick(i) + quick(i)

    with engine:
        for which, budget in (("read", 0.3), ("write", 0.2)):
            h = engine.start(slow, which)
            others = [engine.start(other, i) for i in range(20)]  # share batches with the slow one
            assert h.result(timeout=30) == f"timed out after {budget}"
            assert [o.result(timeout=30) for o in others] == [2 * i for i in range(20)]
        # the interrupted SQL was undone; the writer and the file are fine
        tables = (
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('mine', 'big')"
            if db_path.startswith("postgresql:")
            else "SELECT count(*) FROM sqlite_schema WHERE name IN ('mine', 'big')"
        )
        assert testing.query(engine, tables) == [(0,)]
        assert testing.journal_running(engine)
        assert engine.run(other, 5) == 10


def test_cancel_and_close_interrupt_a_running_transaction_step(make_engine) -> None:
    engine = make_engine(transaction_timeout=60)

    @engine.transaction(name="endless")
    def endless(db: durably.Tx) -> int:
        return db.query_one(ENDLESS)[0]

    @engine.workflow(name="w")
    def w() -> int:
        return endless()

    with engine:
        h = engine.start(w)
        time.sleep(0.3)  # it is inside SQLite now
        t0 = time.monotonic()
        engine.cancel(h.workflow_id)
        with pytest.raises(errors.WorkflowCancelledError):
            h.result(timeout=10)
        assert time.monotonic() - t0 < 5  # not the 60 s budget
        h2 = engine.start(w)
        time.sleep(0.3)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 5  # close() interrupted it too
    with make_engine(transaction_timeout=60) as again:
        assert again.handle(h2.workflow_id).status() is durably.Status.PENDING  # no outcome recorded at close
        assert again.steps(h2.workflow_id) == []


def test_budgets_are_validated() -> None:
    with pytest.raises(errors.UsageError):
        durably.Engine(":memory:", transaction_timeout=0)
    engine = durably.Engine(":memory:")
    with pytest.raises(errors.UsageError):
        engine.transaction(timeout=-1)
