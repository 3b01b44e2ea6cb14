"""``durably copy``: a whole database moved between SQLite and PostgreSQL
(durably/operations/copy.py).

The source is left the way a real move finds it: a worker process
(tests/_copyworker.py) runs workflows of every kind until each is in
flight, then is SIGKILLed. Its file is copied to PostgreSQL and back;
every public read agrees on all three; engines opened on the destinations
finish what was in flight, and a ledger of step-body runs shows that no
step recorded at the source ran again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durably
from durably import testing
from durably.operations.copy import copy

from .conftest import pg_schema_url

sys.path.insert(0, str(Path(__file__).parent))
import _copyworker

WORKER = str(Path(__file__).with_name("_copyworker.py"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from pg_schema_url()


@pytest.fixture
def pg_url2() -> Iterator[str]:
    yield from pg_schema_url()


def _crashed_source(tmp_path: Path) -> tuple[str, set[str]]:
    """A file left by a SIGKILLed worker with workflows in flight, and the
    ledger of the step bodies it ran."""
    db, ledger, ready = (str(tmp_path / n) for n in ("src.db", "src.ledger", "ready"))
    proc = subprocess.Popen([sys.executable, WORKER, db, ledger, ready], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the worker never got its workflows in flight"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.communicate()
    return db, _ledger(ledger)


def _ledger(path: str) -> set[str]:
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == len(set(lines)), f"a step body ran twice in one place: {lines}"
    return set(lines)


def _plain(info: Any) -> Any:
    """A WorkflowInfo or StepInfo with its error as text (a decoded
    exception compares by identity)."""
    return dataclasses.replace(info, error=repr(info.error))


def _reads(path: str) -> dict[str, Any]:
    """Everything public reads say about a database (a client engine)."""
    with durably.Engine(path, client=True) as engine:
        infos = engine.list_workflows(limit=None)
        ids = [i.workflow_id for i in infos]
        return {
            "workflows": [_plain(i) for i in infos],
            "stored": testing.workflows(engine),
            "steps": {wid: [_plain(s) for s in engine.steps(wid)] for wid in ids},
            "stored_steps": {wid: testing.steps(engine, wid) for wid in ids},
            "events": {wid: engine.get_all_events(wid) for wid in ids},
            "messages": testing.messages(engine),
            "queue": testing.queue_entries(engine),
            "send_keys": testing.send_keys(engine),
            "schedules": engine.list_schedules(),
            "stats": (engine.stats().workflows, engine.stats().steps, engine.stats().queued),
        }


def _cli_view(db: str) -> dict[str, Any]:
    """``durably list --json`` and ``durably show --json`` of every workflow of ``db``."""

    def cli(*args: str) -> Any:
        run = subprocess.run(
            [sys.executable, "-m", "durably", *args, "--json"], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    listed = cli("list", db, "--limit", "0")
    return {"list": listed, "show": {w["workflow_id"]: cli("show", db, w["workflow_id"]) for w in listed["workflows"]}}


def _finish(path: str, ledger: str) -> tuple[dict[str, Any], set[str]]:
    """Open an executor on ``path``; release what waits; every in-flight
    workflow's result, and the ledger of the bodies run here."""
    engine = durably.Engine(path)
    _copyworker.build(engine, ledger, hold=False)
    engine.queue("serial", concurrency=1)
    with engine:
        child = _copyworker.child_of(engine, "parent")
        engine.send("waiter", "w", topic="go")
        engine.send(child, "c", topic="go")
        results = {wid: engine.handle(wid).result(timeout=60) for wid in (*_copyworker.IN_FLIGHT, child)}
        # ids and sequences go on past the copied ones
        engine.run("ok", 1, workflow_id="after-copy")
        assert engine.list_workflows(limit=1)[0].workflow_id == "after-copy"
        assert engine.stats().workflows["PENDING"] == 0
    return results, _ledger(ledger)


EXPECTED = {
    "steps": "S0S1S2HOLDS3",
    "sleeper": "AFTER",
    "waiter": "AFTER-W",
    "parent": "P1C1-C",
    "queued": "Q",
    "parent/1": "C1-C",
}
# Bodies a destination runs: the one whose run the kill interrupted (never
# recorded: it runs again, as after any crash), and what came after the waits.
RUN_AT_DEST = {
    "steps hold",
    "steps s3",
    "sleeper after",
    "waiter after-w",
    "parent/1 c1-c",
    "queued q",
    "after-copy one",
}


