"""The web view's actions (``--allow-actions``): cancel, resume and fork,
each through a client-mode Engine opened for it, as the command line's
``cancel``, ``resume`` and ``fork`` (journaled, fenced against the owning
executor, waking it), with the same refusals (``C.Refused``: code 2 bad
input, 1 the operation could not be done)."""

from __future__ import annotations

from typing import Any, cast

from .._status import TERMINAL
from ..cli import _common as C
from ..errors import DurablyError, WorkflowNotFoundError

ACTIONS = ("cancel", "resume", "fork")


def _status(engine: Any, workflow_id: str) -> tuple[str, str | None]:
    try:
        info = engine.handle(workflow_id).info()
    except WorkflowNotFoundError:
        C.refuse(f"no workflow with id {C.shown(workflow_id)!r}")
    return str(info.status.value), info.parked


def run(db: str, action: str, body: Any) -> dict[str, Any]:
    """Do ``action`` on ``body["workflow_id"]``; the workflow's status after it."""
    if action not in ACTIONS:
        C.refuse(f"no action {C.shown(action)!r} (one of {', '.join(ACTIONS)})")
    fields: dict[str, Any] = cast("dict[str, Any]", body) if isinstance(body, dict) else {}
    workflow_id = fields.get("workflow_id")
    if not isinstance(workflow_id, str) or not workflow_id:
        C.refuse("workflow_id: required (a string)")
    from_step = fields.get("from_step", 0)
    if action == "fork" and (not isinstance(from_step, int) or isinstance(from_step, bool) or from_step < 0):
        C.refuse("from_step: a count of steps (0 or more)")
    with C.client(db) as engine:
        status, parked = _status(engine, workflow_id)
        try:
            if action == "cancel":
                if status in TERMINAL:
                    C.refuse(f"workflow {C.shown(workflow_id)!r} already ended {status}: nothing to cancel", C.FAILED)
                engine.cancel(workflow_id)
                done = workflow_id
            elif action == "resume":
                if status == "SUCCESS" or (status not in TERMINAL and parked is None):
                    C.refuse(f"workflow {C.shown(workflow_id)!r} is {status}: nothing to resume", C.FAILED)
                engine.resume(workflow_id)
                done = workflow_id
            else:
                done = engine.fork(workflow_id, from_step).workflow_id
        except DurablyError as exc:
            C.refuse(C.describe(exc), C.code_of(exc))
        status, _ = _status(engine, done)
    return {"action": action, "workflow_id": done, "from": workflow_id, "status": status}
