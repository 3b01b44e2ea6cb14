"""Wake-ups on PostgreSQL: one connection LISTENs on ``durably:{schema}``; the schema's triggers
notify it at the commit of a notice or of a workflow's end (``listen=False``: polling)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from psycopg import sql as pgsql

from ... import errors
from . import _connection
from ._errors import CONNECTION_ERRORS

if TYPE_CHECKING:
    from ._store import PgStore


def open_listener(store: PgStore) -> None:
    if not store.listen:
        return
    conn = _connection.connect(store, autocommit=True)
    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(store.channel)))
    store._listener = conn


def relisten(store: PgStore) -> None:
    """The listener lost its connection: listen again, and count it as a
    change (what was notified meanwhile is read from the notices)."""
    try:
        if store._listener is not None:
            store._listener.close()
    except Exception:
        pass
    store._listener = None
    store._notified += 1
    if store._closing:
        return
    try:
        open_listener(store)
    except errors.DurablyError:
        store._listener = None
        store._polls = store._notified  # fall back to polling until it comes back
        store._notified += 1


def data_version(store: PgStore) -> int:
    """Moves when a notification arrived (LISTEN), or at every call
    without a listener (the polling fallback)."""
    listener = store._listener
    if listener is None:
        store._polls += 1
        return store._polls
    with store._listen_lock:
        try:
            for _ in listener.notifies(timeout=0.0, stop_after=1000):
                store._notified += 1
        except CONNECTION_ERRORS:
            relisten(store)
    return store._notified


def wait_change(store: PgStore, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for a notification (the watcher's
    pause: a wake-up from another process is seen when it arrives, not
    at the next poll). Without a listener: a plain sleep."""
    listener = store._listener
    if listener is None or store._closing:
        time.sleep(timeout)
        return
    with store._listen_lock:
        try:
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                store._notified += 1
        except CONNECTION_ERRORS:
            relisten(store)
