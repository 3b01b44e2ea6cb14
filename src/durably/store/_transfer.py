"""Moving a whole database between backends: the store side of ``durably
copy`` (durably/operations/copy.py), SQLite's half and what both share.

* Export (any store opened read-only): every table of
  ``_queries.TRANSFER_TABLES``, in that order, in chunks read by keyset on
  the primary key (each chunk one indexed range read, whatever the size),
  all from ONE snapshot: a read transaction on SQLite, a REPEATABLE READ
  READ ONLY transaction on PostgreSQL. What the copy carries is one
  consistent state of the source, even if something commits meanwhile.
* Import (a store just created by its own ``open(codec)``: the destination
  is exactly what an engine makes): the rows written as they were read,
  ids and sequence numbers kept (creation order, message order, queue
  order). SQLite commits every ``BATCH`` rows and checkpoints as an engine
  does (the caller builds the file under a temporary name and renames it
  into place: a half copy is never at the destination's path). PostgreSQL
  writes everything in one transaction with COPY, then moves the identity
  sequences past the copied maxima (store/pg/_transfer.py): a copy that
  fails leaves the schema empty, and a re-run accepts an empty schema.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import apsw

from .. import errors
from ._errors import map_error
from ._files import link_into_place, sync_folder
from ._queries import TRANSFER_TABLES, transfer_insert, transfer_select
from ._schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from ._store import Store

CHUNK = 5000  # rows per keyset read
BATCH = 50_000  # rows per transaction of an SQLite import
Run = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
Chunks = Iterable[tuple[str, list[tuple[Any, ...]]]]


def export(run: Run, postgres: bool, chunk: int) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """(table, rows) of every copied table, chunk by chunk, in key order,
    through ``run`` (a read inside the export's snapshot)."""
    for table, (columns, key) in TRANSFER_TABLES.items():
        at = [columns.index(k) for k in key]
        nxt = transfer_select(table, False, postgres)
        rows = run(transfer_select(table, True, postgres), (chunk,))
        while rows:
            yield table, rows
            if len(rows) < chunk:
                break
            last = rows[-1]
            rows = run(nxt, (*(last[i] for i in at), chunk))


def counted(chunks: Chunks, counts: dict[str, int]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """``chunks``, counting the rows of each table into ``counts``."""
    for table, rows in chunks:
        counts[table] = counts.get(table, 0) + len(rows)
        yield table, rows


# -- SQLite ------------------------------------------------------------------------------


@contextmanager
def sqlite_snapshot(store: Store) -> Generator[Run]:
    """Reads of one snapshot of an SQLite file opened read-only. Refuses a
    file of an older schema (an engine of this version migrates it at open)
    and a crashed file whose -wal is gone (what it held would be missing)."""
    from ._lifecycle import preflight

    if store._version < SCHEMA_VERSION:
        raise errors.SchemaVersionError(
            f"{store.path!r} has schema version {store._version}; open it once with an engine of this "
            f"durably (it migrates the file to version {SCHEMA_VERSION}), then copy it",
            path=store.path,
            found=store._version,
            supported=SCHEMA_VERSION,
        )
    preflight(store.path)
    try:
        with store._read() as conn:
            conn.execute("BEGIN")  # one read transaction: one snapshot for every chunk
            try:
                yield lambda sql, params: conn.execute(sql, params).fetchall()
            finally:
                conn.execute("COMMIT")
    except apsw.Error as exc:
        raise map_error(exc, store.path) from exc


def sqlite_import(store: Store, chunks: Chunks) -> dict[str, int]:
    """Write ``chunks`` into a freshly created SQLite file: a transaction
    every ``BATCH`` rows, checkpointed as the engine does. Returns the rows
    written per table."""
    conn = store._writer
    if conn is None:
        raise errors.NotOpenError("the store is closed")
    counts = dict.fromkeys(TRANSFER_TABLES, 0)
    inserts = {table: transfer_insert(table) for table in TRANSFER_TABLES}
    with store._write_lock:
        try:
            pending = 0
            conn.execute("BEGIN IMMEDIATE")
            for table, rows in counted(chunks, counts):
                conn.executemany(inserts[table], rows)
                pending += len(rows)
                if pending >= BATCH:
                    conn.execute("COMMIT")
                    store._checkpoint(conn, only_if_due=True)
                    conn.execute("BEGIN IMMEDIATE")
                    pending = 0
            conn.execute("COMMIT")
        except apsw.Error as exc:
            store._abort(conn)
            raise map_error(exc, store.path) from exc
        except BaseException:
            store._abort(conn)
            raise
    return counts


def vet_new_file(dest: str) -> None:
    """Refuse an SQLite destination that exists, or whose folder does not,
    or next to which lies a -wal of another database (SQLite would apply
    it to the copy): nothing written."""
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise errors.UsageError(f"the folder of {dest!r} does not exist; create it first")
    for suffix in ("", "-wal", "-journal"):
        if os.path.lexists(dest + suffix):
            raise errors.DestinationNotEmptyError(
                f"{dest + suffix!r} exists; a copy goes to a new file (delete it, or choose another path)", path=dest
            )


def place(tmp: str, dest: str) -> None:
    """Move the finished copy ``tmp`` (closed cleanly: no -wal content) to
    ``dest`` without replacing anything there (link fails if it exists), and
    make the new name durable (the directory fsynced)."""
    wal = tmp + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        raise errors.StorageError(f"the copy at {tmp!r} did not close cleanly; it is left there", path=tmp)
    link_into_place(
        tmp, dest, lambda what: errors.DestinationNotEmptyError(f"{what}; the copy is left at {tmp!r}", path=dest)
    )
    remove(tmp)
    sync_folder(dest)


def remove(path: str) -> None:
    """Delete an unfinished copy (closed: nothing has it open)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.lexists(path + suffix):
            os.remove(path + suffix)
