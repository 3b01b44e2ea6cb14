"""Several processes on one database file (issue 11): executors, leases,
fencing, takeover, cross-process wake-ups, client mode, queue limits.

Worker processes run ``tests/_procworker.py``; every step body they run is
written to a ledger (a separate SQLite file), so re-runs are counted, not
guessed. On 8213365 the first test fails: a second process opening a live
file recovered every in-flight workflow of the first and ran its steps again.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import durably
from durably import Status, testing
from durably import _records as R
from durably.journal import Record

from .conftest import pg_schema_url

WORKER = str(Path(__file__).with_name("_procworker.py"))
READY_WITHIN = 60  # seconds a worker process may take to open the database and say "ready"
sys.path.insert(0, str(Path(__file__).parent))
import _procworker  # noqa: E402


def _spawn(
    db: str, led: str, tag: str, lease: float = 0.0, start: int = 0, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """A worker process (lease 0: the default lease; ``env``: more environment)."""
    args = [sys.executable, WORKER, db, led, tag, str(lease)] + (["start", str(start)] if start else [])
    env = dict(
        os.environ,
        **(env or {}),
        PYTHONPATH=os.pathsep.join([str(Path(durably.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], READY_WITHIN)[0]:  # a worker stuck at open fails, never hangs
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"worker {tag!r} not ready within {READY_WITHIN} s: {err[-2000:]}")
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def _stop(led: str, tag: str, proc: subprocess.Popen[str]) -> None:
    Path(f"{led}.stop-{tag}").touch()
    try:
        proc.wait(30)
    finally:
        _reap(proc)


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()  # closes its pipes


def _runs(led: str) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(led)
    conn.setbusytimeout(10_000)
    try:
        return conn.execute("SELECT wid, step, pid, t0, t1 FROM runs ORDER BY t0").fetchall()
    finally:
        conn.close()


def _wait_until(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(params=["sqlite", "postgresql"])
def files(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """The shared database (an SQLite file, or a fresh PostgreSQL schema) and
    the ledger of step runs (an SQLite file the workers append to)."""
    ledger = str(tmp_path / "ledger.db")
    if request.param == "postgresql":
        for url in pg_schema_url():
            yield url, ledger
    else:
        yield str(tmp_path / "shared.db"), ledger


@pytest.mark.timeout(120)
def test_a_second_process_on_a_live_file_does_not_run_the_first_ones_workflows(files) -> None:
    """The issue's headline: B opens the file while A runs 8 workflows, each
    waiting for a message after its first step. B recovers nothing, no step
    runs twice, a message sent from B wakes A's workflow, and B's result()
    returns what A recorded."""
    db, led = files
    a = _spawn(db, led, "a", start=8)
    try:
        _wait_until(lambda: len(_runs(led)) == 8)
        engine = durably.Engine(db)
        _procworker.build(engine, _procworker.ledger(led))
        with engine:
            assert engine.recovery.resumed == []
            time.sleep(1.0)  # a round of B's lease keeper
            assert len(_runs(led)) == 8
            for k in range(8):
                engine.send(f"a-w{k}", k, topic="go")
            for k in range(8):
                assert engine.handle(f"a-w{k}").result(timeout=20) == f"got {k}"
            runs = _runs(led)
            assert sorted((w, s) for w, s, *_ in runs) == sorted(
                [(f"a-w{k}", "work0") for k in range(8)] + [(f"a-w{k}", "work1") for k in range(8)]
            )
            assert {pid for *_, pid, _t0, _t1 in [(r[0], r[1], r[2], r[3], r[4]) for r in runs]} == {a.pid}
            assert all(i.status is Status.SUCCESS for i in engine.list_workflows())
    finally:
        _stop(led, "a", a)


@pytest.mark.timeout(120)
def test_a_second_engine_in_the_same_process_does_not_take_the_first_ones_workflows(tmp_path: Path) -> None:
    db, led = str(tmp_path / "one.db"), str(tmp_path / "ledger.db")
    first = durably.Engine(db)
    _procworker.build(first, _procworker.ledger(led))
    second = durably.Engine(db)
    _procworker.build(second, _procworker.ledger(led))
    with first:
        for k in range(4):
            first.start("waiter", workflow_id=f"w{k}")
        _wait_until(lambda: len(_runs(led)) == 4)
        with second:
            assert second.recovery.resumed == []
            time.sleep(1.0)
            assert len(_runs(led)) == 4
            for k in range(4):
                second.send(f"w{k}", k, topic="go")
            for k in range(4):
                assert first.handle(f"w{k}").result(timeout=20) == f"got {k}"
        assert len(_runs(led)) == 8


@pytest.mark.timeout(60)
def test_the_watcher_reads_rows_only_for_callers_waiting_on_a_workflow_running_elsewhere(tmp_path: Path) -> None:
    """The lease keeper sees every commit on the file (this process's own
    too); it reads workflow rows only while a caller here waits for a
    workflow that runs elsewhere, and only those rows; then result() wakes."""
    db = str(tmp_path / "one.db")
    owner = durably.Engine(db)
    watcher = durably.Engine(db, client=True)

    @owner.step()
    def tick(i: int) -> int:
        return i

    @owner.workflow(name="slow")
    def slow() -> int:
        total = sum(tick(i) for i in range(20))
        owner.recv(topic="go")
        return total + sum(tick(i) for i in range(20))

    reads: list[list[str]] = []
    real = watcher._store.statuses

    def counted(ids: Any) -> Any:
        reads.append(list(ids))
        return real(ids)

    watcher._store.statuses = counted  # type: ignore[method-assign]
    with owner, watcher:
        handle = owner.start(slow, workflow_id="w")
        _wait_until(lambda: len(owner.steps("w")) >= 20)
        time.sleep(0.2)  # the watcher saw those commits, and nobody there waits
        assert reads == []
        watcher.send("w", 1, topic="go")
        assert watcher.handle("w").result(timeout=20) == 2 * sum(range(20))
        assert handle.result(timeout=20) == 2 * sum(range(20))
    assert reads and all(r == ["w"] for r in reads)


@pytest.mark.timeout(120)
def test_a_killed_owner_is_taken_over_at_once_on_the_same_host(files) -> None:
    """SIGKILL of A: B (lease 30 s, so not by expiry) sees A's pid is dead and
    takes A's workflows within a second or two; they finish once."""
    db, led = files
    a = _spawn(db, led, "a", lease=30.0, start=4)
    b = None
    try:
        _wait_until(lambda: len(_runs(led)) == 4)
        b = _spawn(db, led, "b", lease=30.0)
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        client = durably.Engine(db, client=True)
        with client:
            t0 = time.monotonic()
            _wait_until(
                lambda: all(i.executor and i.executor.startswith(_host_pid(b)) for i in client.list_workflows()),
                timeout=10,
            )
            taken = time.monotonic() - t0
            assert taken < 5.0, taken
            for k in range(4):
                client.send(f"a-w{k}", k, topic="go")
            for k in range(4):
                assert client.handle(f"a-w{k}").result(timeout=20) == f"got {k}"
        steps = [(w, s) for w, s, *_ in _runs(led)]
        for k in range(4):  # work0 ran once (recorded before the kill), work1 once (in B)
            assert steps.count((f"a-w{k}", "work0")) == 1 and steps.count((f"a-w{k}", "work1")) == 1
    finally:
        if b is not None:
            _stop(led, "b", b)
        _reap(a)