def test_round_trip_sqlite_postgresql_sqlite_keeps_every_read_and_finishes_in_flight_work(
    tmp_path: Path, pg_url: str
) -> None:
    src, ran_at_source = _crashed_source(tmp_path)
    back = str(tmp_path / "back.db")
    to_pg = copy(src, pg_url)
    to_file = copy(pg_url, back)
    assert to_pg.rows == to_file.rows
    assert to_pg.workflows == 9 and to_pg.rows["steps"] > 10 and to_pg.rows["schedules"] == 1
    assert to_pg.rows["messages"] == 1 and to_pg.rows["send_keys"] == 1 and to_pg.rows["queue_entries"] == 2

    before = _reads(src)
    assert before["stats"][0]["PENDING"] == 6  # ENQUEUED is counted as PENDING in stats
    assert _reads(pg_url) == before
    assert _reads(back) == before
    # and what an operator sees: `durably list` and `durably show` of every workflow, as JSON
    shown = _cli_view(src)
    assert len(shown["show"]) == 9 and set(EXPECTED) <= set(shown["show"])
    assert shown["show"]["steps"]["steps"] and shown["show"]["waiter"]["events"]
    assert _cli_view(pg_url) == shown
    assert _cli_view(back) == shown

    for dest in (back, pg_url):
        ledger = str(tmp_path / f"dest-{len(os.listdir(tmp_path))}.ledger")
        results, ran_here = _finish(dest, ledger)
        assert results == EXPECTED
        assert ran_here == RUN_AT_DEST
        assert ran_here & ran_at_source == {"steps hold"}  # no recorded step ran again


def test_sqlite_to_sqlite_copy_finishes_in_flight_work(tmp_path: Path) -> None:
    src, ran_at_source = _crashed_source(tmp_path)
    dest = str(tmp_path / "dest.db")
    report = copy(src, dest)
    assert report.workflows == 9 and report.seconds >= 0
    assert _reads(dest) == _reads(src)
    results, ran_here = _finish(dest, str(tmp_path / "dest.ledger"))
    assert results == EXPECTED and ran_here == RUN_AT_DEST
    assert not [n for n in os.listdir(tmp_path) if ".copy-" in n]  # no temporary file left


def _small_db(path: str, n: int = 3) -> None:
    engine = durably.Engine(path)

    @engine.workflow(name="ok")
    def ok(i: int) -> int:
        return i

    with engine:
        for i in range(n):
            engine.run(ok, i, workflow_id=f"w{i}")


def _counts(path: str) -> dict[str, int]:
    with durably.Engine(path, client=True) as engine:
        return testing.counts(engine)


def test_a_destination_file_that_exists_is_refused_and_left_alone(tmp_path: Path) -> None:
    src, dest = str(tmp_path / "src.db"), str(tmp_path / "dest.db")
    _small_db(src)
    _small_db(dest, 1)
    size = os.path.getsize(dest)
    with pytest.raises(durably.DestinationNotEmptyError, match="exists"):
        copy(src, dest)
    assert os.path.getsize(dest) == size and _counts(dest)["workflows"] == 1
    (tmp_path / "stray.db-wal").write_bytes(b"")  # another database's -wal would be applied to the copy
    with pytest.raises(durably.DestinationNotEmptyError, match="stray.db-wal"):
        copy(src, str(tmp_path / "stray.db"))
    assert not (tmp_path / "stray.db").exists()


def test_a_postgresql_destination_holding_data_is_refused_and_left_alone(tmp_path: Path, pg_url: str) -> None:
    src = str(tmp_path / "src.db")
    _small_db(src)
    _small_db(pg_url, 2)
    with pytest.raises(durably.DestinationNotEmptyError, match="already holds durably data"):
        copy(src, pg_url)
    assert _counts(pg_url)["workflows"] == 2


def test_an_empty_postgresql_schema_is_a_fine_destination(tmp_path: Path, pg_url: str) -> None:
    src = str(tmp_path / "src.db")
    _small_db(src)
    with durably.Engine(pg_url):  # created, used by nothing, closed
        pass
    assert copy(src, pg_url).workflows == 3
    assert _counts(pg_url)["workflows"] == 3


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_source_open_in_a_running_engine_is_refused(tmp_path: Path, kind: str, request: Any) -> None:
    src = request.getfixturevalue("pg_url") if kind == "postgresql" else str(tmp_path / "src.db")
    _small_db(src)
    dest = str(tmp_path / "dest.db")
    with durably.Engine(src):
        with pytest.raises(durably.DatabaseInUseError, match="running engine") as caught:
            copy(src, dest)
    if kind == "sqlite":
        assert "durably backup" in str(caught.value)  # how to copy a live file
    assert not os.path.exists(dest) and os.listdir(tmp_path) == (["src.db"] if kind == "sqlite" else [])
    assert copy(src, dest).workflows == 3  # closed: copied


