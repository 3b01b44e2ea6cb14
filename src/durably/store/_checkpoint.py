"""Checkpoints durably makes itself, so the crash mark tells a WAL that was
folded into the main file from one that was lost.

The crash mark (``engine_state.open``) has two "open" values. The states an
engine commits into the WAL say ``PAST`` (2): past the last checkpoint.
Right before it copies the WAL into the main file, durably commits
``CHECKPOINTED`` (1), and it copies only while it holds the write lock with
that value the latest: a copy durably makes ends on a state saying 1.
After a complete copy it commits 2.

So a main file found without WAL content next to it says 2 only if a
checkpoint durably did not make brought it up to date after the engines
stopped: a connection of another program closing last (the ``sqlite3``
shell, Python's ``sqlite3``), which copies the *whole* WAL and only then
deletes it. Nothing is missing; the file opens. It says 1 when the WAL was
lost (deleted, or the file copied without it; an empty -wal is a reader's,
made after): transactions may be missing; refused (WalMissingError).

SQLite's automatic checkpoint is off on engine connections (it would copy
states saying 2 into the main file); :class:`Checkpointer` replaces it,
after a batch. Nothing is written per commit: a checkpoint costs two more
small commits, once per ``WAL_AUTOCHECKPOINT`` pages of WAL.

Limits. A crash between the commit of 1 and that of 2 leaves 1 as the
last state: folded in after that, the file is refused though nothing is
missing. A copy is complete only if no other connection holds a read
transaction that began before it (PASSIVE never waits); an incomplete one
may end on an earlier state saying 2, until the next complete one
(retried after later batches); so may a checkpoint another program makes
while engines run (``PRAGMA wal_checkpoint``, Litestream). A WAL lost in
such a moment can go unnoticed.

Checkpoints left to another program (``Engine(checkpoints="external")``,
for Litestream). Litestream replicates the WAL: it keeps a read transaction
open at all times so that no other connection's checkpoint restarts the WAL
past frames it has not copied yet, and it checkpoints itself (PASSIVE at
1,000 pages or each minute, TRUNCATE at ~500 MB), writing a row of
``_litestream_seq`` after each. Its guidance is that the application leave
checkpoints to it (``wal_autocheckpoint=0``). Run with durably's own
checkpoints, a replicated file goes wrong twice: durably's PASSIVE copies
stop at Litestream's snapshot, so the mark stays CHECKPOINTED for long
stretches (a copy is retried every look, holding the write lock each time),
and ``litestream restore`` rebuilds the *latest* replicated state, which
then says CHECKPOINTED with no -wal next to it: refused as a lost WAL,
though nothing is missing. A restored file and a main file whose WAL was
lost cannot be told apart by their contents once a third party
checkpoints: both are one committed state, at a moment durably does not
choose. So with ``checkpoints="external"`` the store never copies the WAL,
commits EXTERNAL (3) as its open mark, and closes with a PASSIVE copy (a
TRUNCATE would wait for Litestream's reader until busy_timeout). A main
file found marked EXTERNAL with no -wal opens as a restored copy, with a
warning and ``PRAGMA quick_check``; a truncated file is still refused.
The protection given up is scoped to that choice: a file an engine opens
with the default ``checkpoints="engine"`` never carries EXTERNAL, so its
lost WAL is refused exactly as before. Under Litestream the copy of record
for a lost -wal is the replica (which holds everything synced, a newer
state than the main file): the warning says so.
"""

from __future__ import annotations

import threading
import time

import apsw

from .. import errors
from ._apsw import Connection
from ._connection import WAL_AUTOCHECKPOINT

CLOSED, CHECKPOINTED, PAST = 0, 1, 2
# The mark of an engine opened with checkpoints="external": another program
# (Litestream) checkpoints the file (the module docstring says what a main
# file found with this mark and no -wal is taken to be).
EXTERNAL = 3
# Engine(checkpoints=...): who copies the WAL into the main file.
MODES = ("engine", "external")

# WAL frames that make a checkpoint due (read at each look: the crash tests
# lower it to put many checkpoints under their power cuts).
FRAMES = WAL_AUTOCHECKPOINT

# Seconds between looks at the WAL's size (a NOOP checkpoint): a look is a
# call that releases the GIL, which the writer must win back from busy
# workflow threads; once per batch would cost more than the look itself.
LOOK_EVERY = 0.01

_MARK = "SELECT value FROM engine_state WHERE key = 'open'"
SET_MARK = "UPDATE engine_state SET value = ? WHERE key = 'open'"
_MARK_CHECKPOINTED = (
    f"UPDATE engine_state SET value = {CHECKPOINTED} WHERE key = 'open' AND value IS NOT {CHECKPOINTED}"
)


def mark(conn: Connection) -> object:
    """The crash mark as ``conn`` sees it (the latest committed value)."""
    return conn.execute(_MARK).get


class Checkpointer:
    """When and how the store copies its WAL into the main file (the
    writer's thread, between batches, holding the store's write lock)."""

    __slots__ = ("pending", "_next_look", "external")

    def __init__(self, mode: str = "engine") -> None:
        if mode not in MODES:
            raise errors.UsageError(f"checkpoints must be one of {MODES}, not {mode!r}")
        self.pending = False  # a copy was left incomplete: try again at the next look
        self._next_look = 0.0
        self.external = mode == "external"  # another program copies, never the store

    @property
    def open_mark(self) -> int:
        """The mark an opening engine commits."""
        return EXTERNAL if self.external else CHECKPOINTED

    def due(self, writer: Connection) -> bool:
        """Whether a checkpoint is due now (cheap: at most one look per LOOK_EVERY)."""
        now = time.monotonic()
        if self.external or now < self._next_look:
            return False
        self._next_look = now + LOOK_EVERY
        if self.pending:
            return True
        frames, _ = writer.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_NOOP)
        return frames >= FRAMES

    def run(self, writer: Connection, reader: Connection, read_lock: threading.Lock) -> bool:
        """Copy the WAL into the main file ending on a state marked
        CHECKPOINTED, then mark the WAL's states PAST again. True when the
        copy was complete.

        ``reader`` makes the copy while ``writer`` holds the write lock (a
        connection cannot checkpoint inside its own transaction); holding
        ``read_lock`` keeps this process's own reads from holding it back.
        Storage errors propagate (the caller fails the store)."""
        if self.external:
            return True  # the replicator's to make
        self.pending = True  # until a complete copy says otherwise
        writer.execute(_MARK_CHECKPOINTED)  # its own transaction, committed before the copy (none if set)
        complete = False
        writer.execute("BEGIN IMMEDIATE")
        try:
            # Not CHECKPOINTED: another process set PAST after its own copy
            # (or CLOSED, not expected while open): mark again next time.
            if mark(writer) == CHECKPOINTED:
                with read_lock:
                    try:
                        frames, copied = reader.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                    except apsw.BusyError:  # another connection is checkpointing: later
                        frames, copied = 1, 0
                complete = copied == frames
        finally:
            if writer.in_transaction:
                writer.execute("ROLLBACK")
        if complete:
            # In a transaction of its own, which finds the WAL all copied
            # and starts it over (one begun before the copy would append).
            writer.execute(SET_MARK, (PAST,))
        self.pending = not complete
        return complete