def _host_pid(proc: subprocess.Popen[str]) -> str:
    import socket

    return f"{socket.gethostname()}:{proc.pid}:"


@pytest.mark.timeout(120)
def test_a_paused_owner_is_fenced_and_records_nothing_for_what_was_taken_over(files) -> None:
    """SIGSTOP of A (lease 1 s) in the middle of long chains: B takes them
    over after the lease and finishes them; A, continued, is fenced: its
    late records are refused and it abandons those workflows. Every chain
    ends once with the right result, and a step body ran again only where A
    was stopped inside it."""
    db, led = files
    a = _spawn(db, led, "a", lease=1.0)
    b = None
    try:
        client = durably.Engine(db, client=True)
        with client:
            # started by a client: A claims them (the only executor)
            handles = [client.start("chain", 10, 0.1, workflow_id=f"c{k}") for k in range(3)]
            _wait_until(lambda: len(_runs(led)) >= 6)
            a.send_signal(signal.SIGSTOP)
            stopped_at = time.time()
            b = _spawn(db, led, "b", lease=1.0)
            for h in handles:
                assert h.result(timeout=30) == sum(range(10))
            a.send_signal(signal.SIGCONT)
            time.sleep(1.5)  # A wakes up, tries to record, is fenced
            for h in handles:
                assert h.status() is Status.SUCCESS and h.result() == sum(range(10))
                assert [s.name for s in client.steps(h.workflow_id)] == ["work"] * 10
        runs = _runs(led)
        for k in range(3):
            mine = [(s, pid, t0) for w, s, pid, t0, _t1 in runs if w == f"c{k}"]
            names = [s for s, *_ in mine]
            twice = {s for s in names if names.count(s) > 1}
            # only a step A was inside when stopped may have run again (in B)
            assert len(twice) <= 1, mine
            for s in twice:
                assert [p for n, p, _ in mine if n == s] == [a.pid, b.pid] or sorted(
                    p for n, p, _ in mine if n == s
                ) == sorted([a.pid, b.pid]), mine
        # nothing A ran after it was continued was recorded: B's results stand (checked above)
        assert stopped_at > 0
    finally:
        if b is not None:
            _stop(led, "b", b)
        if a.poll() is None:
            a.send_signal(signal.SIGCONT)
            _stop(led, "a", a)


