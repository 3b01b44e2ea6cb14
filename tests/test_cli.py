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
    conn.execute(
        "INSERT INTO workflows (workflow_id, name, status, inputs) VALUES ('old', 'flow', 'PENDING', '[[],{}]')"
    )
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
    run = subprocess.run(
        [sys.executable, "-m", "durably", "list", db_path, "--status", "DONE"], capture_output=True, text=True
    )
    assert run.returncode == 2 and "invalid choice" in run.stderr
    piped = subprocess.run(
        f"{sys.executable} -m durably list {db_path} --limit 3000 | head -1", shell=True, capture_output=True, text=True
    )
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


# -- PostgreSQL URLs (issue 19 item 9) -------------------------------------------------------


def _cli(*args: str) -> tuple[int, str, str, float]:
    """The real command line in a process of its own (what an operator
    sees on stderr, logging included): (exit code, stdout, stderr, seconds)."""
    import os
    import subprocess
    import sys
    import time

    import durably

    env = dict(os.environ, PYTHONPATH=str(Path(durably.__file__).parents[1]))
    env.pop("PGCONNECT_TIMEOUT", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "durably", *args], capture_output=True, text=True, env=env, timeout=100
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("durably: "), err
    return err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_accept_wal_loss_refuses_a_postgresql_url_in_one_line_without_its_password() -> None:
    code, out, err, _ = _cli("accept-wal-loss", "postgresql://app:s3cret-pw@127.0.0.1:5432/prod")
    assert code == 2 and out == "" and "s3cret-pw" not in err
    assert "SQLite" in _one_line(err)


@pytest.mark.parametrize("command", [["list"], ["steps", "--", "w1"]])
def test_a_postgresql_url_that_does_not_parse_is_one_line_and_exit_2(command) -> None:
    code, out, err, _ = _cli(*command[:1], "postgresql://app:s3cret-pw@[::1", *command[1:])
    assert code == 2 and out == "" and "s3cret-pw" not in err  # on 785dce3: a traceback, exit 1
    assert "not a valid PostgreSQL URL" in _one_line(err)


@pytest.mark.parametrize("command", [["list"], ["steps", "--", "w1"]])
def test_a_refused_port_is_told_at_once_in_one_line(command) -> None:
    """On 785dce3: the read pool retried for 15 s, and its warnings and the
    final line (5 to 9 lines) hid the reason."""
    url = f"postgresql://app:s3cret-pw@127.0.0.1:{_free_port()}/prod"
    code, out, err, _ = _cli(*command[:1], url, *command[1:])
    assert code == 2 and out == "" and "s3cret-pw" not in err
    assert "Connection refused" in _one_line(err) and "DatabaseUnavailableError" in err


def test_a_silent_server_is_given_up_after_the_urls_connect_timeout() -> None:
    """A port that accepts connections and never answers: the URL's
    connect_timeout=1 bounds the wait (on 785dce3 the CLI waited the read
    pool's 15 s whatever the URL said)."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql://app:s3cret-pw@127.0.0.1:{silent.getsockname()[1]}/prod?connect_timeout=1"
        code, out, err, seconds = _cli("list", url)
    assert code == 2 and "s3cret-pw" not in err and "timeout" in _one_line(err)
    assert seconds < 10  # two 1 s attempts (SSL, then plain) and the interpreter's start; not 15 s


def test_a_missing_postgresql_database_or_workflow_is_one_line_without_the_password() -> None:
    """On 785dce3 "no workflow with id ..." named the URL as given: password included."""
    import durably

    from .conftest import pg_schema_url

    urls = pg_schema_url()  # skips when no server answers
    url = next(urls)
    try:
        with durably.Engine(url):
            pass  # durably's schema exists, with no workflow
        with_password = url.replace("postgres@", "postgres:s3cret-pw@", 1)  # trust auth: not checked
        assert "s3cret-pw" in with_password
        code, out, err, _ = _cli("steps", with_password, "no-such-workflow")
        assert code == 2 and out == "" and "s3cret-pw" not in err
        assert "no workflow with id 'no-such-workflow'" in _one_line(err)
        missing_db = with_password.split("?")[0].rsplit("/", 1)[0] + "/no_such_db_of_durably"
        code, out, err, _ = _cli("list", missing_db)
        assert code == 2 and "s3cret-pw" not in err and "does not exist" in _one_line(err)
    finally:
        next(urls, None)
