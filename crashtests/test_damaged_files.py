"""Damaged files: a typed error at open, no hang, nothing run, nothing rewritten;
a torn WAL tail opens and loses only the tail; a WAL another program folded
into the main file opens, a lost one (or a reader's empty one) is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import apsw
import pytest

import durably
from durably import errors

from .harness import run_case, run_workload, snapshot


def _files(db: Path) -> dict[str, bytes]:
    """The main file and the WAL's content (an absent and an empty WAL hold the same: nothing)."""
    return {s: (Path(str(db) + s).read_bytes() if Path(str(db) + s).exists() else b"") for s in ("", "-wal")}


def _valid_wal_end(wal: Path) -> int:
    """Byte offset where the current WAL generation ends: frames after it carry
    an older salt (left over from before the WAL was restarted)."""
    import struct

    data = wal.read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    end, offset = 32, 32
    while offset + 24 + page_size <= len(data) and data[offset + 8 : offset + 16] == salts:
        offset += 24 + page_size
        end = offset
    return end


def _crashed_db(tmp: Path) -> Path:
    """A database whose workload was SIGKILLed with work in its WAL."""
    run = run_workload(tmp / "crash.db", tmp / "ledger.txt", "step.after_body:9", workflows=6, steps=4)
    assert run.returncode == -9
    assert (tmp / "crash.db-wal").stat().st_size > 0
    _crash_runs[tmp] = run
    return tmp / "crash.db"


_crash_runs: dict[Path, object] = {}


def _clean_db(tmp: Path) -> Path:
    run = run_workload(tmp / "crash.db", tmp / "ledger.txt", None, workflows=6, steps=4)
    assert run.returncode == 0, run.stderr
    wal = tmp / "crash.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # closed cleanly: nothing left in a WAL
    return tmp / "crash.db"


def _refused(db: Path, kind: type[BaseException], **kw: object) -> BaseException:
    before = _files(db)
    engine = durably.Engine(str(db), **kw)
    ran: list[int] = []
    engine.workflow(name="__main__.sync_flow")(lambda steps: ran.append(1))
    with pytest.raises(kind) as info:
        engine.open()
    assert ran == []  # nothing ran on a damaged database
    assert _files(db) == before  # and nothing was rewritten
    return info.value


def test_empty_file(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    err = _refused(db, errors.DatabaseCorruptError)
    assert "empty" in str(err)


def test_non_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"hello, this is a text file\n" * 500)
    _refused(db, errors.NotADatabaseError)


def test_flipped_header_bytes(tmp_path: Path) -> None:
    db = _clean_db(tmp_path)
    data = bytearray(db.read_bytes())
    data[0:16] = bytes(b ^ 0xFF for b in data[0:16])  # the "SQLite format 3" magic
    db.write_bytes(bytes(data))
    _refused(db, errors.StorageError)


def _flip_btree_page(db: Path) -> None:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    root, page_size = (
        conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'steps'").get,
        conn.pragma("page_size"),
    )
    conn.close()
    with db.open("r+b") as f:  # the test process is not an engine process
        f.seek((root - 1) * page_size)
        f.write(b"\xff\xff\xff\xff")  # an invalid b-tree page type and header


def test_flipped_page_bytes_with_check_always(tmp_path: Path) -> None:
    db = _clean_db(tmp_path)
    _flip_btree_page(db)
    _refused(db, errors.DatabaseCorruptError, check="always")


def test_truncated_database_after_clean_close(tmp_path: Path) -> None:
    db = _clean_db(tmp_path)
    os.truncate(db, db.stat().st_size // 2)
    err = _refused(db, errors.DatabaseCorruptError)
    assert "truncated" in str(err)


def test_truncated_database_after_crash_fails_quick_check(tmp_path: Path) -> None:
    db = _crashed_db(tmp_path)
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    conn.close()
    os.truncate(db, 4096)  # only the first page is left of the main file
    _refused(db, errors.StorageError)


def test_deleted_hot_wal_is_refused(tmp_path: Path) -> None:
    db = _crashed_db(tmp_path)
    os.remove(str(db) + "-wal")
    Path(str(db) + "-shm").unlink(missing_ok=True)
    err = _refused(db, errors.WalMissingError)
    assert "-wal" in str(err)


def test_torn_wal_tail_loses_only_the_tail(tmp_path: Path) -> None:
    db = _crashed_db(tmp_path)
    wal = Path(str(db) + "-wal")
    before, _ = snapshot(db, 4)
    end = _valid_wal_end(wal)
    assert end > 32
    os.truncate(wal, end - 1000)  # tear the last frame of the current log
    after, torn = snapshot(db, 4)
    # SQLite drops the frames of the torn commit: only that commit's records go
    # (at most one per workflow in flight), everything older survives intact
    assert after <= before and len(before - after) <= 9 and torn == 0
    verdict = run_case(tmp_path, [], prior_runs=[_crash_runs[tmp_path]])
    assert verdict.runs[-1].returncode == 0
    assert verdict.lost == verdict.unexpected == verdict.tx_duplicates == 0
    # A lost record shows as an outcome recorded before the tear and run again
    # (rerun_recorded), as acked_lost if it had been acknowledged, and as one
    # "speculative" body: the next step had (legitimately, once the record was
    # durable) run on the value the tear destroyed. Nothing beyond the tail.
    lost = len(before - after)
    assert max(verdict.rerun_recorded, verdict.acked_lost, verdict.speculative) <= lost


# -- a WAL folded in by another program vs. a lost one ---------------------------------

_RUN_THEN_DIE = """
import os, signal, sys
import durably

engine = durably.Engine(sys.argv[1])

@engine.step(name="work")
def work(i: int) -> int:
    return i

@engine.workflow(name="job")
def job(i: int) -> int:
    return work(i) + work(i + 1)

engine.open()
for i in range(int(sys.argv[2])):
    assert engine.run(job, i, workflow_id=f"w{i}") == 2 * i + 1
os.kill(os.getpid(), signal.SIGKILL)  # every workflow done and acknowledged, then a crash
"""

# Another program reading the file after the crash: Python's stdlib sqlite3
# in its own process (never in an engine's process, DESIGN.md section 3),
# or the sqlite3 command-line shell. Read-write, it folds the WAL into the
# main file when it closes and deletes it; read-only, it makes an empty
# -wal where there is none.
_READ_WITH_PYTHON = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
    "print(c.execute('SELECT count(*) FROM workflows').fetchone()[0]); c.close()"
)
_READ_ONLY_WITH_PYTHON = (
    "import sqlite3, sys; c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True); "
    "print(c.execute('SELECT count(*) FROM workflows').fetchone()[0]); c.close()"
)
_SHELL = shutil.which("sqlite3")
_READERS = ["python", pytest.param("shell", marks=pytest.mark.skipif(_SHELL is None, reason="no sqlite3 shell"))]


