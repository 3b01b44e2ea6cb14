"""Opening engine connections: PRAGMAs set and asserted, files created 0600.

Every connection durably opens goes through :func:`connect`. The PRAGMAs
follow DESIGN.md section 3; each is read back and checked, so a build of
SQLite that silently ignores one fails loudly instead of running unsafe.
"""

from __future__ import annotations

import os
import time

import apsw
import apsw.bestpractice

from .. import errors
from ._apsw import Connection
from ._errors import map_error

BUSY_TIMEOUT_MS = 5000
# Waiting for a lock another connection holds. SQLite's own busy handler
# sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100, 100 ... ms between
# tries: while another process commits every millisecond or two, a waiting
# writer sleeps through many of its commits and the lock is often free while
# nobody takes it (issue 24: 2 and 4 processes on one file ran at 0.67x and
# 0.60x of one). durably's handler (``BusyWait``) tries again after 20 us,
# growing by half each time to 0.5 ms, for the same BUSY_TIMEOUT_MS in all.
# Measured (5 interleaved runs of 1,024 x 10 over 1, 2, 4 processes):
# against SQLite's, 2 processes 1.12x and 4 processes 1.42x, fairness
# 0.54 -> 0.90 and 0.31 -> 0.72; a 1 ms cap gave 1.24x / 1.23x.
BUSY_FIRST_S = 20e-6
BUSY_MAX_S = 0.0005
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# Pages of WAL before a checkpoint. Measured (bench/, sequential steps from
# a fresh file): 4000 pages cost ~15% of single-step throughput against
# 1000, because a longer WAL is appended to (an fdatasync that must also
# flush the file size) for longer before it is reset and overwritten. The
# store checkpoints itself (store/_checkpoint.py): SQLite's own automatic
# checkpoint is off on engine connections (PRAGMA wal_autocheckpoint=0).
WAL_AUTOCHECKPOINT = 1000
CACHE_SIZE_KIB = 32 * 1024

SYNCHRONOUS = {"full": 2, "normal": 1}


def is_memory(path: str) -> bool:
    return path == ":memory:" or path == ""


class BusyWait:
    """A connection's busy handler: SQLite calls it with the number of
    tries so far while another connection holds the lock; True tries again
    (after a short sleep, the GIL released), False gives up with
    SQLITE_BUSY, after BUSY_TIMEOUT_MS in all as SQLite's own would."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since = 0.0

    def __call__(self, tries: int) -> bool:
        now = time.monotonic()
        if tries == 0:
            self.since = now
        elif now - self.since >= BUSY_TIMEOUT_MS / 1000:
            return False
        time.sleep(min(BUSY_FIRST_S * 1.5 ** min(tries, 8), BUSY_MAX_S))
        return True


def expected_pragmas(path: str, synchronous: str) -> dict[str, object]:
    """The PRAGMA values every engine connection must report."""
    return {
        "journal_mode": "memory" if is_memory(path) else "wal",
        "synchronous": SYNCHRONOUS[synchronous],
        "busy_timeout": 0,  # SQLite's handler replaced by BusyWait (same bound: BUSY_TIMEOUT_MS)
        "foreign_keys": 1,
        "trusted_schema": 0,
        "journal_size_limit": JOURNAL_SIZE_LIMIT,
        "wal_autocheckpoint": 0,
        "cache_size": -CACHE_SIZE_KIB,
        "temp_store": 2,
    }


def connect(path: str, synchronous: str, *, readonly: bool = False, vfs: str | None = None) -> Connection:
    """Open one engine connection with the durable PRAGMAs, or raise StorageError."""
    creating = not is_memory(path) and not os.path.exists(path)
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    if readonly:
        flags = apsw.SQLITE_OPEN_READONLY
    try:
        conn = Connection(path, flags=flags, vfs=vfs) if vfs else Connection(path, flags=flags)
    except apsw.Error as exc:
        raise map_error(exc, path) from exc
    try:
        if creating:
            # The -wal and -shm files copy the database file's mode.
            os.chmod(path, 0o600)
            # Pages freed by deletions (retention) can be handed back to the
            # file system in small steps (PRAGMA incremental_vacuum): only
            # settable before the first table, and before WAL mode.
            conn.pragma("auto_vacuum", 2)
        if not is_memory(path):
            # Closing the last connection must not checkpoint and delete the
            # -wal behind the crash mark's back (after a writer failure, or a
            # process ending without close()): the next open would then see
            # "crashed, WAL gone" and refuse a healthy file. Only a clean
            # close lifts this (close_clean).
            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        _configure(conn, path, synchronous)
    except apsw.Error as exc:
        conn.close()
        raise map_error(exc, path) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def close_clean(conn: Connection) -> None:
    """Close a connection letting SQLite checkpoint and remove the -wal (when
    it is the last one): only after the file was marked cleanly closed."""
    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0)
    conn.close()


def _configure(conn: Connection, path: str, synchronous: str) -> None:
    # Our own connection only: never bestpractice.apply() (process-wide).
    apsw.bestpractice.connection_dqs(conn)
    conn.set_busy_handler(BusyWait())
    if not is_memory(path):
        conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", SYNCHRONOUS[synchronous])
    conn.pragma("foreign_keys", 1)
    conn.pragma("trusted_schema", 0)
    conn.pragma("journal_size_limit", JOURNAL_SIZE_LIMIT)
    conn.pragma("wal_autocheckpoint", 0)  # durably checkpoints itself (store/_checkpoint.py)
    conn.pragma("cache_size", -CACHE_SIZE_KIB)
    conn.pragma("temp_store", 2)
    check_pragmas(conn, path, synchronous)


def read_pragmas(conn: Connection) -> dict[str, object]:
    """Current values of the PRAGMAs durably sets."""
    return {name: conn.pragma(name) for name in expected_pragmas(":memory:", "full")}


def check_pragmas(conn: Connection, path: str, synchronous: str) -> None:
    got = read_pragmas(conn)
    want = expected_pragmas(path, synchronous)
    wrong = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    if wrong:
        raise errors.StorageError(
            f"SQLite refused durable settings on {path!r}: "
            + ", ".join(f"{k}={g!r} (wanted {w!r})" for k, (g, w) in wrong.items()),
            path=path,
        )
