"""Named reads of what an engine stored, for tests.

A test that wants to see the database (the steps a workflow recorded, the
messages still waiting, which executor owns a workflow) asks here instead of
querying durably's tables itself, so a change of schema changes this module
and not the tests. Each read works on SQLite and PostgreSQL alike, on the
committed data of an open engine, and returns named tuples (which compare
equal to plain tuples) of the values as stored: outputs, payloads and event
values codec-encoded.

Example::

    from durably import testing

    with durably.Engine(":memory:") as engine:
        handle = engine.start(checkout, order)
        handle.result()
        assert [s.name for s in testing.steps(engine, handle.workflow_id)] == ["charge", "ship"]
        assert testing.counts(engine)["messages"] == 0

Beside the reads: :func:`replay` (the Replayer: recorded histories against
the current code, nothing run or written), :func:`crash_check` (a user's
workflow killed at every step boundary in a child process) and a pytest
plugin (``durably.testing.plugin``, loaded by the ``pytest11`` entry point:
fixtures ``durably_engine``, ``durably_clock``, ``durably_crash`` ...).

Nothing in durably's runtime imports this package.
"""

from __future__ import annotations

from typing import Any

from ..engine import Engine
from ..store import _inspect
from ..store._inspect import (
    TABLES,
    Stats,
    StoredEvent,
    StoredExecutor,
    StoredMessage,
    StoredNotice,
    StoredQueueEntry,
    StoredSendKey,
    StoredStep,
    StoredWorkflow,
)
from ._crashcheck import CrashReport, KillPoint, crash_check
from ._helpers import assert_steps, finish, run_virtual
from ._replay import ReplayReport, ReplayResult, replay


def _store(engine: Engine) -> Any:
    # One of the two places durably.testing reaches into the engine (a
    # structural test counts them): everything below reads its store.
    return engine._store


def backend(engine: Engine) -> str:
    """``"sqlite"`` or ``"postgresql"``: the kind of database ``engine`` uses."""
    return _inspect.backend_of(_store(engine))


def schema(engine: Engine) -> str | None:
    """The PostgreSQL schema holding durably's tables (None on SQLite)."""
    name = getattr(_store(engine), "schema", None)
    return None if name is None else str(name)


def journal_running(engine: Engine) -> bool:
    """Whether the engine's writer is running: it is open and no write failed
    (a failed write stops the writer and every later durable call raises)."""
    journal = _journal(engine)
    return journal is not None and journal.running and journal.failure is None


def writer_failure(engine: Engine) -> BaseException | None:
    """The error that stopped the engine's writer, or None while it writes
    (or when it never failed)."""
    journal = _journal(engine)
    return None if journal is None else journal.failure


def _journal(engine: Engine) -> Any:
    return engine._journal  # the other place (see _store)


def workflow(engine: Engine, workflow_id: str) -> StoredWorkflow | None:
    """The stored row of a workflow (every column, as stored), or None."""
    rows = _inspect.workflow_rows(_store(engine), workflow_id)
    return rows[0] if rows else None


def workflows(engine: Engine) -> list[StoredWorkflow]:
    """Every workflow's stored row, in creation order."""
    return _inspect.workflow_rows(_store(engine))


def steps(engine: Engine, workflow_id: str) -> list[StoredStep]:
    """A workflow's recorded steps (its journal), in position order."""
    return _inspect.step_rows(_store(engine), workflow_id)


def messages(engine: Engine, dest: str | None = None) -> list[StoredMessage]:
    """Messages sent and not received yet (to ``dest`` only, when given), oldest first."""
    return _inspect.message_rows(_store(engine), dest)


def events(engine: Engine, workflow_id: str | None = None) -> list[StoredEvent]:
    """Events published (by ``workflow_id`` only, when given), by workflow and key."""
    return _inspect.event_rows(_store(engine), workflow_id)


def queue_entries(engine: Engine, queue: str | None = None) -> list[StoredQueueEntry]:
    """Queue entries (of ``queue`` only, when given), in enqueue order; an
    entry stays after its workflow ends (``done`` = 1)."""
    return _inspect.queue_rows(_store(engine), queue)


def executors(engine: Engine) -> list[StoredExecutor]:
    """Every executor registration (stopped ones included), oldest first."""
    return _inspect.executor_rows(_store(engine))


def notices(engine: Engine) -> list[StoredNotice]:
    """Cross-process wake-ups still stored, oldest first."""
    return _inspect.notice_rows(_store(engine))


def send_keys(engine: Engine) -> list[StoredSendKey]:
    """Idempotency keys of client sends (``engine.send(..., key=)``), by key."""
    return _inspect.send_key_rows(_store(engine))


def counts(engine: Engine) -> dict[str, int]:
    """Rows in each of durably's tables (``TABLES``), read at once."""
    return _inspect.table_counts(_store(engine))


def query(engine: Engine, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    """Read the application's own tables (those its transaction steps
    write) on committed data. Written SQLite style (``?`` placeholders), it
    runs on PostgreSQL too; SQL written for psycopg (``%s``) is run as it is.
    For durably's own tables, use the named reads above."""
    return _inspect.run_user_sql(_store(engine), sql, params)


__all__ = [
    "TABLES",
    "CrashReport",
    "KillPoint",
    "crash_check",
    "assert_steps",
    "finish",
    "run_virtual",
    "ReplayReport",
    "ReplayResult",
    "replay",
    "StoredEvent",
    "StoredExecutor",
    "StoredMessage",
    "StoredNotice",
    "StoredQueueEntry",
    "StoredSendKey",
    "Stats",
    "StoredStep",
    "StoredWorkflow",
    "backend",
    "counts",
    "journal_running",
    "events",
    "executors",
    "messages",
    "notices",
    "queue_entries",
    "query",
    "schema",
    "send_keys",
    "steps",
    "workflow",
    "workflows",
    "writer_failure",
]
