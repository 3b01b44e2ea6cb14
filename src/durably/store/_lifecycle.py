"""Creating, vetting and marking database files so damage is refused at open.

* A new database is built under a temporary name, fully initialised and
  closed, then renamed into place: the path never names a half-made file,
  so an empty file there is damage, not a crash during creation.
* ``engine_state.open`` is set when an engine opens and cleared when it
  closes cleanly. Finding it set means the last engine crashed: by default
  the file gets a ``PRAGMA quick_check`` before any workflow runs, and its
  -wal must still exist (deleting a hot WAL silently drops committed
  transactions) unless the main file shows that a checkpoint made after
  the crash folded the whole WAL in (store/_checkpoint.py: which value the
  mark has in the main file tells the two apart).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import apsw

from .. import _logs, errors
from . import _executors
from ._apsw import Connection
from ._checkpoint import CHECKPOINTED, CLOSED, EXTERNAL, PAST, mark
from ._connection import close_clean, connect, is_memory
from ._errors import map_error
from ._schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    from ._store import Store

CHECKS = ("auto", "always", "never")
log = _logs.get("durably.store")


def create(path: str, synchronous: str, vfs: str | None, migrate: Callable[[Connection], None]) -> None:
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

    A file marked open (its last engine crashed) with no WAL content next
    to it (no -wal, or an empty one: a reader opening the file makes one)
    is refused here, before any connection could create a new, empty -wal,
    unless its main file shows it holds what the WAL held
    (store/_checkpoint.py). The refusal stands until an operator accepts
    the loss (:func:`accept_wal_loss`).
    """
    if os.path.getsize(path) == 0:
        raise errors.DatabaseCorruptError(
            f"{path!r} is an empty file, not a durably database (truncated?). Restore it from a "
            "backup, or delete it to start an empty one",
            path=path,
        )
    size = _wal_size(path)
    if size:
        return size  # SQLite reads what the WAL holds
    found = _main_file_mark(path, vfs)
    if found and found not in (PAST, EXTERNAL) and _wal_size(path) is not None:
        # An empty -wal is a reader's, or a live engine's (just after a
        # TRUNCATE checkpoint, or made by an engine that opened the file
        # between the two reads above), its main file marked open by that
        # engine: vet() tells the two apart (it sees live executors).
        return 0
    if found == PAST:
        log.info(
            "durably: %r was not closed cleanly and its -wal is gone, but a checkpoint made since (another "
            "program closing the file) folded the whole -wal into it: nothing is missing",
            path,
            extra=_logs.fields("store.wal_folded"),
        )
    elif found == EXTERNAL:
        log.warning(RESTORED, path, extra=_logs.fields("store.restored"))
    elif found:
        raise wal_missing(path, vfs, "missing")
    return size


def wal_missing(path: str, vfs: str | None, state: str) -> errors.WalMissingError:
    """The refusal of a crashed file whose -wal is ``state`` (missing, empty)."""
    return errors.WalMissingError(
        f"{path!r} was not closed cleanly but its -wal file is {state}: transactions committed in the "
        "lost -wal would be lost. Put the -wal file back (it must sit next to the database), or restore "
        "from a backup; to go on without them, accept the loss explicitly with "
        f"`python -m durably accept-wal-loss {path}`{_litestream_hint(path, vfs)}",
        path=path,
    )


def _wal_size(path: str) -> int | None:
    """The size of ``path``'s -wal file, or None if there is none."""
    try:
        return os.path.getsize(path + "-wal")
    except FileNotFoundError:
        return None


# store/_checkpoint.py ("Checkpoints left to another program"): why a file marked EXTERNAL without its -wal opens.
RESTORED = (
    "durably: %r was not closed cleanly and has no -wal; its engine left checkpoints to another program "
    '(checkpoints="external", e.g. Litestream): opened as a restored copy, checked with quick_check. If '
    "its -wal was lost instead, what it held is in the replica: stop, and restore from there"
)


def _litestream_hint(path: str, vfs: str | None) -> str:
    """Advice for a file Litestream replicates, run with durably's own checkpoints."""
    uri = immutable_uri(path)
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    try:
        conn = Connection(uri, flags=flags, vfs=vfs) if vfs else Connection(uri, flags=flags)
        try:
            replicated = conn.execute("SELECT 1 FROM sqlite_schema WHERE name = '_litestream_seq'").get
        finally:
            conn.close()
    except apsw.Error:
        return ""
    if not replicated:
        return ""
    return (
        ". Litestream replicates this file: if it was restored by `litestream restore`, nothing is missing "
        '(accept it as above); open replicated files with durably.Engine(..., checkpoints="external") so '
        "that restored copies open as they are"
    )


