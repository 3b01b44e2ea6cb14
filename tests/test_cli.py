"""The command line inspects a database without writing to it."""

from __future__ import annotations

from pathlib import Path

from durably import Status
from durably.cli import main


def test_list_and_steps_read_without_writing(make_engine, db_path, capsys) -> None:
    engine = make_engine()

    @engine.step(name="double")
    def double(x: int) -> int:
        return 2 * x

    @engine.workflow(name="flow")
    def flow(x: int) -> int:
        return double(x)

    with engine:
        engine.run(flow, 21, workflow_id="w1")
    before = Path(db_path).read_bytes()
    assert main(["list", db_path]) == 0
    assert main(["steps", db_path, "w1"]) == 0
    out = capsys.readouterr().out
    assert "w1\tSUCCESS\tflow" in out and "0\tdouble\t42" in out
    assert Path(db_path).read_bytes() == before
    with make_engine() as again:  # and it did not run recovery or park anything
        assert again.handle("w1").status() == Status.SUCCESS


def test_cli_reports_a_missing_or_foreign_file(tmp_path, capsys) -> None:
    assert main(["list", str(tmp_path / "missing.db")]) == 2
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 50)
    assert main(["list", str(junk)]) == 2
    assert "durably:" in capsys.readouterr().err


def test_cli_lists_an_older_schema_without_migrating_it(tmp_path, capsys) -> None:
    """A version-2 file (before queues existed) is listed as it is: read-only
    inspection never migrates, and nothing in it is ENQUEUED."""
    import apsw

    from durably.store import APPLICATION_ID
    from durably.store._schema import MIGRATIONS

    path = str(tmp_path / "v2.db")
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode = WAL")
    for script in MIGRATIONS[:2]:
        conn.execute(script)
    conn.execute("INSERT INTO workflows (workflow_id, name, status, inputs) VALUES ('old', 'flow', 'PENDING', '[[],{}]')")
    conn.pragma("user_version", 2)
    conn.pragma("application_id", APPLICATION_ID)
    conn.close()
    assert main(["list", path]) == 0
    assert "old\tPENDING\tflow" in capsys.readouterr().out
    check = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    assert check.pragma("user_version") == 2
    check.close()
