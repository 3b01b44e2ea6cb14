"""The command line: reads that write nothing, and (below) every operator
command driven through the console script against a database a worker
process uses at the same time, on both backends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    assert re.search(r"w1 +SUCCESS +flow", out) and re.search(r"0 +double +42", out)
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
    assert re.search(r"old +PENDING +flow", capsys.readouterr().out)
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
    assert run.returncode == 2 and "'DONE' is not one of" in run.stderr and run.stderr.count("\n") == 1
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


# -- the operator commands, beside a live worker (issue 21 item 5) ----------------------------
#
# One worker process per backend (tests/_cliworker.py: an executor Engine
# running the workflows) and one client Engine in this process start the
# workloads; every command runs as `python -m durably ...` (the console
# script's entry point) while the worker runs. Ids are unique per test.


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory) -> Iterator[tuple[str, Any]]:
    """(database, a client Engine on it) while a worker process runs it."""
    import durably

    from .conftest import pg_schema_url

    urls = pg_schema_url() if request.param == "postgresql" else None
    tmp = tmp_path_factory.mktemp("cli")
    db = next(urls) if urls is not None else str(tmp / "live.db")
    stop = tmp / "stop"
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_cliworker.py")), db, str(stop)],
        stdout=subprocess.PIPE,
        env=_env(),
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        with durably.Engine(db, client=True) as client:
            yield db, client
        assert worker.poll() is None, "the worker died during the tests"
    finally:
        stop.touch()
        try:
            worker.wait(timeout=30)
        finally:
            worker.kill()
            if worker.stdout is not None:
                worker.stdout.close()
            if urls is not None:
                next(urls, None)


def _env() -> dict[str, str]:
    import durably

    env = dict(os.environ, PYTHONPATH=str(Path(durably.__file__).parents[1]))
    env.pop("PGCONNECT_TIMEOUT", None)
    return env


def _run(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "durably", *args], capture_output=True, text=True, env=_env(), timeout=60
    )
    return proc.returncode, proc.stdout, proc.stderr


def _json(*args: str) -> Any:
    code, out, err = _run(*args, "--json")
    assert code == 0 and err == "", err
    return json.loads(out)


def _until(what, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def _refused(args: tuple[str, ...], text: str) -> str:
    code, out, err = _run(*args)
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and err.startswith("durably: ") and text in err, err
    return err


def test_list_takes_every_filter_of_list_workflows(live) -> None:
    db, client = live
    for i in range(3):
        assert client.run("quick", i, workflow_id=f"lst-q{i}") == 2 * i
    client.start("waiter", 1, workflow_id="lst-w")
    client.start("parent", 2, workflow_id="lst-p")
    _until(lambda: client.list_workflows(parent_id="lst-p"))
    ids = lambda *a: [w["workflow_id"] for w in _json("list", db, "--id-prefix", "lst-", *a)["workflows"]]  # noqa: E731
    assert ids() == ["lst-p/0", "lst-p", "lst-w", "lst-q2", "lst-q1", "lst-q0"]  # newest first
    assert ids("--oldest-first", "--limit", "2", "--offset", "1") == ["lst-q1", "lst-q2"]
    assert ids("--status", "SUCCESS", "--name", "quick", "--limit", "2") == ["lst-q2", "lst-q1"]
    assert ids("--status", "PENDING", "--name", "waiter") == ["lst-p/0", "lst-w"]
    assert [w["workflow_id"] for w in _json("list", db, "--parent", "lst-p")["workflows"]] == ["lst-p/0"]
    assert ids("--since", "1h", "--until", "@9999999999", "--name", "parent") == ["lst-p"]
    assert ids("--until", "2000-01-01") == []
    doc = _json("list", db, "--id-prefix", "lst-q1")["workflows"][0]
    assert doc["status"] == "SUCCESS" and doc["name"] == "quick" and doc["parent_id"] is None
    assert doc["input"] == {"args": [1], "kwargs": {}} and doc["output"] == 2 and doc["error"] is None
    assert isinstance(doc["created_at"], float) and doc["executor"]
    code, out, _ = _run("list", db, "--id-prefix", "lst-q")  # the table
    assert code == 0 and re.search(r"lst-q0 +SUCCESS +quick", out)


def test_show_and_steps_give_info_steps_children_events_and_waiting_messages(live) -> None:
    db, client = live
    client.start("parent", 10, workflow_id="shw-p")
    _until(lambda: client.list_workflows(parent_id="shw-p"))
    client.send("shw-p/0", {"note": "not yet"}, topic="later")
    _until(lambda: client.get_all_events("shw-p/0"))
    doc = _json("show", db, "shw-p/0")
    assert doc["workflow"]["status"] == "PENDING" and doc["workflow"]["parent_id"] == "shw-p"
    assert [(s["position"], s["name"], s["output"]) for s in doc["steps"]][:1] == [(0, "add", 11)]
    assert doc["events"] == {"progress": 11} and doc["children"] == []
    [msg] = doc["messages"]
    assert msg["topic"] == "later" and msg["payload"] == {"note": "not yet"} and msg["created_at"] > 0
    parent = _json("show", db, "shw-p")
    assert [c["workflow_id"] for c in parent["children"]] == ["shw-p/0"] and parent["messages"] == []
    assert parent["steps"][0]["name"] == "start:waiter" and parent["steps"][0]["output"] == "shw-p/0"
    steps = _json("steps", db, "shw-p/0")
    assert steps["workflow_id"] == "shw-p/0" and steps["steps"] == doc["steps"]
    code, out, _ = _run("show", db, "shw-p/0")
    assert code == 0 and "messages waiting: 1" in out and "progress" in out
    client.send("shw-p/0", 5, topic="go")
    assert client.handle("shw-p").result(timeout=15) == 11 + 5 + 1


def test_cancel_resume_and_fork_go_through_a_client_and_the_worker_runs_them(live) -> None:
    db, client = live
    client.start("waiter", 1, workflow_id="mgt-a")
    _until(lambda: client.get_all_events("mgt-a"))
    assert _json("cancel", db, "mgt-a") == {"workflow_id": "mgt-a", "status": "CANCELLED", "children": True}
    code, _, err = _run("cancel", db, "mgt-a")  # it ended: nothing done, the operation failed
    assert code == 1 and "already ended CANCELLED" in err
    assert _json("resume", db, "mgt-a")["workflow_id"] == "mgt-a"
    _until(lambda: client.handle("mgt-a").info().executor is not None and client.handle("mgt-a").status() == "PENDING")
    client.send("mgt-a", 40, topic="go")
    assert client.handle("mgt-a").result(timeout=15) == 42  # the worker claimed it and ran it on
    code, _, err = _run("resume", db, "mgt-a")
    assert code == 1 and "succeeded" in err
    fork = _json("fork", db, "mgt-a", "--from-step", "1", "--new-id", "mgt-f")
    assert fork["workflow_id"] == "mgt-f" and fork["forked_from"] == "mgt-a" and fork["from_step"] == 1
    _until(lambda: client.get_all_events("mgt-f"))
    client.send("mgt-f", 1, topic="go")
    assert client.handle("mgt-f").result(timeout=15) == 3
    assert [s.name for s in client.steps("mgt-f")][:2] == ["add", "set_event:progress"]
    code, out, _ = _run("fork", db, "mgt-a")
    assert code == 0 and re.match(r"\S+\tPENDING\n$", out)
    client.start("parent", 1, workflow_id="mgt-p")
    _until(lambda: client.list_workflows(parent_id="mgt-p"))
    assert _json("cancel", db, "mgt-p", "--no-children")["status"] == "CANCELLED"
    assert client.handle("mgt-p/0").status() == "PENDING"  # its child runs on
    code, out, _ = _run("cancel", db, "mgt-p/0")
    assert code == 0 and out == "mgt-p/0\tCANCELLED\n"


def test_queues_show_waiting_running_and_declared_limits(live) -> None:
    db, client = live
    queue = client.queue("q", concurrency=2, rate_limit=(100, 1.0))
    for i in range(5):
        queue.enqueue("waiter", i, workflow_id=f"que-{i}")

    def counts() -> Any:
        row = next(q for q in _json("queues", db)["queues"] if q["queue"] == "q")
        return row if row["running"] == 2 and row["enqueued"] == 3 else None

    row = _until(counts)
    assert row and row["concurrency"] == 2 and row["rate_limit"] == {"starts": 100, "seconds": 1.0}
    assert row["declared_at"] > 0
    code, out, _ = _run("queues", db)
    assert code == 0 and re.search(r"q +3 +2 +2 +100 per 1s", out)
    for i in range(5):
        client.send(f"que-{i}", 0, topic="go")
    for i in range(5):
        client.handle(f"que-{i}").result(timeout=15)
    assert next(q for q in _json("queues", db)["queues"] if q["queue"] == "q")["running"] == 0


def test_schedules_list_pause_resume_trigger_and_backfill(live) -> None:
    db, client = live
    [hourly] = [s for s in _json("schedules", db)["schedules"] if s["name"] == "hourly"]
    assert hourly["cron"] == "0 * * * *" and hourly["workflow"] == "tick" and hourly["paused"] is False
    assert hourly["next_slot"].endswith(":00:00+00:00")
    paused = _json("schedules", "pause", db, "hourly")
    assert paused["action"] == "paused" and paused["schedule"]["paused"] is True
    assert paused["schedule"]["next_slot"] is None
    trig = _json("schedules", "trigger", db, "hourly", "--workflow-id", "sch-t")
    assert trig["workflow_ids"] == ["sch-t"]
    assert client.handle("sch-t").result(timeout=15)  # a paused schedule can be triggered
    back = _json("schedules", "backfill", db, "hourly", "--start", "2026-01-01T10:00", "--end", "2026-01-01T12:30")
    assert back["workflow_ids"] == [f"schedule:hourly@2026-01-01T{h}:00:00+00:00" for h in (10, 11, 12)]
    assert client.handle(back["workflow_ids"][0]).result(timeout=15) == "2026-01-01T10:00:00+00:00"
    assert _json("schedules", "resume", db, "hourly")["schedule"]["paused"] is False
    code, out, _ = _run("schedules", db)
    assert code == 0 and re.search(r"hourly +0 \* \* \* \* +tick +UTC +False", out)


def test_tail_follows_workflows_as_they_start_and_end(live) -> None:
    db, client = live
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "durably",
            "tail",
            db,
            "--json",
            "--name",
            "quick",
            "--count",
            "4",
            "--timeout",
            "30",
            "--interval",
            "0.1s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    time.sleep(1.5)  # it has started looking (what started before it is not reported)
    client.run("quick", 7, workflow_id="tail-1")
    client.run("quick", 8, workflow_id="tail-2")
    out, err = tail.communicate(timeout=40)
    assert tail.returncode == 0 and err == "", err
    events = [json.loads(line) for line in out.splitlines()]
    assert sorted((e["event"], e["workflow"]["workflow_id"]) for e in events) == [
        ("end", "tail-1"),
        ("end", "tail-2"),
        ("start", "tail-1"),
        ("start", "tail-2"),
    ]
    ends = {e["workflow"]["workflow_id"]: e["workflow"] for e in events if e["event"] == "end"}
    assert ends["tail-2"]["status"] == "SUCCESS" and ends["tail-2"]["output"] == 16
    code, out, _ = _run("tail", db, "--timeout", "0.3s")  # nothing new: ends at its timeout
    assert code == 0 and out == ""


def test_bad_input_is_one_line_exit_2_and_changes_nothing(live) -> None:
    db, client = live
    client.start("waiter", 1, workflow_id="bad-w")
    _until(lambda: client.get_all_events("bad-w"))
    before = _json("list", db, "--limit", "0")
    for command in (("show",), ("steps",), ("cancel",), ("resume",), ("fork",)):
        _refused((*command, db, "no-such-id"), "no workflow with id 'no-such-id'")
    _refused(("schedules", "pause", db, "no-such-schedule"), "no schedule named 'no-such-schedule'")
    _refused(("schedules", "trigger", db, "no-such-schedule"), "no schedule named")
    _refused(("fork", db, "bad-w", "--new-id", "bad-w"), "already exists")
    _refused(("cancel", db, "bad-w", "--bogus"), "No such option")
    _refused(("fork", db, "bad-w", "--from-step", "-1"), "--from-step")
    _refused(("list", db, "--since", "yesterday"), "--since")
    _refused(("list", db, "--limit", "-1"), "--limit")
    _refused(("tail", db, "--interval", "soon"), "--interval")
    _refused(("schedules", "backfill", db, "hourly", "--start", "noon", "--end", "2026-01-01"), "--start")
    _refused(("cancel", "postgresql://app:pw@[::1", "bad-w"), "not a valid PostgreSQL URL")
    _refused(("cancel", db + "-missing" if "://" not in db else db.replace("schema=", "schema=missing_"), "x"), "")
    assert _json("list", db, "--limit", "0") == before  # nothing changed
    assert client.handle("bad-w").status() == "PENDING"
    client.send("bad-w", 1, topic="go")
    assert client.handle("bad-w").result(timeout=15) == 3


def test_gc_deletes_finished_workflows_beside_the_worker_and_keeps_pending_ones(live) -> None:
    db, client = live
    done = [client.start("quick", i, workflow_id=f"gc-q{i}") for i in range(5)]
    assert [h.result(timeout=15) for h in done] == [0, 2, 4, 6, 8]
    client.start("waiter", 7, workflow_id="gc-w")
    _until(lambda: client.get_all_events("gc-w"))
    _refused(("gc", db, "--older-than", "soon"), "--older-than")
    _refused(("gc", db, "--older-than", "0s", "--status", "PENDING"), "--status")
    assert client.handle("gc-q0").status() == "SUCCESS"  # the refusals deleted nothing
    report = _json("gc", db, "--older-than", "0s", "--status", "SUCCESS")
    assert report["workflows"] >= 5 and report["steps"] >= 5 and report["batches"] >= 1
    assert set(report) >= {"workflows", "steps", "messages", "events", "notices", "longest_batch"}
    _refused(("show", db, "gc-q3"), "no workflow with id 'gc-q3'")
    assert _json("list", db, "--status", "SUCCESS")["workflows"] == []
    assert client.handle("gc-w").status() == "PENDING"  # a pending workflow stays, with its steps
    assert [s["name"] for s in _json("steps", db, "gc-w")["steps"]][0] == "add"
    client.send("gc-w", 2, topic="go")
    assert client.handle("gc-w").result(timeout=15) == 10


def test_backup_and_copy_beside_the_worker(live, tmp_path) -> None:
    db, client = live
    client.start("quick", 21, workflow_id="bk-q")
    assert client.handle("bk-q").result(timeout=15) == 42
    client.start("waiter", 5, workflow_id="bk-w")
    _until(lambda: client.get_all_events("bk-w"))
    before = _json("list", db, "--limit", "0")
    _refused(("backup", db, str(tmp_path / "no-such-folder" / "b.db")), "")
    _refused(("copy", db, str(tmp_path / "c.db")), "DatabaseInUseError")  # the worker runs it: refused
    assert not (tmp_path / "c.db").exists() and not (tmp_path / "no-such-folder").exists()
    report = _json("backup", db, str(tmp_path / "b.db"))
    assert report["path"] == str(tmp_path / "b.db") and report["bytes"] > 0
    _refused(("backup", db, str(tmp_path / "b.db")), "")  # the destination exists now
    assert _json("list", db, "--limit", "0") == before  # nothing changed at the source
    # The backup, read by the same commands, holds what was acknowledged before it.
    backed = {w["workflow_id"]: w["status"] for w in _json("list", str(tmp_path / "b.db"), "--limit", "0")["workflows"]}
    assert backed["bk-q"] == "SUCCESS" and backed["bk-w"] == "PENDING"
    client.send("bk-w", 1, topic="go")
    assert client.handle("bk-w").result(timeout=15) == 7