@pytest.mark.timeout(120)
def test_client_mode_starts_by_name_and_a_worker_process_runs_it(files) -> None:
    db, led = files
    worker = _spawn(db, led, "w")
    try:
        client = durably.Engine(db, client=True)
        with client:
            assert client.start("double", 20).result(timeout=20) == 40
            h = client.start("waiter", workflow_id="wait-1")
            _wait_until(lambda: len(client.steps("wait-1")) >= 1)
            client.send("wait-1", "hi", topic="go")
            assert h.result(timeout=20) == "got hi"
            with pytest.raises(durably.UsageError):
                client.start("not-a-name-anyone-runs\x00")  # names are still checked
        assert {pid for _w, _s, pid, *_ in _runs(led)} == {worker.pid}
    finally:
        _stop(led, "w", worker)


@pytest.mark.timeout(180)
def test_queue_concurrency_holds_across_two_processes(files) -> None:
    """Two worker processes serve queue q (concurrency 2); 12 entries from a
    client: never more than 2 bodies at once across both processes."""
    db, led = files
    workers = [_spawn(db, led, t) for t in ("p", "q")]
    try:
        client = durably.Engine(db, client=True)
        client.queue("q", concurrency=2)
        with client:
            handles = [client.enqueue("q", "slot", i) for i in range(12)]
            assert [h.result(timeout=60) for h in handles] == list(range(12))
        runs = _runs(led)
        assert len(runs) == 12
        events = sorted([(t0, 1) for *_, t0, _ in runs] + [(t1, -1) for *_, t1 in runs])
        level = peak = 0
        for _t, d in events:
            level += d
            peak = max(peak, level)
        assert peak <= 2, (peak, runs)
    finally:
        for t, w in zip(("p", "q"), workers, strict=False):
            _stop(led, t, w)


