"""Creating, vetting and marking database files so damage is refused at open.

* A new database is built under a temporary name, fully initialised and
  closed, then renamed into place: the path never names a half-made file,
  so an empty file there is damage, not a crash during creation.
* ``engine_state.open`` is set (and checkpointed into the main file) when an
  engine opens and cleared when it closes cleanly. Finding it set means the
  last engine crashed: its -wal file must still exist (deleting a hot WAL
  silently drops committed transactions) and, by default, the file gets a
  ``PRAGMA quick_check`` before any workflow runs.
"""

from __future__ import annotations

import os
from typing import Any

import apsw

from urllib.parse import quote

from .. import errors
from . import _executors
from ._connection import close_clean, connect

CHECKS = ("auto", "always", "never")


def create(path: str, synchronous: str, vfs: str | None, migrate: "callable") -> None:  # type: ignore[valid-type]
    """Create ``path`` atomically: build it under a temporary name, then rename."""
    tmp = f"{path}.init-{os.getpid()}"
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)  # a leftover of our own crashed creation
    conn = connect(tmp, synchronous, vfs=vfs)
    try:
        migrate(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except BaseException:
        conn.close()
        raise
    close_clean(conn)  # the last connection: SQLite checkpoints and removes the -wal
    # Into place without replacing: another process may have created the
    # file meanwhile and be writing to it already (a rename would swap its
    # database for ours under it). link() fails if the path exists.
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # theirs stands; ours goes
    except OSError:  # a file system without hard links
        if not os.path.exists(path):
            os.rename(tmp, path)
    if os.path.exists(tmp):
        os.remove(tmp)


def preflight(path: str, vfs: str | None = None) -> int | None:
    """Vet an existing file before SQLite touches it; return the size of its
    -wal file, or None if there is none.

    A file marked open (its last engine crashed) whose -wal is gone is
    refused here, before any connection could create a new, empty -wal:
    otherwise a second attempt would find a -wal and open silently with
    the lost transactions missing. The refusal stands until an operator
    accepts the loss (:func:`accept_wal_loss`).
    """
    if os.path.getsize(path) == 0:
        raise errors.DatabaseCorruptError(
            f"{path!r} is an empty file, not a durably database (truncated?). Restore it from a "
            "backup, or delete it to start an empty one", path=path,
        )
    wal = path + "-wal"
    if os.path.exists(wal):
        return os.path.getsize(wal)
    if _marked_open(path, vfs):
        raise errors.WalMissingError(
            f"{path!r} was not closed cleanly but its -wal file is missing: transactions committed "
            "in it would be lost. Put the -wal file back (it must sit next to the database), or "
            "restore from a backup; to go on without them, accept the loss explicitly with "
            f"`python -m durably accept-wal-loss {path}`", path=path,
        )
    return None


def immutable_uri(path: str) -> str:
    """A URI reading ``path`` alone: no locks, no -wal, no -shm created."""
    return f"file:{quote(os.path.abspath(path))}?immutable=1"


def _marked_open(path: str, vfs: str | None) -> bool:
    """The crash mark, read from the main file alone without creating any
    file (``immutable``: no locks, no -wal, no -shm; there is no -wal)."""
    uri = immutable_uri(path)
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    try:
        conn = apsw.Connection(uri, flags=flags, vfs=vfs) if vfs else apsw.Connection(uri, flags=flags)
    except apsw.Error:
        return False
    try:
        has_state = conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'engine_state'").get
        return bool(has_state and conn.execute("SELECT value FROM engine_state WHERE key = 'open'").get)
    except apsw.Error:
        return False  # not readable as a durably database: vet() and migrate() will say why
    finally:
        conn.close()


def accept_wal_loss(path: str, vfs: str | None = None) -> None:
    """The operator's explicit decision after a WalMissingError: go on with
    the main file as it is, accepting that transactions committed in the
    lost -wal are gone. Runs ``PRAGMA quick_check`` first (a damaged file is
    still refused), then clears the crash mark. Workflows whose records were
    lost resume from what the main file holds (steps may run again)."""
    if not os.path.isfile(path):
        raise errors.CantOpenError(f"no database file at {path!r}", path=path)
    conn = connect(path, "full", vfs=vfs)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise errors.DatabaseCorruptError(
                f"{path!r} failed PRAGMA quick_check: {'; '.join(problems[:5])}", path=path)
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'engine_state'").get:
            mark_closed(conn)
    except BaseException:
        conn.close()
        raise
    close_clean(conn)


def vet(conn: apsw.Connection, path: str, wal_size: int | None, check: str) -> None:
    """Refuse a crashed database whose WAL is gone, a truncated one, and
    (after a crash, or always) one failing quick_check. Runs before any
    migration writes to the file."""
    has_state = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'engine_state'").get
    was_open = conn.execute("SELECT value FROM engine_state WHERE key = 'open'").get if has_state else 0
    if was_open and _executors.others_live(conn, None):
        was_open = 0  # another process has it open: not a crash
    if was_open and wal_size is None:
        raise errors.WalMissingError(
            f"{path!r} was not closed cleanly but its -wal file is missing: transactions committed "
            "in it would be lost. Put the -wal file back (it must sit next to the database), or "
            "restore from a backup", path=path,
        )
    if not wal_size:  # no WAL content: the main file alone must hold every page its header counts
        expected = conn.pragma("page_count") * conn.pragma("page_size")
        actual = os.path.getsize(path)
        if actual < expected:
            raise errors.DatabaseCorruptError(
                f"{path!r} is truncated: {actual} bytes, its header says {expected}; restore it "
                "from a backup", path=path,
            )
    if check == "always" or (check == "auto" and was_open):
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise errors.DatabaseCorruptError(
                f"{path!r} failed PRAGMA quick_check: {'; '.join(problems[:5])}", path=path,
            )


def check_codec(conn: apsw.Connection, path: str, codec: str) -> None:
    """Record the values codec at the first open; refuse another one later
    (JSON text decoded as pickle, or the reverse, would fail every pending
    workflow)."""
    stored = conn.execute("SELECT value FROM engine_state WHERE key = 'codec'").get
    if stored is None:
        conn.execute("INSERT INTO engine_state (key, value) VALUES ('codec', ?) ON CONFLICT (key) DO NOTHING",
                     (codec,))
    elif stored != codec:
        raise errors.CodecMismatchError(
            f"{path!r} holds values written with codec={stored!r}; open it with "
            f"durably.Engine(..., codec={stored!r}), not {codec!r}", path=path, stored=stored, requested=codec)


def mark_open(conn: apsw.Connection, register: tuple[Any, ...] | None = None) -> None:
    """Mark the (migrated) file open, so a crash is told from a clean close;
    with ``register`` (the arguments of ``_executors.register``), register
    this executor in the same transaction: a process closing meanwhile then
    either sees it live or finds the mark set again after its own clear."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE engine_state SET value = 1 WHERE key = 'open'")
        if register is not None:
            _executors.register(conn, *register)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the mark must reach the main file


def mark_closed(conn: apsw.Connection) -> None:
    """Clear the mark and fold the WAL into the main file (a clean close
    leaves no WAL content to lose)."""
    conn.execute("UPDATE engine_state SET value = 0 WHERE key = 'open'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
