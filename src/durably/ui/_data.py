"""What the web view reads, as JSON documents: the same field names as the
command line's ``--json`` (``cli/__init__.py``), read through a read-only
store (nothing written, migrated or recovered).

An SQLite file is opened afresh for each request and closed after it: a
file no engine has open is read immutable (no -wal or -shm created), and an
engine that opens it later is seen at the next request; between requests
the view holds no lock or connection on it. A PostgreSQL store is opened
once (its read pool) and shared by the requests, one at a time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast

from .._status import STATUSES, TERMINAL
from ..cli import _common as C
from ..handle import StepInfo
from ..schedules import schedule_info
from ..store import is_postgres, make_store
from ..store._inspect import status_counts
from ..store.contract import WorkflowView

if TYPE_CHECKING:
    from ..store.contract import StoreContract

LIST_LIMIT = 50  # rows a page of the workflows list shows unless asked
MAX_LIMIT = 1000  # the most one request lists
TREE_NODES = 500  # descendants the workflow page's tree shows at most
TREE_DEPTH = 8


class Source:
    """The database the view reads: ``with source.store() as store``."""

    def __init__(self, db: str) -> None:
        self.db = C.with_timeout(db)
        self.postgres = is_postgres(db)
        self._lock = threading.Lock()
        self._shared: StoreContract | None = None

    def _open(self) -> StoreContract:
        store = make_store(self.db)
        store.open_readonly()
        return store

    @contextlib.contextmanager
    def store(self) -> Generator[StoreContract]:
        with self._lock:
            if not self.postgres:
                store = self._open()
                try:
                    yield store
                finally:
                    store.close(clean=False)
                return
            if self._shared is None:
                self._shared = self._open()
            yield self._shared

    def check(self) -> None:
        """Open the database once: a file that is not a durably database, a
        URL that does not answer, raise their DurablyError before serving."""
        with self.store():
            pass

    def close(self) -> None:
        with self._lock:
            if self._shared is not None:
                self._shared.close(clean=False)
                self._shared = None


def _view(store: StoreContract, workflow_id: str) -> WorkflowView | None:
    row = store.get_workflow(workflow_id, user_view=True)
    return None if row is None else WorkflowView._make(row)


def workflows(store: StoreContract, f: dict[str, Any]) -> dict[str, Any]:
    """The list page's document: a page of workflows (filters of
    ``list_workflows``), the counts by status, and the store's clock."""
    limit = min(int(f.get("limit") or LIST_LIMIT), MAX_LIMIT)
    rows = store.list_workflows(
        f.get("status"),
        f.get("name"),
        limit + 1,  # one more: whether there is a next page
        id_prefix=f.get("id_prefix"),
        start_time=f.get("since"),
        end_time=f.get("until"),
        queue=f.get("queue"),
        parent_id=f.get("parent"),
        offset=int(f.get("offset") or 0),
        newest_first=not f.get("oldest_first"),
    )
    return {
        "workflows": [C.workflow_doc(r) for r in rows[:limit]],
        "more": len(rows) > limit,
        "counts": status_counts(store),
        "statuses": list(STATUSES),
        "at": time.time(),
    }


def _timeline(steps: list[StepInfo]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in steps:
        doc = C.step_doc(s)
        doc["duration"] = None if s.started_at is None else max(0.0, s.recorded_at - s.started_at)
        doc["retries"] = None  # not recorded per step (a retried step keeps its last outcome)
        out.append(doc)
    return out


def _tree(store: StoreContract, workflow_id: str) -> list[dict[str, Any]]:
    """The workflow's children, each with its own children (breadth first,
    at most TREE_NODES nodes and TREE_DEPTH levels)."""
    budget = TREE_NODES
    root: list[dict[str, Any]] = []
    level: list[tuple[str, list[dict[str, Any]]]] = [(workflow_id, root)]
    for _depth in range(TREE_DEPTH):
        following: list[tuple[str, list[dict[str, Any]]]] = []
        for parent, into in level:
            if budget <= 0:
                return root
            for row in store.list_workflows(parent_id=parent, limit=budget, newest_first=False):
                node: dict[str, Any] = {
                    k: v for k, v in C.workflow_doc(row).items() if k not in ("input", "output", "error")
                }
                children: list[dict[str, Any]] = []
                node["children"] = children
                into.append(node)
                following.append((row.workflow_id, children))
                budget -= 1
        if not following:
            break
        level = following
    return root


def trace_id_of(row: Any) -> str | None:
    """The workflow's trace id, if the store records one (OpenTelemetry:
    a ``trace_id`` or ``trace_context`` field); None until then."""
    for field in ("trace_id", "trace_context"):
        value = getattr(row, field, None)
        if value:
            return str(value)
    return None


def workflow(store: StoreContract, workflow_id: str) -> dict[str, Any] | None:
    """The workflow page's document (None: no such workflow)."""
    info = _view(store, workflow_id)
    if info is None:
        return None
    steps = [StepInfo.from_row(r) for r in store.step_rows(workflow_id)]
    doc = C.workflow_doc(info)
    doc["error_detail"] = _error_detail(info.error)
    doc["trace_id"] = trace_id_of(info)
    doc["terminal"] = info.status in TERMINAL
    return {
        "workflow": doc,
        "steps": _timeline(steps),
        "children": _tree(store, workflow_id),
        "events": {key: C.stored_value(value) for key, value in store.read("all_events", workflow_id)},
        "messages": [
            {"id": m.id, "topic": m.topic, "payload": C.stored_value(m.payload), "created_at": m.created_at}
            for m in store.messages_for(workflow_id)
        ],
        "at": time.time(),
    }


def _error_detail(raw: Any) -> dict[str, Any] | None:
    """The stored exception in full (type, message, args, its attributes,
    and a traceback's text if one was stored)."""
    if raw is None:
        return None
    doc = C.stored_value(raw)
    if not isinstance(doc, dict):
        return {"type": None, "message": str(doc), "traceback": None}
    fields = cast("dict[str, Any]", doc)
    detail = {k: fields.get(k) for k in ("type", "message", "args", "fields", "state")}
    detail["traceback"] = fields.get("traceback")
    return detail


def queues(store: StoreContract) -> dict[str, Any]:
    return {
        "queues": [
            {
                "queue": r.queue,
                "enqueued": r.enqueued,
                "running": r.running,
                "concurrency": r.concurrency,
                "rate_limit": None if r.rate_starts is None else {"starts": r.rate_starts, "seconds": r.rate_period},
                "declared_at": r.declared_at,
            }
            for r in store.queue_stats()
        ]
    }


def schedules(store: StoreContract) -> dict[str, Any]:
    now = time.time()
    return {"schedules": [C.schedule_doc(schedule_info(row, now)) for row in store.schedules()]}