def _read_with(reader: str, db: Path, read_only: bool = False) -> int:
    if reader == "python":
        cmd = [sys.executable, "-c", _READ_ONLY_WITH_PYTHON if read_only else _READ_WITH_PYTHON, str(db)]
    else:
        cmd = [str(_SHELL), *(["-readonly"] if read_only else []), str(db), "SELECT count(*) FROM workflows"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def _run_then_die(db: Path, workflows: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_THEN_DIE, str(db), str(workflows)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr
    assert Path(str(db) + "-wal").stat().st_size > 0


def _in_main_file(db: Path) -> tuple[int, object]:
    """Workflows and the crash mark in the main file alone (its WAL ignored)."""
    uri = f"file:{quote(os.path.abspath(db))}?immutable=1"  # no locks, no -wal read or made
    conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return (
            conn.execute("SELECT count(*) FROM workflows").get,
            conn.execute("SELECT value FROM engine_state WHERE key = 'open'").get,
        )
    finally:
        conn.close()


def _opens_with_every_workflow(db: Path, workflows: int) -> None:
    engine = durably.Engine(str(db))
    engine.workflow(name="job")(lambda i: -1)  # never runs: every workflow ended before the crash
    with engine:
        listed = engine.list_workflows(limit=workflows + 10)
        assert len(listed) == workflows
        assert all(w.status == "SUCCESS" for w in listed)
        assert engine.handle(f"w{workflows - 1}").result(timeout=10) == 2 * workflows - 1


@pytest.mark.parametrize("reader", _READERS)
def test_a_wal_folded_in_by_a_sqlite3_read_after_a_crash_opens_with_every_workflow(tmp_path: Path, reader: str) -> None:
    db = tmp_path / "app.db"
    _run_then_die(db, 50)
    assert _in_main_file(db)[0] < 50  # the WAL held work the main file did not
    assert _read_with(reader, db) == 50  # it reads all 50, folds the WAL in and deletes it
    assert not Path(str(db) + "-wal").exists()
    assert _in_main_file(db)[0] == 50
    _opens_with_every_workflow(db, 50)  # no WalMissingError: nothing is missing


def test_after_checkpoints_a_folded_wal_opens_and_a_lost_one_is_refused(tmp_path: Path) -> None:
    """Enough work for the engine to checkpoint several times before the
    crash: the main file holds most of it, the WAL the rest. Folded in, all
    there; lost (the file copied without its -wal), refused."""
    db = tmp_path / "app.db"
    for _attempt in range(3):
        _run_then_die(db, 700)
        in_main, _ = _in_main_file(db)
        if in_main < 700:
            break
        # A checkpoint came due right after the last workflow (CI, once): the
        # WAL holds none of them, not the case under test: run it again.
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    assert 0 < in_main < 700  # checkpointed, and the WAL held more
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(db, copy / "app.db")  # a copy taken without the -wal: the WAL's share is lost
    _refused(copy / "app.db", errors.WalMissingError)
    assert _read_with("python", db) == 700
    _opens_with_every_workflow(db, 700)


@pytest.mark.parametrize("reader", ["apsw", *_READERS])
def test_an_empty_wal_left_by_a_reader_is_not_taken_for_the_lost_one(tmp_path: Path, reader: str) -> None:
    db = _crashed_db(tmp_path)
    os.remove(str(db) + "-wal")  # the real WAL is lost...
    Path(str(db) + "-shm").unlink(missing_ok=True)
    if reader == "apsw":  # ...then a reader opens the file, which makes an empty -wal
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        assert conn.execute("SELECT count(*) FROM steps").get is not None
        conn.close()
    else:
        _read_with(reader, db, read_only=True)
    assert Path(str(db) + "-wal").stat().st_size == 0
    err = _refused(db, errors.WalMissingError)
    assert "empty" in str(err)
    _refused(db, errors.WalMissingError)  # and again (a supervisor's restart)
    accepted = subprocess.run(
        [sys.executable, "-m", "durably", "accept-wal-loss", str(db)], capture_output=True, text=True, timeout=60
    )
    assert accepted.returncode == 0, accepted.stderr
    verdict = run_case(tmp_path, [], prior_runs=[_crash_runs[tmp_path]])  # the operator's decision: it goes on
    assert verdict.runs[-1].returncode == 0 and verdict.lost == verdict.unexpected == verdict.tx_duplicates == 0