def test_a_postgresql_destination_in_use_is_refused(tmp_path: Path, pg_url: str) -> None:
    src = str(tmp_path / "src.db")
    _small_db(src)
    with durably.Engine(pg_url):
        with pytest.raises(durably.DatabaseInUseError):
            copy(src, pg_url)
        assert _counts(pg_url)["workflows"] == 0


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("mysql://db/app", durably.UsageError),
        ("postgresql://[::1", durably.UsageError),
        ("postgresql://127.0.0.1:1/none?connect_timeout=2", durably.DatabaseUnavailableError),
        ("missing.db", durably.CantOpenError),
        (":memory:", durably.UsageError),
    ],
)
def test_bad_sources_are_refused_with_nothing_written(
    tmp_path: Path, source: str, error: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error):
        copy(source, "dest.db")
    assert os.listdir(tmp_path) == []


def test_bad_destinations_are_refused_with_nothing_written(tmp_path: Path) -> None:
    src = str(tmp_path / "src.db")
    _small_db(src)
    for dest in ("mysql://db/app", str(tmp_path / "no" / "such" / "folder.db"), ":memory:"):
        with pytest.raises(durably.UsageError):
            copy(src, dest)
    with pytest.raises(durably.UsageError, match="dest_schema"):
        copy(src, str(tmp_path / "d.db"), dest_schema="x")
    assert os.listdir(tmp_path) == ["src.db"]


def test_a_copy_that_fails_half_way_leaves_no_database(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source fails after the workflows were written: the SQLite copy
    is never placed, the PostgreSQL one rolls back to an empty schema, and
    a second run copies everything."""
    src = str(tmp_path / "src.db")
    _small_db(src)
    real = durably.store.Store.export_rows

    def failing(self: Any, chunk: int = 5000) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        for table, rows in real(self, chunk):
            yield table, rows
            if table == "workflows":  # after the destination wrote them
                raise durably.DiskIOError("the source failed", path=src)

    monkeypatch.setattr(durably.store.Store, "export_rows", failing)
    for dest in (str(tmp_path / "dest.db"), pg_url):
        with pytest.raises(durably.DiskIOError):
            copy(src, dest)
    assert sorted(os.listdir(tmp_path)) == ["src.db"]
    assert _counts(pg_url)["workflows"] == 0
    monkeypatch.undo()
    for dest in (str(tmp_path / "dest.db"), pg_url):
        assert copy(src, dest).workflows == 3
        assert _counts(dest)["workflows"] == 3 and _counts(dest)["steps"] == 0


def test_pickle_values_cross_both_ways(tmp_path: Path, pg_url: str) -> None:
    src, back = str(tmp_path / "src.db"), str(tmp_path / "back.db")
    engine = durably.Engine(src, codec="pickle")

    @engine.workflow(name="obj")
    def obj(n: int) -> complex:
        return complex(n, n)

    with engine:
        engine.run(obj, 2, workflow_id="o")
    copy(src, pg_url)
    copy(pg_url, back)
    for path in (pg_url, back):
        with durably.Engine(path, codec="pickle", client=True) as other:
            assert other.handle("o").result(timeout=5) == complex(2, 2)
        with pytest.raises(durably.CodecMismatchError):
            durably.Engine(path).open()


def test_the_command_line_copies_and_exits_2_on_a_destination_that_is_not_empty(tmp_path: Path) -> None:
    src, dest = str(tmp_path / "src.db"), str(tmp_path / "dest.db")
    _small_db(src)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "durably", *args], capture_output=True, text=True, timeout=60)

    done = run("copy", src, dest)
    assert done.returncode == 0, done.stderr
    assert "3 workflows" in done.stdout
    again = run("copy", src, dest)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "DestinationNotEmptyError" in again.stderr
    missing = run("copy", str(tmp_path / "missing.db"), str(tmp_path / "other.db"))
    assert missing.returncode == 2 and not (tmp_path / "other.db").exists()


def test_postgresql_to_postgresql_and_sequences_go_on(pg_url: str, pg_url2: str) -> None:
    _small_db(pg_url)
    assert copy(pg_url, pg_url2).workflows == 3
    engine = durably.Engine(pg_url2)

    @engine.workflow(name="ok")
    def ok(i: int) -> int:
        return i

    with engine:
        engine.run(ok, 9, workflow_id="new")
        assert [i.workflow_id for i in engine.list_workflows(limit=None)] == ["new", "w2", "w1", "w0"]
