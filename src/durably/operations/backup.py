"""Online backups: ``engine.backup(dest)`` and ``durably backup DB DEST``.

An SQLite database is copied with SQLite's online backup API while engines
keep writing to it (store/_backup.py says how the copy stays consistent,
never blocks the writer for long, never leaves a half file at ``dest``, and
opens as it is). A ``postgresql://`` source is written as an SQLite copy by
``durably.operations.copy`` (``durably copy``); ``engine.backup`` on a
PostgreSQL engine points at ``pg_dump`` instead.
"""

from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass

from .. import errors
from ..store import backup_file, check_dest, is_postgres, pages_of
from ..store.contract import StoreContract

__all__ = ["BackupReport", "backup", "backup_store"]


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What a backup wrote: the file ``path`` (absolute), its ``pages`` and
    ``bytes``, and the ``seconds`` it took."""

    path: str
    pages: int
    bytes: int
    seconds: float


def backup_store(store: StoreContract, dest: str) -> BackupReport:
    """Write a consistent copy of this engine's SQLite database to ``dest``,
    a new file, while workflows run; an engine opened on the copy resumes
    the pending workflows it holds. Returns a :class:`BackupReport`.

    ``dest`` must not exist and its folder must: otherwise
    BackupDestinationError, nothing written. The copy is made under a
    temporary name beside ``dest``, fsynced, then put in place: ``dest`` is
    never a half file. On PostgreSQL: UsageError (use ``pg_dump``, or
    ``durably backup URL DEST.db`` for an SQLite copy).

    Example::

        report = engine.backup("backups/app-2026-01-31.db")
        print(report.path, report.bytes, report.seconds)
    """
    began = time.perf_counter()
    pages, page_size = store.backup(dest)
    return BackupReport(os.path.abspath(dest), pages, pages * page_size, time.perf_counter() - began)


def backup(source: str, dest: str) -> BackupReport:
    """Back up the durably database ``source`` (an SQLite path, or a
    ``postgresql://`` URL written as an SQLite copy) to the new file
    ``dest``, with no engine of this process open on it; engines of other
    processes may be running on it. An SQLite file that crashed and lost its
    -wal is refused (WalMissingError), as an engine would."""
    began = time.perf_counter()
    if is_postgres(source):
        check_dest("", dest)
        try:
            copying = importlib.import_module("durably.operations.copy")
        except ModuleNotFoundError as exc:
            if exc.name != "durably.operations.copy":
                raise
            raise errors.UsageError(
                "backing up a PostgreSQL database to an SQLite file needs durably.operations.copy "
                "(`durably copy`), which this build of durably does not have; use pg_dump"
            ) from exc
        copying.copy(source, dest, allow_live=True)  # a snapshot: engines may run on the source
        pages, page_size = pages_of(dest)
    else:
        pages, page_size = backup_file(source, dest)
    return BackupReport(os.path.abspath(dest), pages, pages * page_size, time.perf_counter() - began)
