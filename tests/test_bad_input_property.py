"""Property tests of bad input (Hypothesis).

1. Names and values from the whole of Unicode and every float: each call
   either raises a typed error at the API and stores nothing, or round-trips
   exactly, through a restart too; 20 unrelated workflows are served all
   along.
2. SQL a transaction step may throw at durably's own tables (DML, DDL,
   triggers, views, PRAGMAs, ATTACH, transaction control): durably's schema
   and rows are unchanged afterwards and the engine keeps working.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durably
from durably import errors, testing
from durably.store._tx import engine_objects

TYPED = (errors.UsageError, errors.SerializationError)

names = st.text(alphabet=st.characters(codec=None), min_size=0, max_size=12)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None), max_size=8),
)
values = st.recursive(
    leaves,
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=4), kids, max_size=3)),
    max_leaves=8,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=False))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _build(path: str) -> durably.Engine:
    engine = durably.Engine(path)

    @engine.workflow(name="echo")
    def echo(value: Any) -> Any:
        return value

    @engine.workflow(name="publish")
    def publish(key: str, value: Any) -> None:
        engine.set_event(key, value)

    @engine.workflow(name="bystander")
    def bystander() -> str:
        return engine.recv("go", timeout=3600)

    return engine


def _count(engine: durably.Engine) -> tuple:
    # (steps are left out: the bystanders record their receive deadlines meanwhile)
    counts = testing.counts(engine)
    return tuple(counts[t] for t in ("workflows", "messages", "events", "queue_entries"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(st.tuples(st.sampled_from(["start", "send", "event"]), names, values), min_size=1, max_size=8))
def test_any_name_or_value_is_refused_with_a_typed_error_or_round_trips_exactly(cases: list) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "p.db")
        engine = _build(path)
        kept: list[tuple[str, str, Any]] = []
        with engine:
            for i in range(20):
                engine.start("bystander", workflow_id=f"by-{i}")
            for i, (what, name, value) in enumerate(cases):
                before = _count(engine)
                try:
                    if what == "start":
                        engine.start("echo", value, workflow_id=name).result(timeout=10)
                        if all(k[1] != name for k in kept if k[0] == "start"):  # an id is an idempotency key
                            kept.append((what, name, value))
                    elif what == "send":
                        engine.send("by-0", value, topic=name)
                        kept.append((what, name, value))
                    else:
                        engine.run("publish", name, value, workflow_id=f"pub-{i}")
                        kept.append((what, name, value))
                except errors.WorkflowConflictError:
                    pass  # the same id drawn twice: the first one stands
                except errors.WorkflowFailedError as exc:
                    # set_event refused the key or value inside the workflow: a
                    # typed error there, no event stored (the workflow ended ERROR)
                    assert what == "event" and isinstance(exc.error, TYPED), exc
                    assert _count(engine)[2] == before[2]
                except TYPED:
                    assert _count(engine) == before, (what, name, value)  # nothing stored
            assert testing.journal_running(engine)
        engine = _build(path)
        with engine:  # through a restart
            for what, name, value in kept:
                if what == "start":
                    assert _same(engine.handle(name).result(timeout=10), value), (name, value)
                elif what == "event":
                    pass  # checked below by key
            events = {}
            for i, (what, name, value) in enumerate(cases):
                if (what, name, value) in kept and what == "event":
                    events[(f"pub-{i}", name)] = value
            for (wid, key), value in events.items():
                assert _same(engine.get_event(wid, key, timeout=0), value)
            for wid in [f"by-{i}" for i in range(20)]:
                engine.send(wid, "done", topic="go")
            assert all(engine.handle(f"by-{i}").result(timeout=10) == "done" for i in range(20))


def _sql() -> Any:
    tables, objects = engine_objects()
    t = st.sampled_from(sorted(tables))
    o = st.sampled_from(sorted(objects))
    n = st.integers(0, 9)
    return st.one_of(
        st.builds("DELETE FROM {}".format, t),
        st.builds("UPDATE {} SET rowid = rowid".format, t),
        st.builds("INSERT INTO {} DEFAULT VALUES".format, t),
        st.builds("DROP TABLE {}".format, t),
        st.builds("DROP INDEX {}".format, o),
        st.builds("DROP TRIGGER {}".format, o),
        st.builds("DROP VIEW {}".format, o),
        st.builds(lambda t, n: f"CREATE TRIGGER x{n} AFTER INSERT ON {t} BEGIN SELECT 1; END", t, n),
        st.builds(lambda t, n: f"CREATE TEMP TRIGGER x{n} BEFORE DELETE ON {t} BEGIN SELECT 1; END", t, n),
        st.builds(lambda t, n: f"CREATE INDEX x{n} ON {t} (rowid)", t, n),
        st.builds(lambda o: f"CREATE TEMP VIEW {o} AS SELECT 1 AS a", o),
        st.builds(lambda o: f"CREATE TEMP TABLE {o} (a)", o),
        st.builds(lambda o: f"CREATE VIEW {o} AS SELECT 1 AS a", o),
        st.builds(lambda t, n: f"ALTER TABLE {t} ADD COLUMN z{n}", t, n),
        st.builds(lambda t, n: f"ALTER TABLE {t} RENAME TO z{n}", t, n),
        st.builds(lambda t: f"CREATE VIEW v_{t} AS SELECT * FROM {t}", t),  # a read-only view: allowed
        st.sampled_from(
            [
                "PRAGMA foreign_keys = OFF",
                "PRAGMA user_version = 1",
                "PRAGMA writable_schema = 1",
                "ATTACH ':memory:' AS other",
                "DETACH other",
                "BEGIN",
                "COMMIT",
                "ROLLBACK",
                "SAVEPOINT s",
                "RELEASE s",
                "VACUUM",
                "REINDEX",
                "ANALYZE",
            ]
        ),
    )


def _durably_state(engine: durably.Engine) -> tuple:
    tables, objects = engine_objects()
    schema = testing.query(
        engine,
        "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE lower(name) IN ("
        + ", ".join("?" * len(objects))
        + ") ORDER BY name",
        tuple(sorted(objects)),
    )
    counts = {t: testing.query(engine, f"SELECT count(*) FROM {t}")[0][0] for t in sorted(tables) if t != "steps"}
    temp = testing.query(engine, "SELECT name FROM temp.sqlite_schema")
    return schema, counts, temp


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statements=st.lists(_sql(), min_size=1, max_size=4))
def test_sql_a_transaction_step_runs_against_durablys_tables_changes_nothing_of_theirs(statements: list) -> None:
    with tempfile.TemporaryDirectory() as d:
        engine = durably.Engine(str(Path(d) / "s.db"))

        @engine.transaction(name="attempt")
        def attempt(db: durably.Tx, sql: str) -> str:
            try:
                db.execute(sql)
            except errors.DurablyError as exc:
                return type(exc).__name__
            return "ran"

        @engine.workflow(name="hostile")
        def hostile(sqls: list) -> list:
            return [attempt(sql) for sql in sqls]

        @engine.workflow(name="inbox")
        def inbox() -> str:
            return engine.recv("t", timeout=30)

        with engine:
            waiting = engine.start(inbox)
            before = _durably_state(engine)
            outcomes = engine.run(hostile, statements)
            assert len(outcomes) == len(statements)
            after = _durably_state(engine)
            assert after[0] == before[0] and after[2] == before[2], (statements, outcomes)
            before[1]["workflows"] += 1  # the hostile workflow's own row; nothing else may change
            assert after[1] == before[1], (statements, outcomes)
            engine.send(waiting.workflow_id, "fine", topic="t")
            assert waiting.result(timeout=10) == "fine"
            assert testing.journal_running(engine)
