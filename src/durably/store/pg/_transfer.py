"""Moving a whole database between backends: PostgreSQL's half (what both
share, and why, is in store/_transfer.py).

Export: one pooled connection in a REPEATABLE READ READ ONLY transaction
(one snapshot for every chunk). Import: one transaction on the writer
connection; each chunk goes in with COPY (identity columns take the copied
values, as ``OVERRIDING SYSTEM VALUE`` would), then every identity sequence
is set past the copied maximum, so the next workflow, message or queue
entry numbers on. The destination's emptiness is checked again inside that
transaction. Both transactions lift the session's idle-in-transaction
timeout (the store sets one for its batches): between two chunks the
other side is working, not a stuck writer.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql as pgsql

from ... import errors
from .._queries import HOLDS_DATA, TRANSFER_TABLES, literal_sql, render
from .._transfer import Chunks, Run, counted
from ._errors import map_error

if TYPE_CHECKING:
    from ._store import PgStore

# Identity columns of the copied tables (their sequences move past the copied rows).
IDENTITIES = (("workflows", "seq"), ("messages", "id"), ("queue_entries", "seq"))
_NO_IDLE_LIMIT = "SET LOCAL idle_in_transaction_session_timeout = 0"


@contextmanager
def pg_snapshot(store: PgStore) -> Generator[Run]:
    """Reads of one snapshot of the schema."""
    pool = store._pool
    if pool is None:
        raise errors.NotOpenError("the store is closed")
    try:
        with pool.connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                conn.execute(_NO_IDLE_LIMIT)
                yield lambda sql, params: [tuple(r) for r in conn.execute(literal_sql(sql), params).fetchall()]
            finally:
                conn.execute("ROLLBACK")
    except psycopg.Error as exc:
        raise map_error(exc, store.path) from exc


def pg_import(store: PgStore, chunks: Chunks) -> dict[str, int]:
    """Write ``chunks`` into the (empty) schema in one transaction; returns
    the rows written per table."""
    conn = store._writer
    if conn is None:
        raise errors.NotOpenError("the store is closed")
    counts = dict.fromkeys(TRANSFER_TABLES, 0)
    copies = {
        table: pgsql.SQL("COPY {} ({}) FROM STDIN").format(
            pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
        )
        for table, (columns, _) in TRANSFER_TABLES.items()
    }
    with store._write_lock:
        try:
            with conn.transaction():
                conn.execute(_NO_IDLE_LIMIT)
                if conn.execute(render(HOLDS_DATA, True)).fetchone() is not None:
                    raise errors.DestinationNotEmptyError(
                        f"schema {store.schema!r} in {store.path} holds durably data (written while the copy "
                        "started); nothing was copied",
                        path=store.path,
                    )
                with conn.cursor() as cur:
                    for table, rows in counted(chunks, counts):
                        with cur.copy(copies[table]) as copy:
                            for row in rows:
                                copy.write_row(row)
                    for table, column in IDENTITIES:
                        cur.execute(
                            pgsql.SQL(
                                "SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max({}), 0) + 1, false) FROM {}"
                            ).format(pgsql.Identifier(column), pgsql.Identifier(table)),
                            (f'"{store.schema}".{table}', column),
                        )
        except psycopg.Error as exc:
            raise map_error(exc, store.path) from exc
    return counts
