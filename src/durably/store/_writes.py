"""Named writes on SQLite (record kind ``WRITE``): the statements of
``_queries.WRITE_STATEMENTS``, rendered once; one dict the store reads."""

from __future__ import annotations

from typing import LiteralString

from ._queries import SQLITE

WRITES: dict[str, LiteralString] = SQLITE.writes
