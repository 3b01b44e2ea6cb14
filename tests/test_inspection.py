"""The inspection surface: ``engine.stats()`` and the named reads of
``durably.testing``, the same on both backends."""

from __future__ import annotations

import pytest

import durably
from durably import errors, testing

T0 = 1_800_000_000.0


def _engine(make_engine):
    engine = make_engine(clock=durably.VirtualClock(T0))

    @engine.step()
    def double(x: int) -> int:
        return 2 * x

    @engine.workflow(name="work")
    def work(x: int) -> int:
        engine.set_event("seen", x)
        return double(x) + double(x + 1)

    @engine.workflow(name="inbox")
    def inbox() -> str:
        return engine.recv("t", timeout=3600)

    return engine, work, inbox


def test_stats_of_a_fresh_database(make_engine) -> None:
    engine, _work, _inbox = _engine(make_engine)
    with engine:
        stats = engine.stats()
        statuses = ("PENDING", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
        assert stats.workflows == dict.fromkeys(statuses, 0)
        assert (stats.total_workflows, stats.steps, stats.messages, stats.events) == (0, 0, 0, 0)
        assert (stats.queued, stats.schedules) == ({}, 0)
        assert stats.executors == 1  # this engine
        with pytest.raises(AttributeError):
            stats.steps = 3  # type: ignore[misc]  # frozen


def test_stats_counts_what_the_database_holds(make_engine) -> None:
    engine, work, inbox = _engine(make_engine)
    with engine:
        assert engine.run(work, 1) == 6
        engine.start(inbox, workflow_id="waiting")
        queue = engine.queue("later")
        queue.enqueue(work, 5, workflow_id="queued", delay=3600)
        stats = engine.stats()
        assert stats.workflows["SUCCESS"] == 1 and stats.workflows["PENDING"] == 2
        assert stats.queued == {"later": 1} and stats.total_workflows == 3
        assert stats.steps >= 2 and stats.events == 1
        assert stats.journal_batches >= 1 and stats.journal_records >= stats.journal_batches
        engine.send("waiting", "hi", topic="u")  # another topic: it waits
        assert engine.stats().messages == 1
        engine.cancel("waiting")
        engine.cancel("queued")
        stats = engine.stats()
        assert stats.workflows["CANCELLED"] == 2 and stats.queued == {}
    with pytest.raises(errors.NotOpenError):
        engine.stats()


def test_named_reads(make_engine) -> None:
    engine, work, inbox = _engine(make_engine)
    with engine:
        handle = engine.start(work, 3, workflow_id="w")
        assert handle.result(timeout=10) == 14
        row = testing.workflow(engine, "w")
        assert row is not None and (row.workflow_id, row.name, row.status) == ("w", "work", "SUCCESS")
        assert testing.workflow(engine, "nope") is None
        assert [r.workflow_id for r in testing.workflows(engine)] == ["w"]
        steps = testing.steps(engine, "w")
        assert [s.position for s in steps] == list(range(len(steps)))
        assert [s.error for s in steps] == [None] * len(steps)
        assert testing.events(engine, "w") == [("w", "seen", testing.events(engine)[0].value)]
        engine.start(inbox, workflow_id="in")
        engine.send("in", "later", topic="other")
        assert [(m.dest, m.topic) for m in testing.messages(engine)] == [("in", "other")]
        assert testing.messages(engine, "w") == []
        engine.send("in", "k", topic="other", idempotency_key="key-1")
        assert testing.send_keys(engine) == [("key-1", "in")]
        counts = testing.counts(engine)
        assert set(counts) == set(testing.TABLES)
        assert counts["workflows"] == 2 and counts["messages"] == 2 and counts["send_keys"] == 1
        (me,) = [e for e in testing.executors(engine) if e.executor_id == engine.executor_id]
        assert me.stopped_at is None
        assert testing.backend(engine) in ("sqlite", "postgresql")
        assert testing.queue_entries(engine) == []
        assert isinstance(testing.notices(engine), list)


def test_query_reads_the_applications_tables_on_both_backends(make_engine) -> None:
    engine = make_engine()

    @engine.transaction()
    def add(tx: durably.Tx, x: int) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS seen (x INTEGER)")
        tx.execute("INSERT INTO seen (x) VALUES (?)", (x,))

    @engine.workflow(name="adds")
    def adds() -> None:
        add(1)
        add(2)

    with engine:
        engine.run(adds)
        assert testing.query(engine, "SELECT x FROM seen WHERE x > ? ORDER BY x", (0,)) == [(1,), (2,)]
        assert testing.query(engine, "SELECT count(*) FROM seen") == [(2,)]


def test_the_engine_never_imports_the_testing_module() -> None:
    """Nothing imports ``durably.testing`` but itself and the command that
    runs its Replayer (``durably replay``, a user of it like any other)."""
    import ast
    from pathlib import Path

    src = Path(durably.__file__).parent
    for path in src.rglob("*.py"):
        if path.relative_to(src).parts[0] == "testing" or path.relative_to(src).as_posix() == "cli/replay.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = {node.module or ""} | {f"{node.module or ''}.{a.name}" for a in node.names}
                assert not any(n.split(".")[-1] == "testing" for n in names if n), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.endswith(".testing") for a in node.names), path