def test_a_queue_claim_reads_the_running_count_in_its_own_transaction(tmp_path: Path) -> None:
    """Two executors on one file, one queue with concurrency 2: what one
    claimed counts against the other's claim (the count is read in the
    claim's write transaction), so the second gets nothing until a slot frees."""
    db = str(tmp_path / "q.db")
    x, y = durably.Engine(db, client=True), durably.Engine(db, client=True)
    x.queue("q", concurrency=2)
    with x, y:
        for i in range(5):
            x.enqueue("q", "slot", i)

        def claim(engine: durably.Engine) -> list[str]:
            claimed, _wake, _now = engine._lease_keeper.run_op(
                "claim_queue", engine.executor_id, "0", "q", 2, None, None, 64
            )
            return [row[0] for row in claimed]

        first = claim(x)
        assert len(first) == 2
        assert claim(y) == []  # x's two are running
        x._journal.submit(Record(R.WRITE, ("cancel", (None, first[0]))))  # the first one ends: its slot frees
        assert len(claim(y)) == 1  # one slot freed: y takes exactly one
        owners = {w.workflow_id: w.executor for w in testing.workflows(x) if w.executor is not None}
        assert set(owners.values()) == {x.executor_id, y.executor_id}


def test_executors_are_registered_and_a_clean_close_releases_its_workflows(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    engine = durably.Engine(db, app_version="v7")
    with engine:
        rows = [(e.executor_id, e.pid, e.app_version, e.stopped_at) for e in testing.executors(engine)]
        assert rows == [(engine.executor_id, os.getpid(), "v7", None)]
    conn = apsw.Connection(db)
    try:
        assert conn.execute("SELECT stopped_at IS NOT NULL FROM executors").get == 1
    finally:
        conn.close()


# A process opening ``argv[1]`` and running workflow 'one' with ``argv[2]``, printing its result.
_RUN_ONE = (
    "import sys, durably\n"
    "e = durably.Engine(sys.argv[1])\n"
    "@e.workflow(name='one')\n"
    "def one(x: int) -> int:\n"
    "    return x\n"
    "with e:\n"
    "    print(e.run('one', int(sys.argv[2])))\n"
)


def _child_env() -> dict[str, str]:
    """The environment of a child process importing the durably under test."""
    return dict(os.environ, PYTHONPATH=str(Path(durably.__file__).parents[1]))


def test_two_processes_creating_the_file_at_once_share_one_database(tmp_path: Path) -> None:
    """Each creates the new file under a temporary name and moves it into
    place: the second must not replace the first one's file (already in use)."""
    db = str(tmp_path / "new.db")
    env = _child_env()
    for _round in range(5):
        for suffix in ("", "-wal", "-shm"):
            Path(db + suffix).unlink(missing_ok=True)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RUN_ONE, db, str(i)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        engine = durably.Engine(db)
        with engine:
            assert len(engine.list_workflows()) == 4  # all four in the one file


def test_a_live_files_emptied_wal_is_not_taken_for_a_lost_one(tmp_path: Path) -> None:
    """The window the test above hit once in CI (stop 30): one engine's
    TRUNCATE checkpoint (a clean close's) empties the -wal while another
    engine has just marked the file open (CHECKPOINTED, before its own
    checkpoint marks it PAST). A third process opening then found the main
    file marked open beside an empty -wal and refused it as a lost WAL
    (WalMissingError), though the engine that set the mark was alive. The
    state is made here directly; the opener must see the live executor."""
    db = str(tmp_path / "live.db")
    engine = durably.Engine(db)

    @engine.workflow(name="one")
    def one(x: int) -> int:
        return x

    with engine:
        engine.run(one, 1)
        other = apsw.Connection(db)
        try:
            other.execute("UPDATE engine_state SET value = 1 WHERE key = 'open'")  # CHECKPOINTED
            assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0] == 0  # not busy
        finally:
            other.close()
        assert os.path.getsize(db + "-wal") == 0
        proc = subprocess.run(
            [sys.executable, "-c", _RUN_ONE, db, "2"], env=_child_env(), capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "2"
        assert sorted(w.status for w in engine.list_workflows()) == [Status.SUCCESS, Status.SUCCESS]


def _sql(db: str, sql: str, rows: list[tuple[Any, ...]] | None = None) -> list[tuple[Any, ...]]:
    """SQL on a connection of its own (another process's, as it were):
    ``rows``: executemany in one transaction; else the rows of a query."""
    if db.startswith("postgresql://"):
        from urllib.parse import parse_qs, urlsplit

        import psycopg

        from .conftest import PG_URL

        schema = parse_qs(urlsplit(db).query)["schema"][0]
        with psycopg.connect(PG_URL, autocommit=True) as pg:
            pg.execute(f"SET search_path = {schema}")
            sql = sql.replace("?", "%s")
            if rows is None:
                return [tuple(r) for r in pg.execute(sql).fetchall()]
            with pg.transaction(), pg.cursor() as cur:
                cur.executemany(sql, rows)
            return []
    conn = apsw.Connection(db)
    conn.setbusytimeout(10_000)
    try:
        if rows is None:
            return conn.execute(sql).fetchall()
        with conn:
            conn.executemany(sql, rows)
        return []
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_the_lease_keeper_prunes_gone_executors_and_old_notices_while_the_engine_runs(files, monkeypatch) -> None:
    """Issue 19 item 8: on 785dce3 the rows of executors killed without
    close() were never deleted (an idle engine's watcher looked at every
    one's pid, twice a second) and notices only when an engine opened. Now
    the lease keeper prunes both while it runs, a bounded number per round
    (here more than one round's worth); a dead executor that still owns a
    PENDING workflow keeps its row until that workflow is no longer its."""
    from durably.runtime import coordination
    from durably.store._executors import HOST

    db, _led = files
    monkeypatch.setattr(coordination, "PRUNE_EVERY", 0.2, raising=False)
    engine = durably.Engine(db, lease=2.0)  # a round that finds more is followed by one lease / 4 later
    with engine:
        now = time.time()
        old, hour_ago = now - 2 * 86400, now - 3600
        dead = [(f"dead-{i}", HOST, 4_000_000 + i, old, None) for i in range(1200)]
        stopped = [(f"stopped-{i}", HOST, 4_100_000 + i, 0.0, old) for i in range(100)]
        recent = [(f"recent-{i}", HOST, 4_200_000 + i, hour_ago, None) for i in range(5)]  # kept a day
        ghost = [("ghost", HOST, 4_300_000, old, None)]
        _sql(
            db,
            "INSERT INTO executors (executor_id, host, pid, app_version, lease_until, stopped_at, started_at)"
            f" VALUES (?, ?, ?, 'v', ?, ?, {old})",
            dead + stopped + recent + ghost,
        )
        _sql(
            db,
            "INSERT INTO workflows (workflow_id, name, status, inputs, executor)"
            " VALUES (?, 'nobody-registers-it', 'PENDING', '[[],{}]', 'ghost')",
            [("owned",)],
        )
        _sql(
            db,
            "INSERT INTO notices (kind, workflow_id, detail, created_at) VALUES ('event', ?, 'k', ?)",
            [(f"w{i}", hour_ago) for i in range(1500)] + [(f"fresh{i}", time.time()) for i in range(10)],
        )

        def executors() -> set[str]:
            return {r[0] for r in _sql(db, "SELECT executor_id FROM executors")}

        expected = {engine.executor_id, "ghost"} | {r[0] for r in recent}
        _wait_until(lambda: executors() == expected, timeout=60)
        _wait_until(
            lambda: (
                _sql(db, "SELECT count(*) FROM notices WHERE created_at < ?".replace("?", str(now - 600)))[0][0] == 0
            ),
            timeout=60,
        )
        assert _sql(db, "SELECT count(*) FROM notices WHERE workflow_id LIKE 'fresh%'")[0][0] == 10
        # its workflow ends (as if taken over and finished): the ghost's row goes too
        _sql(db, "UPDATE workflows SET status = 'SUCCESS' WHERE workflow_id = ?", [("owned",)])
        _wait_until(lambda: "ghost" not in executors(), timeout=60)
        assert executors() == expected - {"ghost"}


@pytest.mark.timeout(60)
def test_the_watcher_checks_no_pid_of_an_executor_whose_lease_ran_out(files, monkeypatch) -> None:
    """The idle cost of issue 19 item 8: on 785dce3 every claim round (twice
    a second) listed every executor row never stopped and looked at each
    one's pid; 20,000 rows of killed processes took an idle engine from 1.7%
    to 12% CPU. An executor whose lease ran out is gone for the claim
    anyway: only live leases are listed now."""
    from durably.store import _executors
    from durably.store._executors import HOST

    db, _led = files
    checked: list[int] = []
    real = _executors.pid_alive

    def pid_alive(pid: int, started: str | None) -> bool:
        checked.append(pid)
        return real(pid, started)

    from durably.runtime import leases

    monkeypatch.setattr(_executors, "pid_alive", pid_alive)
    monkeypatch.setattr(leases, "pid_alive", pid_alive)  # where the watcher judges this host's executors
    engine = durably.Engine(db)

    @engine.workflow(name="noop")
    def noop() -> None:
        return None

    with engine:
        hour_ago = time.time() - 3600
        _sql(
            db,
            "INSERT INTO executors (executor_id, host, pid, app_version, lease_until) VALUES (?, ?, ?, 'v', ?)",
            [(f"expired-{i}", HOST, 4_000_000 + i, hour_ago) for i in range(300)]
            + [("live-but-dead", HOST, 4_999_999, time.time() + 60)],
        )
        _wait_until(lambda: 4_999_999 in checked)  # a claim round ran and looked at the live lease's pid
        checked.clear()
        _wait_until(lambda: 4_999_999 in checked)  # and another one, after the rows were all there
    assert not [pid for pid in checked if 4_000_000 <= pid < 4_000_300]


# -- clocks: leases on the store's clock (issue 19, item 4) ------------------------------------


_SKEWED = {"DURABLY_TEST_CLOCK_SKEW": "15", "DURABLY_HOST": "another-machine"}


@pytest.mark.timeout(120)
def test_a_worker_whose_clock_runs_ahead_takes_nothing_from_a_live_owner(files) -> None:
    """B looks like another machine (DURABLY_HOST) and its clock runs 15 s
    ahead, more than the 10 s lease. Leases are written and compared on the
    store's clock, so B takes none of the 10 chains A is running: no step
    body runs twice, no recovery attempt is charged, A finishes them all.
    (On 785dce3 B compared A's lease with its own clock: it took all 10 over
    at its open, and the steps A was inside ran again in B.)"""
    db, led = files
    a = _spawn(db, led, "a")
    b = None
    try:
        client = durably.Engine(db, client=True)
        with client:
            handles = [client.start("chain", 30, 0.1, workflow_id=f"k{k}") for k in range(10)]
            _wait_until(lambda: {w for w, *_ in _runs(led)} == {f"k{k}" for k in range(10)})
            b = _spawn(db, led, "b", env=_SKEWED)
            time.sleep(2.0)  # B's open (its recovery) and 4 rounds of its lease keeper
            for h in handles:
                assert h.result(timeout=60) == sum(range(30))
            infos = [h.info() for h in handles]
        assert [(i.recovery_attempts, i.executor.startswith(_host_pid(a))) for i in infos] == [(0, True)] * 10
        runs = _runs(led)
        done = [(w, s) for w, s, *_ in runs]
        assert sorted(done) == sorted((f"k{k}", f"work{i}") for k in range(10) for i in range(30))  # once each
        assert {pid for _w, _s, pid, *_ in runs} == {a.pid}
    finally:
        if b is not None:
            _stop(led, "b", b)
        _stop(led, "a", a)


@pytest.mark.timeout(120)
def test_the_times_a_skewed_worker_records_come_from_the_store(files) -> None:
    """A worker whose clock runs 15 s ahead runs a chain and a queued job:
    each record's times come from one clock, the store's (a step row:
    started_at <= recorded_at, minutes apart on 785dce3 the other way; a
    queued workflow: created_at <= dequeued_at <= updated_at)."""
    db, led = files
    b = _spawn(db, led, "b", env=_SKEWED)
    try:
        client = durably.Engine(db, client=True)
        client.queue("q", concurrency=2)
        with client:
            assert client.start("chain", 3, 0.05, workflow_id="c").result(timeout=30) == 3
            assert client.enqueue("q", "slot", 7, workflow_id="j").result(timeout=30) == 7
            steps = client.steps("c") + client.steps("j")
            job = client.handle("j").info()
        assert len(steps) == 4
        for s in steps:
            assert s.started_at is not None and 0.0 <= s.recorded_at - s.started_at < 5.0, s
        assert job.dequeued_at is not None and job.created_at <= job.dequeued_at <= job.updated_at, job
        assert abs(job.updated_at - time.time()) < 10.0  # the store's clock, this host's (not 15 s ahead)
    finally:
        _stop(led, "b", b)


class _JumpVFS(apsw.VFS):
    """The default VFS whose clock (what SQLite's 'now' reads) is ``offset``
    milliseconds off: a jump of the host's wall clock, as SQLite sees it."""

    offset = 0

    def __init__(self) -> None:
        super().__init__("clock-jump", "")

    def xCurrentTimeInt64(self) -> int:
        return super().xCurrentTimeInt64() + self.offset


@pytest.mark.timeout(120)
def test_a_forward_jump_of_the_wall_clock_takes_nothing_from_a_live_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One host, two engines (A: lease 40 s, renewed every 10 s; B: lease
    1 s, looking every 0.25 s), and the wall clock jumps an hour forward
    just after A renewed: every lease now looks expired, A's until its
    next heartbeat. B saw A alive (its process) and renewing on its own
    monotonic clock, so it takes none of A's workflows. (On 785dce3 B took
    them all within a quarter of a second.)"""
    vfs = _JumpVFS()
    db, led = str(tmp_path / "jump.db"), str(tmp_path / "ledger.db")
    first = durably.Engine(db, lease=40.0, vfs="clock-jump")
    _procworker.build(first, _procworker.ledger(led))
    second = durably.Engine(db, lease=1.0, vfs="clock-jump")
    _procworker.build(second, _procworker.ledger(led))
    try:
        with first, second:
            for k in range(4):
                first.start("waiter", workflow_id=f"w{k}")
            _wait_until(lambda: len(_runs(led)) == 4)

            def lease() -> float:
                (me,) = [e for e in testing.executors(first) if e.executor_id == first.executor_id]
                return me.lease_until

            before = lease()
            _wait_until(lambda: lease() != before, timeout=15)  # A just renewed: its next renewal is 10 s away
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + 3600.0)  # Python's clock jumps with SQLite's
            _JumpVFS.offset = 3600_000
            time.sleep(1.5)  # 6 of B's claim rounds
            infos = [first.handle(f"w{k}").info() for k in range(4)]
            assert [(i.executor, i.recovery_attempts) for i in infos] == [(first.executor_id, 0)] * 4
            for k in range(4):
                second.send(f"w{k}", k, topic="go")
            for k in range(4):
                assert first.handle(f"w{k}").result(timeout=20) == f"got {k}"
        assert sorted((w, s) for w, s, *_ in _runs(led)) == sorted(
            [(f"w{k}", "work0") for k in range(4)] + [(f"w{k}", "work1") for k in range(4)]
        )
    finally:
        _JumpVFS.offset = 0
        vfs.unregister()