def immutable_uri(path: str) -> str:
    """A URI reading ``path`` alone: no locks, no -wal, no -shm created."""
    return f"file:{quote(os.path.abspath(path))}?immutable=1"


def _main_file_mark(path: str, vfs: str | None) -> object:
    """The crash mark in the main file alone, read without creating any
    file (``immutable``: no locks, no -wal, no -shm), or None."""
    uri = immutable_uri(path)
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    try:
        conn = Connection(uri, flags=flags, vfs=vfs) if vfs else Connection(uri, flags=flags)
    except apsw.Error:
        return None
    try:
        has_state = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'engine_state'").get
        return mark(conn) if has_state else None
    except apsw.Error:
        return None  # not readable as a durably database: vet() and migrate() will say why
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
                f"{path!r} failed PRAGMA quick_check: {'; '.join(problems[:5])}", path=path
            )
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'engine_state'").get:
            mark_closed(conn)
    except BaseException:
        conn.close()
        raise
    close_clean(conn)


def vet(conn: Connection, path: str, wal_size: int | None, check: str, vfs: str | None = None) -> None:
    """Refuse a crashed database whose WAL is gone, a truncated one, and
    (after a crash, or always) one failing quick_check. Runs before any
    migration writes to the file, in one read transaction (one snapshot).
    While another executor has the file open (it may have written since
    preflight looked, or truncated its -wal), the file is theirs and in use:
    neither a crash nor a truncation to judge."""
    conn.execute("BEGIN")
    try:
        _vet(conn, path, wal_size, check, vfs)
    finally:
        conn.execute("COMMIT")


def _vet(conn: Connection, path: str, wal_size: int | None, check: str, vfs: str | None) -> None:
    has_state = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'engine_state'").get
    found = mark(conn) if has_state else CLOSED
    live = bool(found or not wal_size) and _executors.others_live(conn, None)
    was_open = bool(found) and not live  # another process has it open: not a crash
    if was_open and not wal_size and found not in (PAST, EXTERNAL):
        raise wal_missing(path, vfs, "missing or empty")  # preflight refused it already, unless it changed since
    if not wal_size and not live:  # no WAL content: the main file alone must hold every page its header counts
        expected = conn.pragma("page_count") * conn.pragma("page_size")
        actual = os.path.getsize(path)
        if actual < expected:
            raise errors.DatabaseCorruptError(
                f"{path!r} is truncated: {actual} bytes, its header says {expected}; restore it from a backup",
                path=path,
            )
    if check == "always" or (check == "auto" and was_open):
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise errors.DatabaseCorruptError(
                f"{path!r} failed PRAGMA quick_check: {'; '.join(problems[:5])}",
                path=path,
            )


def check_codec(conn: Connection, path: str, codec: str) -> None:
    """Record the values codec at the first open; refuse another one later
    (JSON text decoded as pickle, or the reverse, would fail every pending
    workflow)."""
    stored = conn.execute("SELECT value FROM engine_state WHERE key = 'codec'").get
    if stored is None:
        conn.execute("INSERT INTO engine_state (key, value) VALUES ('codec', ?) ON CONFLICT (key) DO NOTHING", (codec,))
    elif stored != codec:
        raise errors.CodecMismatchError(
            f"{path!r} holds values written with codec={stored!r}; open it with "
            f"durably.Engine(..., codec={stored!r}), not {codec!r}",
            path=path,
            stored=stored,
            requested=codec,
        )


