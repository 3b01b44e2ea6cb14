"""Changing workflows: ``cancel``, ``resume`` and ``fork``. Each goes through
a client-mode Engine: the change is journaled like any client's, fenced
against the executor that owns the workflow, and wakes it (a cancel stops
it at its next durable point; a resumed or forked workflow is claimed and
run by a live executor that registered its function)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import click

from .._status import TERMINAL
from ..errors import DurablyError, WorkflowNotFoundError
from . import _common as C

if TYPE_CHECKING:
    from .. import Engine


def _status_of(engine: Engine, workflow_id: str, db: str) -> tuple[str, str | None]:
    """(status, parked) of the workflow; exit 2 if there is none."""
    try:
        info = engine.handle(workflow_id).info()
    except WorkflowNotFoundError:
        C.no_workflow(workflow_id, db)
    return str(info.status.value), info.parked


def _done(as_json: bool, doc: Mapping[str, object], *line: object) -> int:
    if as_json:
        C.emit_json(doc)
    else:
        click.echo("\t".join(C.shown(part) for part in line))
    return 0


@click.command()
@C.DB_ARGUMENT
@click.argument("workflow_id", metavar="ID")
@click.option("--no-children", is_flag=True, help="leave its pending children running")
@C.json_option
def cancel(db: str, workflow_id: str, no_children: bool, as_json: bool) -> int:
    """Cancel a pending (or enqueued) workflow and, unless --no-children, its pending descendants."""
    with C.client(db) as engine:
        status, _ = _status_of(engine, workflow_id, db)
        if status in TERMINAL:
            C.refuse(f"workflow {C.shown(workflow_id)!r} already ended {status}: nothing to cancel", C.FAILED)
        try:
            engine.cancel(workflow_id, children=not no_children)
        except DurablyError as exc:
            C.refuse(C.describe(exc), C.code_of(exc))
        status, _ = _status_of(engine, workflow_id, db)
    doc = {"workflow_id": workflow_id, "status": status, "children": not no_children}
    return _done(as_json, doc, workflow_id, status)


@click.command()
@C.DB_ARGUMENT
@click.argument("workflow_id", metavar="ID")
@C.json_option
def resume(db: str, workflow_id: str, as_json: bool) -> int:
    """Run a CANCELLED, ERROR, MAX_RECOVERY_ATTEMPTS_EXCEEDED or parked workflow
    again from its last recorded step (a live executor that registered it runs it)."""
    with C.client(db) as engine:
        status, parked = _status_of(engine, workflow_id, db)
        if status == "SUCCESS":
            C.refuse(f"workflow {C.shown(workflow_id)!r} succeeded: nothing to resume", C.FAILED)
        if status in ("PENDING", "ENQUEUED") and parked is None:
            C.refuse(
                f"workflow {C.shown(workflow_id)!r} is {status} and not parked: it runs (or waits for an "
                "executor); resume is for workflows that ended or are parked",
                C.FAILED,
            )
        try:
            engine.resume(workflow_id)
        except DurablyError as exc:
            C.refuse(C.describe(exc), C.code_of(exc))
        status, _ = _status_of(engine, workflow_id, db)
    return _done(as_json, {"workflow_id": workflow_id, "status": status}, workflow_id, status)


@click.command()
@C.DB_ARGUMENT
@click.argument("workflow_id", metavar="ID")
@click.option(
    "--from-step",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="keep this many recorded steps (they replay); the rest run again",
)
@click.option("--new-id", help="the new workflow's id (default: a new UUIDv7)")
@C.json_option
def fork(db: str, workflow_id: str, from_step: int, new_id: str | None, as_json: bool) -> int:
    """Start a new workflow from a recorded one: same function and inputs, its
    first --from-step steps kept. The original is untouched."""
    with C.client(db) as engine:
        _status_of(engine, workflow_id, db)
        try:
            handle = engine.fork(workflow_id, from_step, new_workflow_id=new_id)
        except DurablyError as exc:
            C.refuse(C.describe(exc), C.code_of(exc))
        status, _ = _status_of(engine, handle.workflow_id, db)
    doc = {"workflow_id": handle.workflow_id, "forked_from": workflow_id, "from_step": from_step, "status": status}
    return _done(as_json, doc, handle.workflow_id, status)
