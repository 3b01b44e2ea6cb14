"""The command line inspects a database without writing to it."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_the_demo_never_replaces_a_file_it_did_not_create(tmp_path, capsys) -> None:
    from durably import demo

    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    assert main(["demo", "--db", str(precious), "--orders", "10"]) == 2
    assert precious.read_text() == "keep me"
    assert "not a database an earlier demo made" in capsys.readouterr().err
    other = tmp_path / "app.db"
    import durably

    with durably.Engine(str(other)) as engine:
        @engine.workflow(name="mine")
        def mine() -> int:
            return 1

        engine.run(mine)
    assert not demo._made_by_the_demo(str(other))
    assert main(["demo", "--db", str(other), "--orders", "10"]) == 2 and other.exists()


def test_cli_escapes_control_characters_from_the_database(make_engine, db_path, capsys) -> None:
    engine = make_engine()

    @engine.step(name="s")
    def s() -> str:
        return "\x1b]0;pwned\x07\x1b[2J"

    @engine.workflow(name="w")
    def w() -> str:
        return s()

    with engine:
        engine.run(w, workflow_id="plain")
    engine.close()
    import apsw  # plant a hostile name, as another writer of the file could

    conn = apsw.Connection(db_path)
    conn.execute("UPDATE workflows SET name = ? WHERE workflow_id = 'plain'", ("evil\x1b[2J\x07",))
    conn.close()
    assert main(["list", db_path]) == 0
    assert main(["steps", db_path, "plain"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J\\x07" in out and "pwned" in out  # the name escaped; the output is JSON-escaped already


def test_cli_bad_input_is_an_error_and_a_closed_pipe_is_quiet(make_engine, db_path, tmp_path) -> None:
    import subprocess
    import sys

    engine = make_engine()

    @engine.workflow(name="w")
    def w(i: int) -> int:
        return i

    with engine:
        for i in range(3000):
            engine.start(w, i)
    engine.close()
    for f in (db_path + "-wal", db_path + "-shm"):
        assert not Path(f).exists()
    assert main(["steps", db_path, "nope"]) == 2
    run = subprocess.run([sys.executable, "-m", "durably", "list", db_path, "--status", "DONE"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "invalid choice" in run.stderr
    piped = subprocess.run(f"{sys.executable} -m durably list {db_path} --limit 3000 | head -1", shell=True,
                           capture_output=True, text=True)
    assert piped.stdout.count("\n") == 1 and "Traceback" not in piped.stderr, piped.stderr
    assert main(["list", db_path]) == 0
    for f in (db_path + "-wal", db_path + "-shm"):  # a read leaves no file behind
        assert not Path(f).exists(), f


def test_a_dangling_symlink_as_the_database_path_is_refused(tmp_path) -> None:
    import durably

    link = tmp_path / "db.sqlite"
    link.symlink_to(tmp_path / "missing" / "real.db")
    with pytest.raises(durably.CantOpenError, match="symbolic link"):
        durably.Engine(str(link)).open()
    assert link.is_symlink() and not link.exists()
    target = tmp_path / "real.db"
    link2 = tmp_path / "db2.sqlite"
    with durably.Engine(str(target)):
        pass
    link2.symlink_to(target)
    with durably.Engine(str(link2)):  # a link to an existing database is followed
        pass
    assert link2.is_symlink()
