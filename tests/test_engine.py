"""The public API on sync workflows: start, results, ids, steps, errors, replay."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import pickle
import threading
import uuid
from typing import Any

import msgspec
import pytest

import durably
from durably import Status, errors, testing


@dataclasses.dataclass
class Receipt:
    id: str
    amount: decimal.Decimal
    at: datetime.datetime


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(msgspec.Struct):
    x: int
    y: int


def test_checkout_end_to_end(make_engine, any_path) -> None:
    engine = make_engine(any_path)
    charged: list[str] = []

    @engine.step(retries=2, initial_delay=0.0)
    def charge(order_id: str) -> Receipt:
        charged.append(order_id)
        return Receipt("r-" + order_id, decimal.Decimal("9.99"), datetime.datetime(2026, 1, 2, 3, 4, 5))

    @engine.transaction()
    def record_sale(db: durably.Tx, order_id: str) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS sales(order_id TEXT PRIMARY KEY)")
        db.execute("INSERT INTO sales(order_id) VALUES (?)", (order_id,))

    @engine.workflow()
    def checkout(order_id: str) -> str:
        receipt = charge(order_id)
        assert isinstance(receipt, Receipt) and isinstance(receipt.amount, decimal.Decimal)
        record_sale(order_id)
        return receipt.id

    with engine:
        h = engine.start(checkout, "o-1", workflow_id="order-o-1")
        assert h.workflow_id == "order-o-1"
        assert h.result(timeout=10) == "r-o-1"
        assert h.status() is Status.SUCCESS and h.status() == "SUCCESS"
        assert engine.run(checkout, "o-2") == "r-o-2"
        assert checkout("o-3") == "r-o-3"  # a direct call runs it durably
        steps = engine.steps("order-o-1")
        assert [s.name for s in steps] == [charge.__durably_step__.name, record_sale.__durably_step__.name]
        assert [s.position for s in steps] == [0, 1]
        rows = testing.query(engine, "SELECT order_id FROM sales ORDER BY 1")
        assert rows == [("o-1",), ("o-2",), ("o-3",)]
    assert charged == ["o-1", "o-2", "o-3"]


def test_workflow_id_is_an_idempotency_key(make_engine) -> None:
    engine = make_engine()
    runs: list[int] = []

    @engine.workflow()
    def once(x: int) -> int:
        runs.append(x)
        return x * 2

    @engine.workflow()
    def other(x: int) -> int:
        return x

    with engine:
        assert engine.start(once, 1, workflow_id="k").result() == 2
        h = engine.start(once, 99, workflow_id="k")  # exists: same handle, nothing runs
        assert h.result() == 2
        with pytest.raises(errors.WorkflowConflictError) as info:
            engine.start(other, 1, workflow_id="k")
        assert info.value.existing_name == once.__durably_workflow__.name
    with make_engine() as engine2:  # survives reopening
        engine2.workflow(name=once.__durably_workflow__.name)(lambda x: runs.append(-1))
        assert engine2.start(once.__durably_workflow__.name, 5, workflow_id="k").result() == 2
    assert runs == [1]


def test_start_options_apart_from_the_workflow_arguments(make_engine) -> None:
    """``engine.options(workflow_id=..., timeout=...)`` starts as ``start``
    with those keywords does (the typed spelling: every argument checked)."""
    engine = make_engine()

    @engine.workflow()
    def add(x: int, y: int = 0) -> int:
        return x + y

    @engine.workflow()
    async def add_async(x: int) -> int:
        return x + 1

    with engine:
        opts = engine.options(workflow_id="opt-1", timeout=3600)
        assert opts.start(add, 1, y=2).result() == 3
        assert opts.start(add, 40).result() == 3  # the id exists: its handle, nothing new runs
        assert engine.handle("opt-1").info().deadline is not None
        assert engine.options(workflow_id="opt-2").run(add, 5) == 5
        assert asyncio.run(_started_async(engine, add_async)) == 8
        assert sorted(w.workflow_id for w in engine.list_workflows()) == ["opt-1", "opt-2", "opt-3"]


async def _started_async(engine: durably.Engine, workflow: durably.Workflow[[int], Any]) -> int:
    handle = await engine.options(workflow_id="opt-3").start_async(workflow, 7)
    return int(await handle.result_async())


def test_concurrent_starts_with_one_id_run_once(make_engine) -> None:
    engine = make_engine()
    runs: list[int] = []
    gate = threading.Event()

    @engine.workflow()
    def slow() -> int:
        gate.wait(5)
        runs.append(1)
        return 7

    with engine:
        handles: list[durably.WorkflowHandle] = []
        threads = [
            threading.Thread(target=lambda: handles.append(engine.start(slow, workflow_id="same"))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gate.set()
        assert {h.result(timeout=10) for h in handles} == {7}
    assert runs == [1]


def test_handles_listing_and_steps(make_engine) -> None:
    engine = make_engine()

    @engine.step()
    def inc(x: int) -> int:
        return x + 1

    @engine.workflow()
    def count(n: int) -> int:
        for _ in range(n):
            n = inc(n)
        return n

    with engine:
        for i in range(3):
            engine.run(count, i, workflow_id=f"c{i}")
        assert engine.handle("c2").result() == 4
        infos = engine.list_workflows(status="SUCCESS")
        assert {i.workflow_id for i in infos} == {"c0", "c1", "c2"}
        assert all(i.name == count.__durably_workflow__.name for i in infos)
        assert engine.list_workflows(status="PENDING") == []
        assert len(engine.list_workflows(limit=2)) == 2
        assert len(engine.list_workflows(name=count)) == 3
        assert [s.output for s in engine.steps("c2")] == ["3", "4"]
        with pytest.raises(errors.WorkflowNotFoundError):
            engine.handle("nope")
        with pytest.raises(errors.UsageError):
            engine.list_workflows(status="DONE")


def test_values_decode_by_annotation_live_equals_replay(make_engine) -> None:
    engine = make_engine()
    live: list[object] = []

    @engine.step()
    def make() -> tuple[Receipt, Color, uuid.UUID, Point, bytes, dict[str, list[int]]]:
        return (
            Receipt("a", decimal.Decimal("1.50"), datetime.datetime(2026, 5, 1)),
            Color.BLUE,
            uuid.UUID(int=7),
            Point(1, 2),
            b"\x00\xff",
            {"k": [1, 2]},
        )

    @engine.workflow()
    def flow(r: Receipt, when: datetime.date) -> str:
        value = make()
        live.append((r, when, value))
        return repr(value)

    receipt = Receipt("in", decimal.Decimal("2"), datetime.datetime(2026, 1, 1))
    with engine:
        first = engine.run(flow, receipt, datetime.date(2026, 2, 3), workflow_id="v")
    r, when, value = live[0]
    assert r == receipt and when == datetime.date(2026, 2, 3)
    assert value[0] == Receipt("a", decimal.Decimal("1.50"), datetime.datetime(2026, 5, 1))
    assert value[1] is Color.BLUE and value[3] == Point(1, 2) and value[4] == b"\x00\xff"
    # replay the same workflow from its journal: identical values
    with make_engine() as engine:
        engine.resume("v")  # SUCCESS: a no-op
        ctx_rows = testing.steps(engine, "v")
        assert len(ctx_rows) == 1
    assert first == repr(value)


def test_step_errors_are_recorded_once_and_replayed(make_engine) -> None:
    engine = make_engine()
    attempts: list[int] = []

    @engine.step(retries=2, backoff=1.0, initial_delay=0.0)
    def flaky() -> int:
        attempts.append(1)
        raise ValueError("bad input", 42)

    @engine.workflow()
    def flow() -> str:
        try:
            flaky()
        except ValueError as exc:
            return f"caught {exc.args}"
        return "no"

    with engine:
        assert engine.run(flow, workflow_id="e") == "caught ('bad input', 42)"
        (step,) = engine.steps("e")
        assert step.output is None and "ValueError" in step.error
    assert len(attempts) == 3  # 1 + 2 retries, one recorded outcome


def test_retries_back_off_exponentially(make_engine) -> None:
    clock = durably.VirtualClock()
    engine = make_engine(clock=clock)
    calls: list[float] = []  # when each attempt started, on the engine's clock

    @engine.step(retries=4, backoff=3.0, initial_delay=0.5, max_delay=5.0)
    def wobbly() -> int:
        calls.append(clock.now())
        if len(calls) < 5:
            raise ConnectionError("try again")
        return len(calls)

    @engine.workflow()
    def flow() -> int:
        return wobbly()

    with engine:
        assert clock.finish(engine.start(flow)) == 5
    gaps = [round(b - a, 6) for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps == [0.5, 1.5, 4.5, 5.0]


def test_workflow_failure_surfaces_as_workflow_failed(make_engine) -> None:
    engine = make_engine()

    class PaymentDeclined(Exception):
        pass

    @engine.workflow()
    def flow() -> None:
        raise KeyError("card")

    with engine:
        h = engine.start(flow, workflow_id="f")
        with pytest.raises(errors.WorkflowFailedError) as info:
            h.result(timeout=10)
        assert isinstance(info.value.error, KeyError)
        assert info.value.workflow_id == "f"
        assert h.status() == Status.ERROR
        err = pickle.loads(pickle.dumps(info.value))
        assert err.workflow_id == "f" and isinstance(err.error, KeyError)


def test_result_timeout(make_engine) -> None:
    engine = make_engine()
    gate = threading.Event()

    @engine.workflow()
    def waits() -> int:
        gate.wait(10)
        return 1

    with engine:
        h = engine.start(waits)
        with pytest.raises(errors.ResultTimeoutError) as info:
            h.result(timeout=0.05)
        assert isinstance(info.value, TimeoutError) and info.value.timeout == 0.05
        assert h.status() == Status.PENDING
        gate.set()
        assert h.result(timeout=10) == 1


def test_unserializable_step_result_names_step_type_and_fix(make_engine) -> None:
    engine = make_engine()
    fine = []

    @engine.step()
    def bad() -> object:
        return threading.Lock()

    @engine.workflow()
    def flow() -> str:
        try:
            bad()
        except errors.SerializationError as exc:
            fine.append(exc)
            raise
        return "no"

    with engine:
        h = engine.start(flow, workflow_id="s")
        with pytest.raises(errors.WorkflowFailedError) as info:
            h.result(timeout=10)
        assert engine.steps("s") == []  # nothing recorded: fix the code and resume
    (exc,) = fine
    assert "bad" in str(exc) and "lock" in str(exc).lower() and "pickle" in str(exc)
    assert exc.type_name.endswith("lock")
    assert isinstance(info.value.error, errors.SerializationError)


def test_unserializable_workflow_argument(make_engine) -> None:
    engine = make_engine()

    @engine.workflow()
    def flow(x: object) -> None:
        pass

    with engine:
        with pytest.raises(errors.SerializationError, match="inputs"):
            engine.start(flow, object())
        assert engine.list_workflows() == []


def test_pickle_codec_stores_arbitrary_objects(make_engine) -> None:
    engine = make_engine(codec="pickle")

    class Box:
        def __init__(self, v: int) -> None:
            self.v = v

    @engine.step()
    def boxed(v: int) -> object:
        return frozenset({v})

    @engine.workflow()
    def flow(v: int) -> object:
        return boxed(v)

    with engine:
        assert engine.run(flow, 3) == frozenset({3})


def test_step_outside_a_workflow_is_a_plain_call(make_engine) -> None:
    engine = make_engine()

    @engine.step()
    def plain(x: int) -> int:
        return x + 1

    @engine.transaction()
    def tx(db: durably.Tx) -> None:
        pass

    assert plain(1) == 2  # no engine needed, nothing journaled
    with engine:
        assert plain(2) == 3
        with pytest.raises(errors.UsageError, match="outside a workflow"):
            tx()


def test_transaction_step_rolls_back_on_error_and_records_the_error(make_engine) -> None:
    engine = make_engine()

    @engine.transaction()
    def setup(db: durably.Tx) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS t(x INTEGER)")

    @engine.transaction()
    def insert_then_fail(db: durably.Tx, x: int) -> None:
        db.execute("INSERT INTO t VALUES (?)", (x,))
        raise RuntimeError("boom")

    @engine.transaction()
    def insert(db: durably.Tx, x: int) -> int:
        db.execute("INSERT INTO t VALUES (?)", (x,))
        return db.query_one("SELECT count(*) FROM t")[0]

    @engine.workflow()
    def flow() -> int:
        setup()
        try:
            insert_then_fail(1)
        except RuntimeError:
            pass
        return insert(2)

    with engine:
        assert engine.run(flow, workflow_id="tx") == 1
        assert testing.query(engine, "SELECT x FROM t") == [(2,)]
        steps = engine.steps("tx")
        assert "RuntimeError" in steps[1].error and steps[2].output == "1"


def test_transaction_step_may_not_touch_engine_state(make_engine) -> None:
    engine = make_engine()

    @engine.transaction()
    def sneaky(db: durably.Tx, sql: str) -> None:
        db.execute(sql)

    @engine.workflow()
    def flow(sql: str) -> None:
        sneaky(sql)

    with engine:
        for sql in ("COMMIT", "DELETE FROM steps", "UPDATE workflows SET status = 'ERROR'", "PRAGMA synchronous=OFF"):
            with pytest.raises(errors.WorkflowFailedError) as info:
                engine.run(flow, sql)
            assert isinstance(info.value.error, errors.UsageError), sql
        if testing.backend(engine) == "postgresql":
            # durably's schema named outright is refused before it reaches the server
            schema = testing.schema(engine)
            for sql in (f"DELETE FROM {schema}.steps", f'DROP TABLE "{schema}".workflows'):
                with pytest.raises(errors.WorkflowFailedError) as info:
                    engine.run(flow, sql)
                assert isinstance(info.value.error, errors.UsageError), sql
            assert engine.stats().workflows["ERROR"] == 6
        else:
            assert engine._store.connections()[0].pragma("synchronous") == 2
        # the engine still works after the refusals
        with pytest.raises(errors.WorkflowFailedError) as info:
            engine.run(flow, "SELEKT 1")
        assert isinstance(info.value.error, errors.InvalidSQLError)


def test_child_workflows_get_deterministic_ids(make_engine) -> None:
    engine = make_engine()

    @engine.workflow()
    def child(x: int) -> int:
        return x * 10

    @engine.workflow()
    def parent() -> list[int]:
        a = child(1)  # direct call: start and wait
        h = engine.start(child, 2)
        return [a, h.result()]

    with engine:
        assert engine.run(parent, workflow_id="p") == [10, 20]
        kids = {i.workflow_id: i.parent_id for i in engine.list_workflows(name=child)}
        assert kids == {"p/0": "p", "p/1": "p"}
        assert [s.name for s in engine.steps("p")] == ["start:" + child.__durably_workflow__.name] * 2


def test_cancel_stops_at_the_next_step_and_resume_continues(make_engine) -> None:
    engine = make_engine()
    started = threading.Event()
    gate = threading.Event()
    ran: list[int] = []

    @engine.step()
    def work(i: int) -> int:
        ran.append(i)
        if i == 0:
            started.set()
            gate.wait(10)
        return i

    @engine.workflow()
    def flow() -> int:
        total = 0
        for i in range(3):
            try:
                total += work(i)
            except Exception:  # cannot swallow the cancellation
                pass
        return total

    with engine:
        h = engine.start(flow, workflow_id="w")
        assert started.wait(10)
        engine.cancel("w")
        assert h.status() == Status.CANCELLED
        gate.set()
        with pytest.raises(errors.WorkflowCancelledError):
            h.result(timeout=10)
        engine.resume("w")  # while the cancelled run may still be unwinding
        assert h.result(timeout=10) == 3
        assert [s.position for s in engine.steps("w")] == [0, 1, 2]
        assert ran == [0, 1, 2]  # step 0 was recorded: not run again


def test_cancel_cascades_to_children(make_engine) -> None:
    engine = make_engine()
    gate = threading.Event()

    @engine.step()
    def block() -> None:
        gate.wait(10)

    @engine.workflow()
    def child() -> None:
        block()
        block()

    @engine.workflow()
    def parent() -> None:
        engine.start(child)
        block()

    with engine:
        h = engine.start(parent, workflow_id="par")
        engine.handle  # noqa: B018
        for _ in range(200):
            if engine.list_workflows(name=child):
                break
            threading.Event().wait(0.01)
        engine.cancel("par")
        gate.set()
        assert engine.handle("par/0").status() == Status.CANCELLED
        assert h.status() == Status.CANCELLED


def test_resume_a_failed_workflow_after_fixing_the_cause(make_engine) -> None:
    engine = make_engine()
    broken = [True]
    ran: list[str] = []

    @engine.step()
    def first() -> int:
        ran.append("first")
        return 1

    @engine.workflow()
    def flow() -> int:
        x = first()
        if broken[0]:
            raise RuntimeError("config missing")
        return x + 1

    with engine:
        h = engine.start(flow, workflow_id="r")
        with pytest.raises(errors.WorkflowFailedError):
            h.result(timeout=10)
        broken[0] = False
        engine.resume("r")
        assert h.result(timeout=10) == 2
    assert ran == ["first"]


def test_engine_misuse_errors(make_engine) -> None:
    engine = make_engine()

    @engine.workflow()
    def flow() -> None:
        pass

    with pytest.raises(errors.NotOpenError):
        engine.start(flow)
    with pytest.raises(errors.UsageError):
        durably.Engine(":memory:", synchronous="off")
    with pytest.raises(errors.UsageError):
        durably.Engine(":memory:", codec="yaml")
    with pytest.raises(errors.UsageError):
        engine.step(retries=-1)(lambda: None)
    with engine:
        with pytest.raises(errors.UsageError, match="not a workflow"):
            engine.start(lambda: None)
        with pytest.raises(errors.UsageError):
            engine.start(flow, workflow_id="")
        with pytest.raises(errors.UsageError):
            engine.open()
    with pytest.raises(errors.UsageError):
        engine.transaction()(_async_tx)


async def _async_tx(db: durably.Tx) -> None:
    pass


def test_error_hierarchy() -> None:
    assert issubclass(errors.UsageError, errors.DurablyError)
    assert issubclass(errors.StorageError, errors.DurablyError)
    assert issubclass(errors.InternalError, errors.DurablyError)
    assert issubclass(errors.SchemaVersionError, errors.StorageError)
    assert issubclass(errors.SerializationError, errors.UsageError)
    assert not issubclass(errors.WorkflowCancelled, Exception)
    for cls in (errors.NonDeterminismError, errors.WorkflowFailedError, errors.JournalStoppedError):
        e = cls("m")
        assert type(pickle.loads(pickle.dumps(e))) is cls


def test_custom_names_work_for_every_way_of_starting(make_engine) -> None:
    engine = make_engine()

    @engine.workflow(name="custom.name")
    def flow(x: int) -> int:
        return x + 1

    with engine:
        assert flow(1) == 2  # direct call
        assert engine.run(flow, 2) == 3
        assert engine.run("custom.name", 3) == 4
        assert engine.run(flow.__wrapped__, 4) == 5  # the undecorated function
        assert {i.name for i in engine.list_workflows()} == {"custom.name"}


def test_sync_parents_waiting_on_children_cannot_starve_the_pool(make_engine) -> None:
    engine = make_engine(workers=2)

    @engine.workflow()
    def leaf(x: int) -> int:
        return x

    @engine.workflow()
    def parent(x: int) -> int:
        return leaf(x) + leaf(x + 1)  # children run in this thread

    with engine:
        handles = [engine.start(parent, i) for i in range(6)]  # 6 parents, 2 workers
        assert [h.result(timeout=20) for h in handles] == [2 * i + 1 for i in range(6)]


def test_async_step_called_from_a_sync_workflow(make_engine) -> None:
    import asyncio

    engine = make_engine()

    @engine.step()
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    @engine.workflow()
    def flow(x: int) -> int:
        return fetch(x) + 1

    with engine:
        assert engine.run(flow, 2, workflow_id="mix") == 7
        assert engine.steps("mix")[0].output == "6"
