"""Named writes on SQLite (record kind ``WRITE``): the statements of
``_queries.WRITE_STATEMENTS``, rendered once; one dict the store reads.
And the step rows' INSERTs, the hot path, written by hand for SQLite."""

from __future__ import annotations

from typing import LiteralString

from ._queries import SQLITE

WRITES: dict[str, LiteralString] = SQLITE.writes

# A batch of one step record (a lone sequential workflow): the whole
# transaction in one call, SQLite's statement cache keeps it prepared.
# Written only if no workflow changed owner since this process last looked
# (``engine_state.takeovers``, see _fence); else the general path fences.
LONE_STEP = (
    "BEGIN IMMEDIATE; INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at)"
    " SELECT ?, ?, ?, ?, ?, ?, unixepoch('subsec') + (? - ?)"
    " WHERE (SELECT value FROM engine_state WHERE key = 'takeovers') IS ?; COMMIT"
)
TAKEOVERS = "SELECT value FROM engine_state WHERE key = 'takeovers'"
# Runs of step records go in multi-row INSERTs of power-of-two sizes: apsw
# releases the GIL around every SQLite call and the writer must win it back
# from busy workflow threads each time (up to the 5 ms switch interval), so a
# batch of 512 rows costs 1 statement instead of 512 round trips.
CHUNK_MAX = 256
# (?1 is ``at``: bound first, once per statement.)
_STEP_VALUES = "(?, ?, ?, ?, ?, ?, ?)"
MULTI_STEP = {
    n: "INSERT INTO steps (workflow_id, position, name, output, error, ident, started_at)"
    " SELECT column1, column2, column3, column4, column5, column6, unixepoch('subsec') + (column7 - ?1)"
    " FROM (VALUES " + ", ".join([_STEP_VALUES] * n) + ")"
    for n in (2**k for k in range(1, 9))
}
