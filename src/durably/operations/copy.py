"""Copying a whole durably database between backends (``durably copy SRC DEST``):
SQLite to PostgreSQL, PostgreSQL to SQLite (and SQLite to SQLite, PostgreSQL
to PostgreSQL).

What is carried: every workflow whatever its status, with its inputs,
output, error, parent, deadline, recovery count, owner, fencing epoch and
application version; steps (children's starts, sleeps, receives, patches,
recorded values: every journal row); messages waiting; events; queue
entries (waiting, started, done: rate limits and dedup keys keep working);
schedules and their progress (no slot fires twice); idempotency keys of
sends; ids and sequence numbers (creation, message and queue order); the
codec (the destination is created for the source's). What is not: live
state, which belongs to the processes of the source: executors and their
leases, notices (wake-ups), the crash mark and the takeovers count. A
PENDING workflow keeps the owner it had; at the destination that owner is
gone, so the first engine there takes it over, exactly as a restart at the
source would (it counts a recovery attempt only if the owner had crashed).

So an engine opened on the destination (same application version, same
workflow code) finishes what was in flight: each workflow replays its
recorded steps from the journal and runs only what was never recorded.

Refused, with nothing written (``UsageError`` subclasses):

* a destination that exists (an SQLite path: a copy makes a new file) or
  that holds durably data (a PostgreSQL schema; an empty durably schema is
  accepted): ``DestinationNotEmptyError``;
* a source, or a PostgreSQL destination, open in a running engine
  (``DatabaseInUseError``): the workflows it runs would go on at the source
  and run again at the destination. Stop it first; to copy a live SQLite
  file, take a consistent backup first (``durably backup app.db snap.db``)
  and copy that;
* a path that is neither a file name nor a ``postgresql://`` URL, a
  missing source (``CantOpenError``), an unreachable server
  (``DatabaseUnavailableError``), an SQLite file of an older schema
  (``SchemaVersionError``: open it once with this durably first).

A half copy is never taken for a database: an SQLite copy is built under a
temporary name (``DEST.copy-PID``) and renamed into place when complete; a
PostgreSQL copy is one transaction (a failure leaves the schema empty,
which a second run accepts). The source is read from one snapshot, in
chunks, keyset on primary keys (store/_transfer.py).

PostgreSQL schemas: ``?schema=NAME`` in the URL, or ``source_schema=`` /
``dest_schema=`` (the same rules as ``Engine(url, schema=...)``; default
``durably``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .. import errors
from ..store import StoreContract, is_postgres, make_store, place_copy, remove_copy, vet_new_file


@dataclass(frozen=True)
class CopyReport:
    """What ``durably.operations.copy.copy`` did.

    Attributes:
        source: the source (a PostgreSQL URL without its password).
        dest: where the copy went (likewise).
        rows: rows copied per table (workflows, steps, messages, events,
            queue_entries, schedules, send_keys).
        seconds: how long the copy took.
    """

    source: str
    dest: str
    rows: dict[str, int] = field(default_factory=dict[str, int])
    seconds: float = 0.0

    @property
    def workflows(self) -> int:
        """Workflows copied."""
        return self.rows.get("workflows", 0)


def copy(
    source: str,
    dest: str,
    *,
    source_schema: str | None = None,
    dest_schema: str | None = None,
    allow_live: bool = False,
) -> CopyReport:
    """Copy the durably database ``source`` to ``dest``: each an SQLite file
    path or a ``postgresql://`` URL (module docstring: what is carried, what
    is refused). ``allow_live``: copy a source that running engines use, as
    one snapshot (``durably backup URL DEST.db``): a backup, to restore in
    place of the source, never to run beside it (its pending workflows would
    run at both places). Example::

        from durably.operations.copy import copy

        report = copy("app.db", "postgresql://app@db.internal/app?schema=orders")
        print(report.workflows, "workflows in", round(report.seconds, 1), "s")
    """
    started = time.monotonic()
    _vet(source, "source")
    _vet(dest, "destination")
    src = make_store(source, schema=source_schema)
    if is_postgres(dest):
        make_store(dest, schema=dest_schema)  # the URL and schema checked before anything is read
    elif dest_schema is not None:
        raise errors.UsageError("dest_schema= applies to a PostgreSQL destination, not to an SQLite file")
    src.open_readonly()
    try:
        if not allow_live:
            _refuse_live(src, "source")
        codec = src.stored_codec()
        if is_postgres(dest):
            rows, where = _into_postgres(src, dest, dest_schema, codec)
        else:
            rows, where = _into_file(src, dest, codec)
    finally:
        src.close(clean=False)
    return CopyReport(_where(src), where, rows, time.monotonic() - started)


def _vet(path: object, what: str) -> None:
    if not isinstance(path, str) or not path:
        raise errors.UsageError(f"the {what} must be an SQLite file path or a postgresql:// URL, not {path!r}")
    if "://" in path and not is_postgres(path):
        scheme = path.split("://", 1)[0]
        raise errors.UsageError(f"the {what} {scheme}://... is neither an SQLite file path nor a postgresql:// URL")
    if path == ":memory:" or path.startswith("file::memory:"):
        raise errors.UsageError(f"the {what} cannot be an in-memory database")


def _where(store: StoreContract) -> str:
    schema = getattr(store, "schema", None)
    return store.path if schema is None else f"{store.path} (schema {schema})"


def _refuse_live(store: StoreContract, what: str) -> None:
    """Refuse a database a running engine has open (its executor's lease is
    live; on this host, its process is alive)."""
    if not store.others_live(""):
        return
    live = ", ".join(f"pid {e.pid} on {e.host}" for e in store.executors()[:3])
    hint = (
        "stop its engines first (close them), or copy a consistent backup taken while it runs: "
        f"`durably backup {store.path} snapshot.db`, then `durably copy snapshot.db ...`"
        if what == "source" and not is_postgres(store.path)
        else "stop its engines first (close them), then copy"
    )
    raise errors.DatabaseInUseError(
        f"the {what} {_where(store)} is open in a running engine ({live or 'a live lease'}); {hint}. Nothing was copied",
        path=store.path,
    )


def _into_file(src: StoreContract, dest: str, codec: str | None) -> tuple[dict[str, int], str]:
    """Build the copy at ``DEST.copy-PID`` (created as an engine creates a
    file), then link it into place."""
    vet_new_file(dest)
    tmp = f"{dest}.copy-{os.getpid()}"
    remove_copy(tmp)  # a leftover of this process's own failed copy
    dst = make_store(tmp, "normal")  # durable once placed: the closing checkpoint syncs the file
    try:
        dst.open(codec)
        rows = dst.import_rows(src.export_rows())
    except BaseException:
        dst.close(clean=False)
        remove_copy(tmp)
        raise
    dst.close()
    place_copy(tmp, dest)
    return rows, dest


def _into_postgres(src: StoreContract, dest: str, schema: str | None, codec: str | None) -> tuple[dict[str, int], str]:
    """Copy into a schema that is absent or holds no durably data, in one transaction."""
    probe = make_store(dest, schema=schema)
    try:
        probe.open_readonly()
    except errors.CantOpenError:
        pass  # no durably schema there yet: open() creates it
    else:
        try:
            if probe.holds_data():
                raise errors.DestinationNotEmptyError(
                    f"the destination {_where(probe)} already holds durably data; copy into another schema "
                    "(?schema=NAME) or drop this one first. Nothing was copied",
                    path=probe.path,
                )
            _refuse_live(probe, "destination")
        finally:
            probe.close(clean=False)
    dst = make_store(dest, schema=schema)
    dst.open(codec)
    try:
        rows = dst.import_rows(src.export_rows())
    finally:
        dst.close()
    return rows, _where(dst)
