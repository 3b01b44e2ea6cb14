"""The Replayer (``durably.testing.replay``, ``durably replay``): recorded
histories against the current code, on both backends. A reordered or renamed
step is caught in DONE and PENDING workflows, unchanged code passes, no step
body runs and the database is left exactly as it was."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import durably
from durably import testing
from durably.cli import main
from durably.testing import _replay

APP = """
import durably
from tests.test_replayer import declare

engine = durably.Engine("never-opened.db")
RAN: list[str] = []
declare(engine, {version}, RAN)
"""


def declare(engine: durably.Engine, version: int, ran: list[str]) -> None:
    """The application, as released (version 1) and changed (version 2:
    flow's steps swapped, waiting's first step renamed); aflow unchanged."""

    def body(name: str) -> Any:
        def fn(x: int) -> int:
            ran.append(name)
            return x + 1

        fn.__name__ = fn.__qualname__ = name
        return engine.step(name=name)(fn)

    a, b, c = body("a"), body("b"), body("c")

    @engine.step(name="inc")
    async def inc(x: int) -> int:
        ran.append("inc")
        return x + 1

    @engine.workflow(name="flow")
    def flow(x: int) -> int:
        first, second = (a, b) if version == 1 else (b, a)
        return second(first(x))

    @engine.workflow(name="waiting")
    def waiting(x: int) -> int:
        y = (a if version == 1 else c)(x)
        engine.sleep(86400)  # a day: PENDING while the test runs
        return b(y)

    @engine.workflow(name="aflow")
    async def aflow(x: int) -> int:
        return await inc(await inc(x))


def _record(db: str) -> None:
    """Version 1 runs: flow and aflow end SUCCESS; waiting stays PENDING in its sleep."""
    engine = durably.Engine(db)
    declare(engine, 1, [])
    with engine:
        assert engine.run("flow", 1, workflow_id="flow-1") == 3
        assert engine.start("aflow", 1, workflow_id="aflow-1").result(timeout=10) == 3
        engine.start("waiting", 1, workflow_id="waiting-1")
        _wait_for_step(engine, "waiting-1", "sleep")


def _wait_for_step(engine: durably.Engine, workflow_id: str, name: str) -> None:
    deadline = time.monotonic() + 10
    while name not in [s.name for s in engine.steps(workflow_id)]:
        assert time.monotonic() < deadline, engine.steps(workflow_id)
        time.sleep(0.01)


def _fingerprint(db: str) -> Any:
    """SQLite: every file in the database's folder, byte for byte; PostgreSQL:
    every row of every durably table."""
    if not db.startswith("postgresql"):
        folder = Path(db).parent
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}
    import psycopg

    from tests.conftest import PG_URL

    schema = dict(part.split("=", 1) for part in db.split("?", 1)[1].split("&"))["schema"]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
        return {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{schema}"."{t}"').fetchall())) for t in tables}


def _clock_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "durably-clock"]


def _app(version: int) -> tuple[durably.Engine, list[str]]:
    engine = durably.Engine("never-opened.db")
    ran: list[str] = []
    declare(engine, version, ran)
    return engine, ran


def test_unchanged_code_replays_every_history_running_nothing_and_writing_nothing(db_path: str) -> None:
    _record(db_path)
    before = _fingerprint(db_path)
    engine, ran = _app(1)
    clocks = _clock_threads()
    started = time.monotonic()
    report = testing.replay(db_path, engine)
    assert time.monotonic() - started < 5  # the PENDING workflow's day-long sleep is not waited for
    assert _clock_threads() == clocks  # nor left armed on the application engine's clock
    assert report.ok and report.failures == []
    outcomes = {r.workflow_id: (r.status, r.outcome) for r in report.results}
    assert outcomes == {
        "flow-1": ("SUCCESS", "replayed"),
        "aflow-1": ("SUCCESS", "replayed"),
        "waiting-1": ("PENDING", "replayed"),
    }
    by_id = {r.workflow_id: r for r in report.results}
    assert by_id["flow-1"].detail == "returned"
    assert by_id["waiting-1"].detail.startswith("its history ends here")
    assert ran == []  # no step body ran
    assert _fingerprint(db_path) == before


def test_a_reordered_and_a_renamed_step_are_caught_with_both_names(db_path: str) -> None:
    _record(db_path)
    before = _fingerprint(db_path)
    engine, ran = _app(2)
    report = testing.replay(db_path, engine)
    assert not report.ok
    parked = {(r.workflow_id, r.status, r.position, r.recorded, r.called) for r in report.failures}
    assert parked == {("flow-1", "SUCCESS", 0, "a", "b"), ("waiting-1", "PENDING", 0, "a", "c")}
    assert {r.workflow_id: r.outcome for r in report.results}["aflow-1"] == "replayed"
    with pytest.raises(AssertionError, match=r"waiting-1 \(waiting, PENDING\): parked at step 0: recorded 'a'"):
        report.assert_ok()
    assert ran == []
    assert _fingerprint(db_path) == before


def test_filters_by_id_and_status(db_path: str) -> None:
    _record(db_path)
    engine, _ran = _app(2)
    pending = testing.replay(db_path, engine, statuses=["PENDING"])
    assert [r.workflow_id for r in pending.results] == ["waiting-1"]
    one = testing.replay(db_path, engine, workflow_ids=["aflow-1"])
    assert [(r.workflow_id, r.outcome) for r in one.results] == [("aflow-1", "replayed")] and one.ok
    with pytest.raises(durably.errors.UsageError, match="no workflow with id 'nope'"):
        testing.replay(db_path, engine, workflow_ids=["nope"])


def test_a_pending_workflow_nothing_registers_fails_a_finished_one_does_not(db_path: str) -> None:
    _record(db_path)
    engine = durably.Engine("never-opened.db")  # registers nothing
    report = testing.replay(db_path, engine)
    assert {r.workflow_id: r.outcome for r in report.results} == dict.fromkeys(
        ["flow-1", "aflow-1", "waiting-1"], "unregistered"
    )
    assert [r.workflow_id for r in report.failures] == ["waiting-1"]


def test_the_replayer_agrees_with_a_real_run(db_path: str) -> None:
    """What the Replayer says of the PENDING workflow under version 2 is
    what opening the database with version 2 does: park it at that step."""
    _record(db_path)
    engine, _ran = _app(2)
    [said] = testing.replay(db_path, engine, statuses=["PENDING"]).failures
    real = durably.Engine(db_path)
    declare(real, 2, [])
    with real:
        deadline = time.monotonic() + 10
        while real.handle("waiting-1").info().parked is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        parked = real.handle("waiting-1").info().parked
    assert f"called {said.called!r} at step {said.position}" in parked and repr(said.recorded) in parked


def _write_history(db: str, histories: dict[str, tuple[str, str, list[tuple[str, str]]]]) -> None:
    """PENDING workflows whose journals hold only the given steps (their
    process died before the next): workflow id -> (name, inputs, [(step, output)])."""
    from durably import _records as R
    from durably.journal import Journal, Record
    from durably.store import make_store

    durably.Engine(db).open().close()  # the schema
    store = make_store(db)
    store.open()
    journal = Journal(store.flush)
    journal.start()
    for wid, (name, inputs, steps) in histories.items():
        journal.submit(Record(R.START, (wid, name, inputs, None, None)))
        for position, (step, output) in enumerate(steps):
            journal.submit(Record(R.STEP, (wid, position, step, output, None, None, None)))
    journal.stop()
    store.close()


def _history_ends_after_one_step(db: str) -> None:
    """A PENDING flow and aflow whose journals hold their first step only."""
    _write_history(db, {"flow-2": ("flow", "[[1],{}]", [("a", "2")]), "aflow-2": ("aflow", "[[1],{}]", [("inc", "2")])})


def test_where_the_history_ends_before_a_step_its_body_is_not_run(db_path: str) -> None:
    _history_ends_after_one_step(db_path)
    engine, ran = _app(1)
    report = testing.replay(db_path, engine)
    assert [(r.workflow_id, r.status, r.outcome) for r in sorted(report.results, key=lambda r: r.workflow_id)] == [
        ("aflow-2", "PENDING", "replayed"),
        ("flow-2", "PENDING", "replayed"),
    ]
    assert all(r.detail.startswith("its history ends here") for r in report.results)
    assert ran == []  # b (flow) and the second inc (aflow) would run live: not here


def test_postgresql_sessions_of_the_replayer_are_read_only() -> None:
    url = _replay.read_only_url("postgresql://u@h/db?schema=s&options=-csearch_path%3Dx")
    assert url == "postgresql://u@h/db?schema=s&options=-csearch_path%3Dx%20-cdefault_transaction_read_only%3Don"
    assert _replay.read_only_url("/tmp/app.db") == "/tmp/app.db"


def test_the_replayer_reads_postgresql_in_read_only_transactions(db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not db_path.startswith("postgresql"):
        pytest.skip("PostgreSQL's read-only sessions (SQLite: opened read-only, checked byte for byte above)")
    _record(db_path)
    seen: list[Any] = []
    select = _replay._select

    def spy(store: Any, *args: Any) -> Any:
        seen.append(store.query("SHOW default_transaction_read_only"))
        with pytest.raises(Exception, match="read-only transaction"):
            store.query("UPDATE workflows SET name = name RETURNING 1")
        return select(store, *args)

    monkeypatch.setattr(_replay, "_select", spy)
    engine, _ran = _app(1)
    assert testing.replay(db_path, engine).ok
    assert seen == [[("on",)]]


@pytest.fixture
def app_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Two versions of an application module: replay_app_v1, replay_app_v2."""
    tag = tmp_path.name.replace("-", "_")
    for version in (1, 2):
        (tmp_path / f"replay_app_{tag}_v{version}.py").write_text(APP.format(version=version))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"replay_app_{tag}"
    for version in (1, 2):
        sys.modules.pop(f"replay_app_{tag}_v{version}", None)


