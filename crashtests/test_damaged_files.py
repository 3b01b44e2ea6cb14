"""Damaged files: a typed error at open, no hang, nothing run, nothing rewritten;
a torn WAL tail opens and loses only the tail."""

from __future__ import annotations

import os
from pathlib import Path

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
    while offset + 24 + page_size <= len(data) and data[offset + 8:offset + 16] == salts:
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
    root, page_size = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'steps'").get, conn.pragma("page_size")
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
