"""Online backup: ``engine.backup(dest)`` and ``durably.operations.backup``.

A backup taken while workflows keep starting holds every workflow
acknowledged before it began; an engine opened on the copy resumes its
pending workflows at once and they finish, with no recorded step run again;
a bad destination is refused with nothing written; PostgreSQL points at
pg_dump."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

import durably
import durably.operations.backup as backups
from durably import errors

from .conftest import pg_schema_url

PAD = "p" * 2048


def _engine(path: str, runs: Counter[str], **kw: object) -> durably.Engine:
    """An engine with the test's workflows; ``runs`` counts step-body runs per workflow."""
    engine = durably.Engine(path, **kw)  # type: ignore[arg-type]

    @engine.step(name="pad")
    def pad(wid: str) -> str:
        runs[wid] += 1
        return PAD

    @engine.workflow(name="filler")
    def filler(wid: str) -> int:
        return len(pad(wid))

    @engine.workflow(name="waiter")
    def waiter(wid: str) -> str:
        pad(wid)
        return str(engine.recv(topic="go", timeout=600))

    return engine


def _quick_check(path: Path) -> list[str]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [row[0] for row in conn.execute("PRAGMA quick_check")]
    finally:
        conn.close()


def test_backup_under_load_holds_every_acknowledged_workflow_and_resumes_the_pending_ones(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    source = _engine(str(tmp_path / "app.db"), runs)
    acked: list[str] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            source.start("filler", f"load-{n}", workflow_id=f"load-{n}")
            acked.append(f"load-{n}")
            n += 1

    with source:
        for h in [source.start("filler", f"f-{i}", workflow_id=f"f-{i}") for i in range(1500)]:
            h.result(timeout=60)  # ~6 MB: the copy takes many steps
        waiters = [f"w-{i}" for i in range(5)]
        for wid in waiters:
            source.start("waiter", wid, workflow_id=wid)
        while any(runs[wid] == 0 for wid in waiters):
            time.sleep(0.005)  # each waiter recorded its step and waits for a message
        loader = threading.Thread(target=load)
        loader.start()
        while len(acked) < 20:
            time.sleep(0.001)
        before = set(acked) | set(waiters) | {f"f-{i}" for i in range(1500)}
        report = source.backup(str(tmp_path / "copy.db"))
        during = len(acked)
        stop.set()
        loader.join()
    assert during > 20  # workflows kept starting while it copied
    assert report.path == str(tmp_path / "copy.db") and report.pages > 4 * 256 and report.seconds > 0
    assert report.bytes == os.path.getsize(report.path)
    assert sorted(os.listdir(tmp_path)) == ["app.db", "copy.db"]  # no temporary file, no -wal beside the copy
    assert _quick_check(tmp_path / "copy.db") == ["ok"]

    ran_before = dict(runs)
    copy = _engine(report.path, runs)
    with copy:  # opens as it is: no WalMissingError, and the source's executor is not waited for
        held = {w.workflow_id for w in copy.list_workflows(limit=None)}
        assert before <= held
        assert set(waiters) <= {w.workflow_id for w in copy.list_workflows(status="PENDING")}
        for wid in waiters:
            copy.send(wid, "go", topic="go")
        assert [copy.handle(wid).result(timeout=30) for wid in waiters] == ["go"] * 5
        for wid in held:  # every workflow of the copy finishes there
            assert copy.handle(wid).result(timeout=30) in (2048, "go")
    recorded = set(waiters) | {f"f-{i}" for i in range(1500)}  # their steps were recorded before it began
    assert {wid: runs[wid] for wid in recorded} == {wid: ran_before[wid] for wid in recorded}
    # A step in flight when the snapshot was taken runs again on the copy, as after a crash, at most once more.
    assert all(runs[wid] - ran_before.get(wid, 0) <= 1 for wid in held)


def test_module_backup_of_a_closed_file_and_a_file_copied_without_its_wal(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    engine = _engine(str(tmp_path / "app.db"), runs)
    with engine:
        engine.start("waiter", "w", workflow_id="w")
        while not runs["w"]:
            time.sleep(0.005)
        # A copy of the main file alone while the engine runs: its -wal is lost.
        (tmp_path / "torn.db").write_bytes((tmp_path / "app.db").read_bytes())
    report = backups.backup(str(tmp_path / "app.db"), str(tmp_path / "copy.db"))
    assert report.pages > 0 and os.path.getsize(report.path) == report.bytes
    copy = _engine(report.path, runs)
    with copy:
        copy.send("w", "go", topic="go")
        assert copy.handle("w").result(timeout=30) == "go"
    assert runs["w"] == 1
    with pytest.raises(errors.WalMissingError):  # never laundered into a clean copy
        backups.backup(str(tmp_path / "torn.db"), str(tmp_path / "torn-copy.db"))
    assert not (tmp_path / "torn-copy.db").exists()


@pytest.fixture
def open_engine(tmp_path: Path) -> Iterator[durably.Engine]:
    engine = _engine(str(tmp_path / "app.db"), Counter())
    with engine:
        engine.run("filler", "x")
        yield engine


@pytest.mark.parametrize(
    "dest, why",
    [
        ("missing/copy.db", "does not exist"),
        ("taken.db", "already exists"),
        ("stale.db", "stale.db-wal"),  # a -wal SQLite would read as the copy's
        ("app.db", "is the source"),
        ("", "file path"),
    ],
)
def test_a_bad_destination_is_refused_with_nothing_written(
    tmp_path: Path, open_engine: durably.Engine, dest: str, why: str
) -> None:
    (tmp_path / "taken.db").write_text("mine")
    (tmp_path / "stale.db-wal").write_text("old")
    listing = sorted(os.listdir(tmp_path))
    target = str(tmp_path / dest) if dest else dest
    with pytest.raises(errors.BackupDestinationError, match=why) as info:
        open_engine.backup(target)
    assert isinstance(info.value, errors.UsageError)
    with pytest.raises(errors.BackupDestinationError):
        backups.backup(str(tmp_path / "app.db"), target)
    assert sorted(os.listdir(tmp_path)) == listing  # nothing written
    assert (tmp_path / "taken.db").read_text() == "mine"


def test_backup_needs_a_file_and_an_open_engine(tmp_path: Path) -> None:
    with durably.Engine(":memory:") as memory, pytest.raises(errors.UsageError, match="in-memory"):
        memory.backup(str(tmp_path / "copy.db"))
    with pytest.raises(errors.NotOpenError):
        durably.Engine(str(tmp_path / "app.db")).backup(str(tmp_path / "copy.db"))
    with pytest.raises(errors.CantOpenError):
        backups.backup(str(tmp_path / "nothing.db"), str(tmp_path / "copy.db"))
    assert sorted(os.listdir(tmp_path)) == []
    foreign = apsw.Connection(str(tmp_path / "theirs.db"))  # an SQLite file that is not durably's
    foreign.execute("CREATE TABLE t (x)")
    foreign.close()
    before = (tmp_path / "theirs.db").read_bytes()
    with pytest.raises(errors.SchemaVersionError):
        backups.backup(str(tmp_path / "theirs.db"), str(tmp_path / "copy.db"))
    (tmp_path / "text.db").write_text("not a database at all" * 100)
    with pytest.raises(errors.StorageError):
        backups.backup(str(tmp_path / "text.db"), str(tmp_path / "copy.db"))
    assert sorted(os.listdir(tmp_path)) == ["text.db", "theirs.db"]  # nothing else written...
    assert (tmp_path / "theirs.db").read_bytes() == before  # ...nor changed


def test_engine_backup_on_postgresql_points_at_pg_dump(tmp_path: Path) -> None:
    urls = pg_schema_url()
    url = next(urls)
    try:
        with durably.Engine(url) as engine, pytest.raises(errors.UsageError) as info:
            engine.backup(str(tmp_path / "copy.db"))
        assert "pg_dump --schema=t_" in str(info.value) and "durably backup URL DEST.db" in str(info.value)
        assert os.listdir(tmp_path) == []
        with pytest.raises(errors.UsageError, match="checkpoints= applies to SQLite"):
            durably.Engine(url, checkpoints="external")
    finally:
        next(urls, None)


def test_module_backup_of_a_postgresql_url_checks_the_destination_first(tmp_path: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(errors.BackupDestinationError):
        backups.backup(url, str(tmp_path / "missing" / "copy.db"))
    assert os.listdir(tmp_path) == []


def test_a_postgresql_database_in_use_is_backed_up_to_an_sqlite_file_that_resumes_its_work(tmp_path: Path) -> None:
    urls = pg_schema_url()
    url = next(urls)
    try:
        runs: Counter[str] = Counter()
        with _engine(url, runs) as live:  # a running engine: the backup is one snapshot of its database
            live.run("filler", "done", workflow_id="done")
            live.start("waiter", "w", workflow_id="w")
            deadline = time.monotonic() + 15
            while not live.steps("w") and time.monotonic() < deadline:
                time.sleep(0.01)  # until the waiter's step is recorded (it then waits in recv)
            report = backups.backup(url, str(tmp_path / "copy.db"))
            assert report.path == str(tmp_path / "copy.db") and report.bytes > 0
            live.send("w", "at the source", topic="go")
            assert live.handle("w").result(timeout=15) == "at the source"
        assert _quick_check(tmp_path / "copy.db") == ["ok"]
        with _engine(report.path, runs) as copy:
            assert copy.handle("done").result(timeout=5) == len(PAD)
            copy.send("w", "at the copy", topic="go")
            assert copy.handle("w").result(timeout=15) == "at the copy"
        assert runs == {"done": 1, "w": 1}  # the copy replayed the waiter's recorded step, never ran it again
    finally:
        next(urls, None)


def test_the_command_line_backs_up_a_file_an_engine_of_another_process_may_use(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    with _engine(str(tmp_path / "app.db"), runs) as engine:
        engine.run("filler", "a", workflow_id="a")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "durably", "backup", *args], capture_output=True, text=True)

    done = cli(str(tmp_path / "app.db"), str(tmp_path / "copy.db"))
    assert done.returncode == 0 and "copy.db" in done.stdout, done.stderr
    with _engine(str(tmp_path / "copy.db"), runs) as copy:
        assert copy.handle("a").result(timeout=10) == 2048
    for bad in [
        (str(tmp_path / "app.db"), str(tmp_path / "copy.db")),
        (str(tmp_path / "no.db"), str(tmp_path / "x.db")),
    ]:
        refused = cli(*bad)
        assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    # Nothing else written (the source's -wal and -shm: a reader's, as any connection leaves them).
    assert {n for n in os.listdir(tmp_path) if not n.endswith(("-wal", "-shm"))} == {"app.db", "copy.db"}
