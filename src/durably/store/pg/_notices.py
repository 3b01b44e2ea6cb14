"""Cross-process notices on PostgreSQL, read so that none is passed over.

A notice's id comes from an identity column when it is inserted, but the
row becomes visible when its transaction commits, and two processes'
transactions may commit in the other order: a reader that has read notice
n + 1 may find n only later. Reading ``id > last`` alone then passes n over
for good (a receiver waits forever for a message that sits in the table:
found by the skewed-clock crash tier).

So each read also takes its snapshot's bounds (``pg_current_snapshot()``,
the statement's own). An id missing between the last one read and the
highest one returned is a hole, kept with that snapshot's xmax: the
transaction that took the id was in progress then, or rolled back, and it
has ended once a later snapshot's xmin reaches that xmax. Until then every
read looks the holes up again by id (primary-key lookups, a handful at most)
and returns those that have appeared; after it, a hole still missing was a
rollback (an identity value is never given back) and is forgotten. SQLite
needs none of this: its writers are serialised, so ids follow commits.
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final

from ... import _logs

if TYPE_CHECKING:
    from ._store import PgStore

log = _logs.get("durably.leases")

# One read: the notices after ``last`` and the holes' ids, then one row of the
# snapshot's bounds (id NULL). One statement: one snapshot for both parts.
SINCE: Final = (
    "SELECT * FROM (SELECT id, kind, workflow_id, detail FROM notices WHERE id > %s OR id = ANY(%s)"
    " ORDER BY id LIMIT 10000) n UNION ALL SELECT NULL, NULL, pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text"
    " FROM pg_current_snapshot() s"
)
# Holes kept at most (each one an id still in flight or rolled back; more
# than this means something else is wrong: the oldest are dropped, logged).
MAX_HOLES: Final = 10_000


def since(store: PgStore, last: int) -> list[tuple[Any, ...]]:
    """(id, kind, workflow_id, detail) committed since the read that
    returned ``last``: the notices after it, and those that filled a hole
    below it, in id order."""
    holes = store.notice_holes
    rows = store.query(SINCE, (last, list(holes)))
    xmin = xmax = 0
    found: list[tuple[Any, ...]] = []
    for row in rows:
        if row[0] is None:
            xmin, xmax = int(row[2]), int(row[3])
        else:
            found.append(row)
    found.sort(key=itemgetter(0))
    out: list[tuple[Any, ...]] = []
    fresh = 0
    for row in found:
        nid = row[0]
        if nid > last:
            fresh += 1
            out.append(row)
        elif holes.pop(nid, None) is not None:
            out.append(row)  # committed after a later notice was read
    if fresh and found[-1][0] - last != fresh:
        present = {row[0] for row in found}
        for nid in range(last + 1, found[-1][0]):
            if nid not in present:
                holes[nid] = xmax
    for nid, bound in list(holes.items()):
        if bound <= xmin:  # every transaction that could hold it has ended: a rollback's
            del holes[nid]
    if len(holes) > MAX_HOLES:
        dropped = sorted(holes)[: len(holes) - MAX_HOLES]
        for nid in dropped:
            del holes[nid]
        log.warning(
            "durably: %d notice ids still uncommitted after later ones; the oldest %d are no longer looked for",
            len(holes) + len(dropped),
            len(dropped),
            extra=_logs.fields("leases.notice_holes"),
        )
    return out


# At open: the highest id, the ids of the last LOOK_BACK below it, and the snapshot's bounds.
START: Final = (
    "SELECT coalesce(max(id), 0), (SELECT coalesce(array_agg(id), '{}') FROM notices WHERE id > max(n.id) - %s),"
    " (SELECT pg_snapshot_xmax(pg_current_snapshot())::text) FROM notices n"
)
LOOK_BACK: Final = 1_000


def start(store: PgStore) -> int:
    """Where an open starts reading: the highest id, with the holes below
    it (notices in flight now) to look for, as every read does."""
    top, ids, xmax = store.query(START, (LOOK_BACK,))[0]
    present = set(ids)
    store.notice_holes = {nid: int(xmax) for nid in range(max(1, top - LOOK_BACK + 1), top) if nid not in present}
    return int(top)
