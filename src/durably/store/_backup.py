"""An online backup of an SQLite durably file: a consistent copy taken while
engines write to it, that an engine opens as it is.

* Consistent: the copy is one committed state of the source. The source
  connection holds one read transaction for the whole copy, so SQLite's
  backup API reads a single snapshot and never starts over when other
  connections commit (it would, forever, under load, without it). In WAL
  mode a reader never blocks the writer: the engine's batches go on; only
  checkpoints cannot pass the snapshot until the copy ends (the WAL grows
  meanwhile and is folded in afterwards).
* A few hundred pages per step, the GIL released in between: the copy's
  I/O is spread out, so the process's workflow threads keep running.
* Never a half file at ``dest``: the copy is made under a temporary name in
  the destination's folder, fsynced, then linked into place (``link``
  fails if ``dest`` appeared meanwhile: another file is never replaced),
  and the folder is fsynced. Killed midway, ``dest`` is absent and the
  temporary file is left (``<dest>.partial-<pid>``).
* Opens as it is: the copy is a closed database. The source's crash mark
  says "open" (store/_checkpoint.py), and the executors registered in the
  source are not running on the copy; the copy gets a CLOSED mark and its
  executors are stopped, so an engine opened on it neither refuses it
  (WalMissingError: marked open, no -wal) nor waits for leases of
  processes that never ran there: it resumes the pending workflows at once.
  The source is vetted first (``preflight``): a file whose -wal was lost is
  refused, never laundered into a clean copy.
"""

from __future__ import annotations

import os
import time
from urllib.parse import quote

import apsw

from .. import _crash, errors
from ._apsw import Connection
from ._checkpoint import CLOSED, SET_MARK
from ._connection import connect, is_memory
from ._errors import map_error
from ._files import link_into_place, sync_folder
from ._lifecycle import preflight
from ._queries import SQLITE_EXEC
from ._schema import APPLICATION_ID, SCHEMA_VERSION

# Pages copied per step (4 KiB pages: ~1 MiB), then the GIL is given back.
STEP_PAGES = 256


def check_dest(source: str, dest: str) -> str:
    """``dest`` as an absolute path, or BackupDestinationError (nothing written):
    it must not exist (nor a -wal, -shm or -journal beside it, which SQLite
    would read as the copy's), its folder must, and it is not the source."""
    if not isinstance(dest, str) or not dest or dest == ":memory:":
        raise errors.BackupDestinationError(f"a backup destination is a file path, not {dest!r}", path=dest)
    path = os.path.abspath(dest)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise errors.BackupDestinationError(
            f"the folder of the backup destination {dest!r} does not exist ({folder!r}); create it first", path=dest
        )
    if os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path):
        raise errors.BackupDestinationError(f"the backup destination {dest!r} is the source database", path=dest)
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.lexists(path + suffix):
            raise errors.BackupDestinationError(
                f"the backup destination {path + suffix!r} already exists; durably never overwrites a file: "
                "choose a new name or remove it",
                path=dest,
            )
    return path


def backup_file(
    source: str, dest: str, *, vfs: str | None = None, live: bool = False, step_pages: int = STEP_PAGES
) -> tuple[int, int]:
    """Copy the durably database ``source`` to the new file ``dest`` (module
    docstring); return (pages, page size). ``live``: an engine of this
    process has ``source`` open (already vetted). Storage errors are typed
    (StorageError); bad destinations raise BackupDestinationError before
    anything is written."""
    if is_memory(source):
        raise errors.UsageError("an in-memory database has no file to back up")
    path = check_dest(source, dest)
    if not os.path.isfile(source):
        raise errors.CantOpenError(f"no database file at {source!r}", path=source)
    if not live:
        _check_source(source, vfs)  # before a connection may change it (journal_mode=WAL)
        preflight(source, vfs)  # a crashed file whose -wal is gone is refused
    tmp = f"{path}.partial-{os.getpid()}"
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)  # a leftover of this pid's own killed backup
    try:
        pages, page_size = _copy(source, tmp, vfs, step_pages)
        _sync_file(tmp)
        if _crash.ARMED:
            _crash.hit("backup.before_place")
        link_into_place(
            tmp,
            path,
            lambda what: errors.BackupDestinationError(f"the backup destination {what}; left as it is", path=path),
        )
        sync_folder(path)
        if _crash.ARMED:
            _crash.hit("backup.after_place")
    except apsw.Error as exc:
        raise map_error(exc, source) from exc
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(tmp + suffix):
                os.remove(tmp + suffix)
    return pages, page_size


def _check_source(source: str, vfs: str | None) -> None:
    """Refuse a file that is not a durably database this version reads."""
    try:
        app_id, version = _header(source, vfs)
    except apsw.Error as exc:
        raise map_error(exc, source) from exc
    if app_id != APPLICATION_ID or version > SCHEMA_VERSION:
        raise errors.SchemaVersionError(
            f"{source!r} is not a durably database this version can copy "
            f"(application_id={app_id:#x}, user_version={version})",
            path=source,
            found=version,
            supported=SCHEMA_VERSION,
        )


def _header(path: str, vfs: str | None) -> tuple[int, int]:
    """(application_id, user_version) of the main file, read without creating or changing anything."""
    uri = f"file:{quote(os.path.abspath(path))}?immutable=1"
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    conn = Connection(uri, flags=flags, vfs=vfs) if vfs else Connection(uri, flags=flags)
    try:
        return conn.pragma("application_id"), conn.pragma("user_version")
    finally:
        conn.close()


def _copy(source: str, tmp: str, vfs: str | None, step_pages: int) -> tuple[int, int]:
    """Copy one snapshot of ``source`` into ``tmp``, then close the copy's mark."""
    src = connect(source, "full", vfs=vfs)  # no checkpoint on close (a crashed file's -wal stays)
    try:
        out = Connection(tmp, vfs=vfs) if vfs else Connection(tmp)
        try:
            os.chmod(tmp, 0o600)
            out.pragma("synchronous", 2)  # FULL: the copy's commits and checkpoint are fsynced
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # the snapshot, held to the end
            pages = 0  # (apsw types the backup's __exit__ as one that may swallow an error: it does not)
            with out.backup("main", src, "main") as copying:
                while not copying.step(step_pages):
                    if _crash.ARMED:
                        _crash.hit("backup.step")
                    time.sleep(0)  # give the GIL back between steps
                pages = copying.page_count
            src.execute("ROLLBACK")
            page_size = out.pragma("page_size")
            _close_mark(out)
        finally:
            out.close()  # the last connection: SQLite checkpoints and removes the copy's -wal
    finally:
        src.close()
    return pages, page_size


def _close_mark(out: Connection) -> None:
    """The copy is a closed database with no executor running on it."""
    tables = {row[0] for row in out.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    out.execute("BEGIN IMMEDIATE")
    if "engine_state" in tables:
        out.execute(SET_MARK, (CLOSED,))
    if "executors" in tables:
        out.execute(SQLITE_EXEC["stop_all"])
    out.execute("COMMIT")
    out.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _sync_file(path: str) -> None:
    # No connection is open on the temporary copy any more, so this
    # descriptor cannot cancel a lock of ours (DESIGN.md section 3): it only
    # makes the copy's bytes durable before its name is.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pages_of(path: str) -> tuple[int, int]:
    """(pages, page size) of the closed database file ``path``, read as it is."""
    uri = f"file:{quote(os.path.abspath(path))}?immutable=1"
    conn = Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return conn.pragma("page_count"), conn.pragma("page_size")
    finally:
        conn.close()
