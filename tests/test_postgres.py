"""What is PostgreSQL's own: URLs and schemas, the schema's version and
codec, a writer that reconnects (and never writes a batch twice), transaction
steps on the user's tables, the CLI. The rest of the suite runs on both
backends (tests/conftest.py, BOTH_BACKENDS)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import durably
from durably import _records as R
from durably import errors, testing
from durably.cli import main
from durably.journal import Record
from durably.store import make_store

from .conftest import PG_URL, pg_schema_url


@pytest.fixture
def url() -> Iterator[str]:
    yield from pg_schema_url()


def _admin() -> Any:
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True)


def _flow(engine: durably.Engine, runs: list[int] | None = None) -> Any:
    @engine.step(name="double")
    def double(x: int) -> int:
        if runs is not None:
            runs.append(x)
        return 2 * x

    @engine.workflow(name="flow")
    def flow(x: int) -> int:
        return double(double(x))

    return flow


def test_two_schemas_in_one_database_are_two_independent_engines(url: str) -> None:
    for other in pg_schema_url():
        with durably.Engine(url) as a, durably.Engine(other) as b:
            fa, fb = _flow(a), _flow(b)
            assert a.run(fa, 1, workflow_id="same-id") == 4
            assert b.run(fb, 5, workflow_id="same-id") == 20
            assert [w.workflow_id for w in a.list_workflows()] == ["same-id"]
            assert b.handle("same-id").result() == 20


def test_schema_names_are_checked_and_given_once() -> None:
    with pytest.raises(errors.UsageError):
        durably.Engine(f"{PG_URL}?schema=a", schema="b")
    for bad in ("Upper", "has-dash", "x" * 60, "1st", ""):
        with pytest.raises(errors.UsageError):
            durably.Engine(PG_URL, schema=bad)
    with pytest.raises(errors.UsageError):
        durably.Engine("app.db", schema="durably")  # a schema is PostgreSQL's


def test_a_schema_holding_other_tables_or_a_newer_version_is_refused(url: str) -> None:
    schema = url.split("schema=")[1].split("&")[0]
    with _admin() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.theirs (x int)")
    with pytest.raises(errors.SchemaVersionError, match="not durably's"):
        durably.Engine(url).open()
    with _admin() as conn:
        conn.execute(f"DROP TABLE {schema}.theirs")
    with durably.Engine(url) as engine:
        assert engine.run(_flow(engine), 2) == 8
    with _admin() as conn:
        conn.execute(f"UPDATE {schema}.meta SET value = '99' WHERE key = 'version'")
    with pytest.raises(errors.SchemaVersionError, match="newer"):
        durably.Engine(url).open()


def test_the_pickle_codec_stores_bytes_and_another_codec_is_refused(url: str) -> None:
    with durably.Engine(url, codec="pickle") as engine:

        @engine.step(name="s")
        def s(x: Any) -> Any:
            return {"set": {1, 2}, "x": x}

        @engine.workflow(name="w")
        def w(x: Any) -> Any:
            return s(x)

        assert engine.run(w, b"\x00raw") == {"set": {1, 2}, "x": b"\x00raw"}
    with pytest.raises(errors.CodecMismatchError):
        durably.Engine(url, codec="json").open()


def test_an_unreachable_server_is_a_typed_error_with_the_password_hidden() -> None:
    engine = durably.Engine("postgresql://someone:secret@127.0.0.1:1/test")
    with pytest.raises(errors.DatabaseUnavailableError) as info:
        engine.open()
    assert "secret" not in str(info.value)


def test_the_writer_reconnects_after_its_backend_is_terminated(url: str) -> None:
    runs: list[int] = []
    with durably.Engine(url) as engine:
        flow = _flow(engine, runs)
        assert engine.run(flow, 1) == 4
        for round_ in range(3):
            handles = [engine.start(flow, 100 * round_ + i) for i in range(50)]
            with _admin() as conn:  # every connection of this engine (writer, reads, listener), mid-run
                killed = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'durably%%:' || %s",
                    (testing.schema(engine),),
                ).fetchone()[0]
            assert killed >= 1
            assert [h.result(timeout=60) for h in handles] == [4 * (100 * round_ + i) for i in range(50)]
    # every step body ran once: no batch was lost or written twice
    assert sorted(runs) == sorted(
        [1, 2] + [v for r in range(3) for i in range(50) for v in (100 * r + i, 2 * (100 * r + i))]
    )


def test_a_batch_whose_commit_landed_before_the_connection_went_is_not_written_again(url: str) -> None:
    """Regression: a commit whose reply was lost (the connection dropped
    after the server committed) must be acknowledged, not applied again
    (which would find its own step rows as duplicates and fail them)."""
    store = make_store(url)
    store.open("json")
    try:
        store.flush([Record(R.START, ("w", "flow", "[[],{}]", None, None))])
        real = store._write
        calls = []

        def write_then_lose_the_reply(conn: Any, batch: Any, isolate: bool) -> None:
            real(conn, batch, isolate)  # committed ...
            if not calls:  # ... and then the connection went before the reply was read
                calls.append(1)
                import psycopg

                raise psycopg.OperationalError("server closed the connection unexpectedly")

        store._write = write_then_lose_the_reply  # type: ignore[method-assign]
        recs = [Record(R.STEP, ("w", i, "s", str(i), None, None, None)) for i in range(3)]
        store.flush(recs)
        assert calls == [1]
        assert [r.error for r in recs] == [None, None, None]
        assert [r[0] for r in store.load_steps("w")] == [0, 1, 2]
    finally:
        store.close()


def test_a_transaction_step_commits_with_its_outcome_on_the_users_tables(url: str) -> None:
    with durably.Engine(url) as engine:

        @engine.transaction(name="book")
        def book(db: durably.Tx, seat: int, fail: bool) -> int:
            db.execute("CREATE TABLE IF NOT EXISTS seats (seat integer PRIMARY KEY)")
            db.execute("INSERT INTO seats VALUES (%s)", (seat,))
            if fail:
                raise ValueError("no payment")
            return db.query_one("SELECT count(*) FROM seats")[0]

        @engine.workflow(name="w")
        def w(seat: int, fail: bool) -> int:
            return book(seat, fail)

        assert engine.run(w, 1, False) == 1
        with pytest.raises(errors.WorkflowFailedError):
            engine.run(w, 2, True)
        with pytest.raises(errors.WorkflowFailedError) as info:  # a duplicate seat: the step's own error
            engine.run(w, 1, False)
        assert isinstance(info.value.error, errors.ConstraintError)
        assert testing.query(engine, "SELECT seat FROM seats") == [(1,)]
        assert engine.run(w, 3, False) == 2


def test_cli_lists_and_shows_steps_without_writing(url: str, capsys) -> None:
    with durably.Engine(url) as engine:
        engine.run(_flow(engine), 21, workflow_id="w1")
    assert main(["list", url]) == 0
    assert main(["steps", url, "w1"]) == 0
    out = capsys.readouterr().out
    assert (
        re.search(r"w1 +SUCCESS +flow", out) and re.search(r"0 +double +42", out) and re.search(r"1 +double +84", out)
    )
    assert main(["steps", url, "nope"]) == 2
    assert main(["list", url.replace("schema=", "schema=missing_")]) == 2


def test_a_result_waiter_wakes_when_another_engine_ends_the_workflow(url: str) -> None:
    """Cross-process wake-ups come from NOTIFY: a client waiting on a
    workflow that a worker engine runs returns when it ends."""
    with durably.Engine(url, client=True) as client, durably.Engine(url) as worker:
        gate = threading.Event()

        @worker.workflow(name="slow")
        def slow() -> str:
            gate.wait(10)
            return "done"

        handle = client.start("slow", workflow_id="s1")
        t0 = time.monotonic()
        threading.Timer(0.3, gate.set).start()
        assert handle.result(timeout=20) == "done"
        assert time.monotonic() - t0 < 10


def test_a_send_that_commits_after_a_later_notice_still_wakes_its_receiver(url: str) -> None:
    """PostgreSQL numbers a notice when it is inserted, not when its
    transaction commits: a send (notice n) that commits after another
    process's notice n + 1 was read must still wake the receiver. Found by
    the skewed-clock crash tier, where a consumer waited forever for a
    message that sat in the table."""
    schema = url.split("schema=")[1].split("&")[0]
    with durably.Engine(url) as engine:

        @engine.workflow(name="consumer")
        def consumer() -> Any:
            engine.set_event("ready", True)
            return engine.recv("t")

        early = _admin()  # the late transaction: numbered first, committed last
        early.autocommit = False
        try:
            first = engine.start(consumer, workflow_id="first")
            second = engine.start(consumer, workflow_id="second")
            for wid in ("first", "second"):
                assert engine.get_event(wid, "ready", timeout=20) is True
            early.execute(f"INSERT INTO {schema}.messages (dest, topic, payload) VALUES ('first', 't', '\"late\"')")
            early.execute(f"INSERT INTO {schema}.notices (kind, workflow_id, detail) VALUES ('msg', 'first', 't')")
            with _admin() as late:  # numbered after, committed first: read (and passed) by the engine
                late.execute(f"INSERT INTO {schema}.messages (dest, topic, payload) VALUES ('second', 't', '\"x\"')")
                late.execute(f"INSERT INTO {schema}.notices (kind, workflow_id, detail) VALUES ('msg', 'second', 't')")
            assert second.result(timeout=20) == "x"
            time.sleep(0.3)  # (the engine's notice reads go on past the later notice)
            early.commit()
            assert first.result(timeout=20) == "late"
        finally:
            early.close()
