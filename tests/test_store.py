"""Storage rules: PRAGMAs, file modes, schema versions, bad files, error mapping."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import apsw
import pytest

from durably import errors, testing
from durably.store import APPLICATION_ID, SCHEMA_VERSION, Store, expected_pragmas, read_pragmas


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_every_engine_connection_has_the_durable_pragmas(make_engine, db_path, synchronous) -> None:
    engine = make_engine(synchronous=synchronous)
    with engine:
        conns = engine._store.connections()
        assert len(conns) == 2  # writer and reader
        for conn in conns:
            assert read_pragmas(conn) == expected_pragmas(db_path, synchronous)
            assert conn.pragma("journal_mode") == "wal"
            assert conn.pragma("synchronous") == (2 if synchronous == "full" else 1)


def test_the_store_checkpoints_itself_and_each_checkpoint_starts_the_wal_over(
    make_engine, db_path, monkeypatch
) -> None:
    """SQLite's own automatic checkpoint is off (store/_checkpoint.py: it
    would copy states the crash mark says are past the last checkpoint);
    the store's copies the WAL, and the write after it starts the WAL over,
    so the -wal stays near the threshold instead of growing for ever."""
    from durably.store import _checkpoint

    monkeypatch.setattr(_checkpoint, "FRAMES", 16)
    monkeypatch.setattr(_checkpoint, "LOOK_EVERY", 0.0)
    engine = make_engine()

    @engine.step()
    def inc(i: int) -> int:
        return i + 1

    @engine.workflow()
    def flow(n: int) -> int:
        return sum(inc(i) for i in range(n))

    with engine:
        assert all(conn.pragma("wal_autocheckpoint") == 0 for conn in engine._store.connections())
        for _i in range(80):  # a few hundred WAL frames, many times the threshold
            assert engine.run(flow, 5) == 15
        frames = os.path.getsize(db_path + "-wal") // (4096 + 24)
        assert 0 < frames < 4 * 16, frames


def test_memory_engine_pragmas(make_engine) -> None:
    with make_engine(":memory:") as engine:
        (conn,) = engine._store.connections()
        assert read_pragmas(conn) == expected_pragmas(":memory:", "full")


def test_files_are_created_private(make_engine, db_path) -> None:
    engine = make_engine()

    @engine.workflow()
    def noop() -> int:
        return 1

    with engine:
        engine.run(noop)
        for suffix in ("", "-wal", "-shm"):
            mode = stat.S_IMODE(os.stat(db_path + suffix).st_mode)
            assert mode == 0o600, (suffix, oct(mode))


def test_schema_version_and_application_id(make_engine, db_path) -> None:
    with make_engine():
        pass
    conn = apsw.Connection(db_path)
    assert conn.pragma("user_version") == SCHEMA_VERSION
    assert conn.pragma("application_id") == APPLICATION_ID
    conn.close()
    with make_engine():  # reopening an up-to-date database changes nothing
        pass


def test_newer_schema_is_refused_and_left_untouched(make_engine, db_path) -> None:
    with make_engine():
        pass
    conn = apsw.Connection(db_path)
    conn.pragma("user_version", SCHEMA_VERSION + 1)
    conn.close()
    before = Path(db_path).read_bytes()
    with pytest.raises(errors.SchemaVersionError) as info:
        make_engine().open()
    assert info.value.found == SCHEMA_VERSION + 1 and info.value.supported == SCHEMA_VERSION
    assert "newer" in str(info.value)
    assert Path(db_path).read_bytes() == before


def test_foreign_sqlite_database_is_refused(make_engine, db_path) -> None:
    conn = apsw.Connection(db_path)
    conn.execute("CREATE TABLE mine(x)")
    conn.close()
    with pytest.raises(errors.SchemaVersionError, match="not durably's"):
        make_engine().open()
    conn = apsw.Connection(db_path)
    conn.pragma("application_id", 1234)
    conn.close()
    with pytest.raises(errors.SchemaVersionError, match="not a durably one"):
        make_engine().open()


def test_non_sqlite_file_gets_a_typed_error(make_engine, tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a database, just some text" * 100)
    before = path.read_bytes()
    with pytest.raises(errors.NotADatabaseError):
        make_engine(str(path)).open()
    assert path.read_bytes() == before


def test_directory_path_gets_a_typed_error(make_engine, tmp_path) -> None:
    with pytest.raises(errors.CantOpenError, match="directory"):
        make_engine(str(tmp_path)).open()


def test_missing_parent_directory(make_engine, tmp_path) -> None:
    with pytest.raises(errors.CantOpenError):
        make_engine(str(tmp_path / "no" / "such" / "dir.db")).open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(make_engine, db_path) -> None:
    with make_engine():
        pass
    os.chmod(db_path, 0)
    with pytest.raises(errors.StorageError):
        make_engine().open()


def test_storage_errors_are_mapped_by_type() -> None:
    from durably.store._errors import map_error

    assert isinstance(map_error(apsw.FullError("x"), "p"), errors.DiskFullError)
    assert isinstance(map_error(apsw.IOError("x"), "p"), errors.DiskIOError)
    assert isinstance(map_error(apsw.CorruptError("x"), "p"), errors.DatabaseCorruptError)
    assert isinstance(map_error(apsw.NotADBError("x"), "p"), errors.NotADatabaseError)
    assert isinstance(map_error(apsw.BusyError("x"), "p"), errors.DatabaseBusyError)
    assert isinstance(map_error(apsw.ConstraintError("x"), "p"), errors.ConstraintError)
    # the message text does not decide the type
    assert type(map_error(apsw.IOError("database is locked"), "p")) is errors.DiskIOError
    assert type(map_error(apsw.SchemaChangeError("disk I/O error"), "p")) is errors.StorageError


def test_storage_errors_pickle_with_their_data() -> None:
    import pickle

    err = errors.SchemaVersionError("newer", path="/x.db", found=9, supported=1)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is errors.SchemaVersionError
    assert (back.path, back.found, back.supported, str(back)) == ("/x.db", 9, 1, "newer")


def test_store_reopens_after_close(db_path) -> None:
    store = Store(db_path)
    store.open()
    store.close()
    store.close()
    store.open()
    assert store.pending_workflows() == []
    store.close()


def test_recovery_query_uses_the_pending_index(make_engine, db_path) -> None:
    with make_engine() as engine:
        conn = engine._store.connections()[1]
        plan = " ".join(
            str(r)
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT workflow_id, name, inputs, parent_id FROM workflows"
                " WHERE status = 'PENDING' ORDER BY created_at"
            )
        )
        assert "workflows_status" in plan and "SCAN" not in plan
        plan = " ".join(
            str(r)
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT position, name, output, error FROM steps"
                " WHERE workflow_id = ? ORDER BY position",
                ("x",),
            )
        )
        assert "SCAN" not in plan


@pytest.mark.parametrize("alone", [True, False], ids=["batch-of-one", "batch-of-three"])
def test_a_rejected_step_record_fails_alone(db_path, alone) -> None:
    """A step record the database rejects (here: its position is taken) gets
    its own typed error; the store carries on, and the rest of its batch
    commits. A batch of one takes the single-call fast path."""
    from durably import _records as R
    from durably.journal import Record

    store = Store(db_path)
    store.open()
    try:
        start = Record(R.START, ("w", "wf", "[[],{}]", None, None))
        store.flush([start, Record(R.STEP, ("w", 0, "s", "1", None, None, None))])
        dup = Record(R.STEP, ("w", 0, "other", "2", None, None, None))
        batch = (
            [dup]
            if alone
            else [
                Record(R.STEP, ("w", 1, "s", "3", None, None, None)),
                dup,
                Record(R.STEP, ("w", 2, "s", "4", None, None, None)),
            ]
        )
        store.flush(batch)
        assert isinstance(dup.error, errors.ConstraintError)
        assert all(r.error is None for r in batch if r is not dup)
        rows = [(r[0], r[1], r[2]) for r in store.load_steps("w")]
        assert rows == [(0, "s", "1")] + ([] if alone else [(1, "s", "3"), (2, "s", "4")])
        ok = Record(R.STEP, ("w", 3, "s", "5", None, None, None))
        store.flush([ok])  # the fast path is usable again
        assert ok.error is None and store.load_steps("w")[-1][0] == 3
    finally:
        store.close()


def _file_at_version(path: str, version: int, insert: str) -> list[tuple[Any, ...]]:
    """A durably file as schema ``version`` left it (its first migrations
    only; rollback-journal mode: the engine switches it to WAL), with the
    rows ``insert`` adds; returns its workflows rows in creation order."""
    from durably.store._schema import MIGRATIONS

    conn = apsw.Connection(path)
    try:
        for script in MIGRATIONS[:version]:
            conn.execute(script)
        conn.execute(insert)
        conn.pragma("user_version", version)
        conn.pragma("application_id", APPLICATION_ID)
        return conn.execute("SELECT * FROM workflows ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_a_version_2_file_is_migrated_in_place(make_engine, db_path) -> None:
    """Files written before the toolkit (schema v2) gain its tables on open,
    in one transaction, keeping their workflows."""
    _file_at_version(
        db_path,
        2,
        "INSERT INTO workflows (workflow_id, name, status, inputs, output) VALUES"
        " ('old', 'flow', 'SUCCESS', '[[],{}]', '7')",
    )
    engine = make_engine()

    @engine.workflow(name="flow")
    def flow() -> int:
        return 7

    with engine:
        assert engine.handle("old").result() == 7
        assert testing.queue_entries(engine) == []
        conn = engine._store.connections()[0]
        assert conn.pragma("user_version") == SCHEMA_VERSION == 9


def test_a_version_7_file_keeps_every_row_and_the_status_rule_through_the_v8_rebuild(make_engine, db_path) -> None:
    """v8 rebuilds the workflows table to write its status CHECK as
    comparisons: an ``IN`` list of five constants made SQLite build and free
    an ephemeral B-tree at every start and every end of a workflow (about
    2 us each in the writer). Rows (with their ``seq``, owner, epoch and
    trace), indexes and triggers survive; the rule still holds; neither hot
    statement opens an ephemeral table any more."""
    from durably.store._store import _COMPLETE, _INSERT_WORKFLOW

    before = _file_at_version(
        db_path,
        7,
        "INSERT INTO workflows (seq, workflow_id, name, status, inputs, output, executor, epoch, app_version, trace)"
        " VALUES (5, 'old', 'flow', 'SUCCESS', '[[],{}]', '7', 'h:1:x', 3, 'v1', '00-ab-cd-01'),"
        " (9, 'parked', 'flow', 'PENDING', '[[],{}]', NULL, 'h:1:x', 2, 'v1', NULL)",
    )
    engine = make_engine()

    @engine.workflow(name="flow")
    def flow() -> int:
        return 7

    with engine:
        assert engine.handle("old").result() == 7
    check = apsw.Connection(db_path)
    try:
        assert check.pragma("user_version") == SCHEMA_VERSION == 9
        rows = check.execute("SELECT * FROM workflows WHERE workflow_id IN ('old', 'parked') ORDER BY seq").fetchall()
        assert rows == before  # 'parked' is another application version's: left to it
        assert check.execute("SELECT max(seq) FROM workflows").get == 9
        with pytest.raises(apsw.ConstraintError):
            check.execute("INSERT INTO workflows (workflow_id, name, status, inputs) VALUES ('x', 'f', 'DONE', '[]')")
        indexes = {r[0] for r in check.execute("SELECT name FROM sqlite_schema WHERE tbl_name = 'workflows'")}
        assert indexes >= {
            "workflows_status",
            "workflows_parent",
            "workflows_name",
            "workflows_created",
            "workflows_owner",
            "queue_entry_done",
            "workflow_owner_changed",
            "workflow_cancelled",
        }
        for sql in (_INSERT_WORKFLOW, _COMPLETE):
            ops = [row[1] for row in check.execute("EXPLAIN " + sql, (None,) * sql.count("?"))]
            assert "OpenEphemeral" not in ops, sql
        assert check.execute("PRAGMA integrity_check").get == "ok"
        assert check.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        check.close()


def _search_peak(conn: apsw.Connection, wid: str) -> int:
    """SQLite's peak heap use (bytes) for the journal's first read of ``wid``."""
    apsw.memory_high_water(True)
    base = apsw.memory_used()
    conn.execute("SELECT position, name FROM steps WHERE workflow_id = ? ORDER BY position", (wid,)).fetchall()
    return apsw.memory_high_water(True) - base


def test_a_version_8_file_keeps_every_step_through_the_v9_rebuild_and_no_search_reads_a_large_value(
    make_engine, db_path
) -> None:
    """v9 keys the steps table by a rowid with (workflow_id, position) a
    unique index. In v8's ``WITHOUT ROWID`` table every cell was a whole
    row, and SQLite compares a search key with a cell spilling onto
    overflow pages by reading the whole cell: the journal's first read of
    a workflow whose step held 2 MB allocated those 2 MB (25 MB values on
    20 sync workers kept 437 MB resident, docs/bench/round2-report.md).
    Rows survive in their order, the workflow replays from them, the key
    is still unique and still references its workflow."""
    big = '"' + "a" * (2 * 1024 * 1024) + '"'
    _file_at_version(
        db_path,
        8,
        "INSERT INTO workflows (workflow_id, name, status, inputs) VALUES ('old', 'flow', 'PENDING', '[[],{}]');"
        " INSERT INTO steps (workflow_id, position, name, output, error, recorded_at, ident, started_at) VALUES"
        f" ('old', 0, 's', '{big}', NULL, 10.5, NULL, 10.0), ('old', 1, 's', '\"b\"', NULL, 11.5, NULL, 11.0)",
    )
    columns = "workflow_id, position, name, output, error, recorded_at, ident, started_at"
    old = apsw.Connection(db_path)
    try:
        before = old.execute(f"SELECT {columns} FROM steps ORDER BY workflow_id, position").fetchall()
        assert _search_peak(old, "old") >= len(big)  # v8: the search read the 2 MB cell whole
    finally:
        old.close()
    engine = make_engine()
    calls: list[int] = []

    @engine.step(name="s")
    def s(i: int) -> str:
        calls.append(i)
        return "x" * i

    @engine.workflow(name="flow")
    def flow() -> int:
        return sum(len(s(i)) for i in range(3))

    with engine:
        assert engine.handle("old").result(timeout=30) == len(big) - 2 + 1 + 2
    assert calls == [2]  # positions 0 and 1 replayed from the rebuilt table
    check = apsw.Connection(db_path)
    try:
        check.pragma("foreign_keys", 1)
        assert check.pragma("user_version") == SCHEMA_VERSION == 9
        after = check.execute(f"SELECT {columns} FROM steps ORDER BY workflow_id, position").fetchall()
        assert after[:2] == before and [r[1] for r in after] == [0, 1, 2]
        assert _search_peak(check, "old") < 256 * 1024
        for dup in ("('old', 1, 's')", "('nobody', 0, 's')"):  # the key; the workflow it belongs to
            with pytest.raises(apsw.ConstraintError):
                check.execute(f"INSERT INTO steps (workflow_id, position, name) VALUES {dup}")
        assert check.execute("PRAGMA integrity_check").get == "ok"
    finally:
        check.close()