def mark_open(conn: Connection, register: tuple[Any, ...] | None = None, value: int = CHECKPOINTED) -> None:
    """Mark the (migrated) file open, so a crash is told from a clean close;
    with ``register`` (the arguments of ``_executors.register``), register
    this executor in the same transaction: a process closing meanwhile then
    either sees it live or finds the mark set again after its own clear.
    The value is CHECKPOINTED: the store's checkpoint that follows copies it
    into the main file, then marks the WAL's states PAST (EXTERNAL when
    another program checkpoints: store/_checkpoint.py)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE engine_state SET value = ? WHERE key = 'open'", (value,))
        if register is not None:
            _executors.register(conn, *register)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def mark_closed(conn: Connection, external: bool = False) -> None:
    """Clear the mark and fold the WAL into the main file (a clean close
    leaves no WAL content to lose). ``external``: another program holds a
    read transaction open for good (Litestream), which a TRUNCATE would wait
    for until busy_timeout: a PASSIVE copy, as far as it may go."""
    conn.execute("UPDATE engine_state SET value = ? WHERE key = 'open'", (CLOSED,))
    conn.execute(f"PRAGMA wal_checkpoint({'PASSIVE' if external else 'TRUNCATE'})")


def migrate(store: Store, conn: Connection) -> None:
    """Create or migrate the schema of ``conn``'s file in one transaction
    (``MIGRATIONS`` keyed by user_version); refuse a foreign or newer file."""
    try:
        if _needs_migration(store, conn):
            _apply_migrations(store, conn)
    except apsw.Error as exc:
        raise map_error(exc, store.path) from exc


def _schema_error(store: Store, message: str, version: int) -> errors.SchemaVersionError:
    return errors.SchemaVersionError(message, path=store.path, found=version, supported=SCHEMA_VERSION)


def _needs_migration(store: Store, conn: Connection) -> bool:
    """Whether ``conn``'s file is a durably file older than this schema;
    raise if it is foreign, newer, or holds tables that are not durably's."""
    version = conn.pragma("user_version")
    app_id = conn.pragma("application_id")
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and version != 0):
        raise _schema_error(
            store,
            f"{store.path!r} is an SQLite database but not a durably one "
            f"(application_id={app_id:#x}, user_version={version})",
            version,
        )
    if version > SCHEMA_VERSION:
        raise _schema_error(
            store,
            f"{store.path!r} has schema version {version}, newer than this durably "
            f"supports ({SCHEMA_VERSION}); upgrade durably to open it",
            version,
        )
    if version == SCHEMA_VERSION:
        return False
    if version == 0 and app_id == 0 and conn.execute("SELECT count(*) FROM sqlite_schema").get:
        raise _schema_error(store, f"{store.path!r} already holds tables that are not durably's", version)
    return True


def _apply_migrations(store: Store, conn: Connection) -> None:
    """Run every pending migration in one IMMEDIATE transaction."""
    # Rebuilding a table others reference (SQLite's 12-step ALTER)
    # needs foreign keys off around the transaction; every reference
    # is checked again before it commits.
    conn.pragma("foreign_keys", 0)
    conn.execute("BEGIN IMMEDIATE")  # one transaction for every pending migration
    try:
        # Another process may have migrated it while this one waited for the lock.
        version = conn.pragma("user_version")
        if version > SCHEMA_VERSION:
            raise _schema_error(
                store,
                f"{store.path!r} was just migrated to schema version {version} by a newer durably",
                version,
            )
        for script in MIGRATIONS[version:]:
            conn.execute(script)
        broken = conn.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise errors.InternalError(f"a migration broke {len(broken)} foreign key(s): {broken[:3]}")
        conn.pragma("user_version", SCHEMA_VERSION)
        conn.pragma("application_id", APPLICATION_ID)
        conn.execute("COMMIT")
    except BaseException:
        store._abort(conn)
        raise
    finally:
        conn.pragma("foreign_keys", 1)


def open_readonly(store: Store) -> None:
    """Open for inspection only (the CLI): one read-only connection, no
    migration, no open mark, nothing written, no file left behind (a
    file without a -wal, closed cleanly or never opened, is read as it
    is, immutable: SQLite then creates no -wal or -shm). Refuses foreign
    or newer files."""
    if is_memory(store.path) or not os.path.isfile(store.path):
        raise errors.CantOpenError(f"no database file at {store.path!r}", path=store.path)
    try:
        if os.path.exists(store.path + "-wal"):  # a live (or crashed) engine's file: read its WAL too
            conn = Connection(store.path, flags=apsw.SQLITE_OPEN_READONLY, vfs=store.vfs or None)
        else:
            conn = Connection(
                immutable_uri(store.path),
                flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI,
                vfs=store.vfs or None,
            )
        app_id, version = conn.pragma("application_id"), conn.pragma("user_version")
    except apsw.Error as exc:
        raise map_error(exc, store.path) from exc
    if app_id != APPLICATION_ID or version > SCHEMA_VERSION:
        conn.close()
        raise errors.SchemaVersionError(
            f"{store.path!r} is not a durably database this version can read "
            f"(application_id={app_id:#x}, user_version={version})",
            path=store.path,
            found=version,
            supported=SCHEMA_VERSION,
        )
    store._reader = conn
    store._queues_table = version >= 3  # an older file, inspected as it is: no queues yet
    store._full_view = version >= 4
    store._limits_table = version >= 6
    store._version = version