def test_cli_exits_0_when_nothing_would_park_and_1_naming_each_that_would(
    db_path: str, app_modules: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(db_path)
    before = _fingerprint(db_path)
    assert main(["replay", db_path, "--app", f"{app_modules}_v1:engine"]) == 0
    assert "3 workflow(s) replayed: none would park" in capsys.readouterr().out
    assert main(["replay", db_path, "--app", f"{app_modules}_v2:engine"]) == 1
    out = capsys.readouterr().out
    assert "2 of 3 workflow(s) would park" in out
    assert "at step 0: recorded 'a', the code calls 'c'" in out
    assert main(["replay", db_path, "--app", f"{app_modules}_v2:engine", "--status", "SUCCESS", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["failures"] == 1
    assert sorted((w["workflow_id"], w["recorded"], w["called"], w["fails"]) for w in doc["workflows"]) == [
        ("aflow-1", None, None, False),
        ("flow-1", "a", "b", True),
    ]
    assert sys.modules[f"{app_modules}_v2"].RAN == []
    assert _fingerprint(db_path) == before


def test_cli_refuses_a_bad_app_in_one_line(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    _record(db_path)
    assert main(["replay", db_path, "--app", "no_such_module_here:engine"]) == 2
    assert "cannot import 'no_such_module_here'" in capsys.readouterr().err
    assert main(["replay", db_path, "--app", "durably:Status"]) == 2
    assert "must be a durably.Engine (or a durably.Registry), not <enum 'Status'>" in capsys.readouterr().err


def _async_and_tx_app(path: str, version: int, ran: list[str]) -> durably.Engine:
    engine = durably.Engine(path)

    @engine.step(name="inc" if version == 1 else "increment")
    async def inc(x: int) -> int:
        ran.append("inc")
        return x + 1

    @engine.workflow(name="pair")
    async def pair(x: int) -> list[int]:
        return list(await asyncio.gather(inc(x), inc(x + 10)))

    @engine.step(name="a")
    def a(x: int) -> int:
        ran.append("a")
        return x

    @engine.transaction(name="book")
    def book(db: durably.Tx, x: int) -> int:
        ran.append("book")
        db.execute("CREATE TABLE IF NOT EXISTS booked (x INTEGER)")
        db.execute("INSERT INTO booked VALUES (?)", (x,))
        return x

    @engine.workflow(name="booking")
    def booking(x: int) -> int:
        return book(a(x))

    return engine


def test_async_branches_and_transaction_steps(db_path: str) -> None:
    """gather's branches replay by their keys; a renamed async step parks at
    its key; a transaction step replays from its record, and where the
    history ends before one, its body is not run."""
    with _async_and_tx_app(db_path, 1, []) as released:
        assert released.run("pair", 1, workflow_id="pair-1") == [2, 12]
        assert released.run("booking", 5, workflow_id="booking-1") == 5
    before = _fingerprint(db_path)
    ran: list[str] = []
    same = testing.replay(db_path, _async_and_tx_app("never-opened.db", 1, ran))
    assert same.ok and {r.outcome for r in same.results} == {"replayed"}
    changed = testing.replay(db_path, _async_and_tx_app("never-opened.db", 2, ran))
    [parked] = changed.failures
    assert (parked.workflow_id, parked.recorded, parked.called) == ("pair-1", "inc", "increment")
    assert ran == [] and _fingerprint(db_path) == before


def test_a_transaction_step_past_the_history_is_not_run(db_path: str) -> None:
    _write_history(db_path, {"booking-2": ("booking", "[[7],{}]", [("a", "7")])})
    ran: list[str] = []
    [result] = testing.replay(db_path, _async_and_tx_app("never-opened.db", 1, ran)).results
    assert (result.outcome, result.status) == ("replayed", "PENDING") and result.detail.startswith("its history ends")
    assert ran == []
