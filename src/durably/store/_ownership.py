"""Fencing bookkeeping both stores share (SQLite: store/_store.py;
PostgreSQL: store/pg/_store.py): which workflows this process runs, at which
epoch; which it lost to another executor; what a lost workflow's records
become. Each store reads the database its own way (its SQL dialect and its
locks); what it concludes is applied here, so the two cannot drift apart.

The store holds the state (``owned``, ``fenced``, ``on_fenced``, contract
attributes the engine reads and sets); these functions take the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from .. import _logs, errors
from .. import _records as R

log = _logs.get("durably.leases")


def workflow_of(rec: Any) -> str | None:
    """The running workflow a record advances (None: a client record)."""
    kind = rec.kind
    if kind in (R.STEP, R.TX, R.OP):
        wid: str | None = rec.params[0]
        return wid
    if kind == R.COMPLETE:
        wid = rec.params[3]
        return wid
    if kind == R.START:
        parent_step = rec.params[4]
        return None if parent_step is None else parent_step[0]
    return None


def reset(batch: Sequence[Any]) -> None:
    """Forget what a rolled-back attempt set on the records (before a retry)."""
    for rec in batch:
        rec.result = None
        rec.error = None


def drop_fenced(store: Any, batch: Sequence[Any]) -> Sequence[Any]:
    """The records of ``batch`` still to write: those of a workflow another
    executor took over fail with FencedError, unwritten."""
    fenced = store.fenced
    if not fenced:
        return batch
    keep: list[Any] = []
    for rec in batch:
        wid = workflow_of(rec)
        if wid is not None and wid in fenced:
            rec.result = None
            rec.error = errors.FencedError(
                f"workflow {wid!r} was taken over by another executor (this one lost its lease); "
                "this record is not written and this process abandons the workflow",
                workflow_id=wid,
            )
        else:
            keep.append(rec)
    return keep


def lost_among(store: Any, rows: Iterable[tuple[str, Any, Any]]) -> list[str]:
    """Of (workflow_id, owner, epoch) rows read in the batch's transaction,
    the workflows this process runs but no longer owns (another owner, or
    another epoch than the one it runs them at)."""
    owned = store.owned
    lost: list[str] = []
    for wid, owner, epoch in rows:
        if wid not in owned:
            continue
        mine = owned[wid]
        if owner != store.executor or (mine is not None and epoch != mine):
            lost.append(wid)
    return lost


def lose(store: Any, lost: list[str]) -> None:
    """These workflows are another executor's now: forget them, fence their
    later records, tell the engine (it abandons them)."""
    if not lost:
        return
    for wid in lost:
        store.owned.pop(wid, None)
    store.fenced.update(lost)
    if store.on_fenced is not None:
        store.on_fenced(lost)


def claimed(store: Any, output: Any) -> None:
    """A claim applied in this batch: its workflows are this process's from
    this transaction on, at their new epochs. Registered in the writer,
    before any later batch's fence check: a process paused between the
    claim's commit and running what it claimed, and taken over meanwhile,
    finds them lost at its next write."""
    rows = cast("Sequence[Any]", output)[0] if isinstance(output, tuple) else output
    for row in rows:
        store.owned[row[0]] = row[4]


def lost_to_a_race(store: Any, batch: Sequence[Any], duplicate: Callable[[BaseException], bool]) -> None:
    """A step row of a workflow running here refused as a duplicate
    (``duplicate(error)``): its position was recorded by another executor
    that runs it too (this one lost it and has not seen the change of owner
    yet). That is a lost workflow, not its error: the record fails with
    FencedError and the workflow is abandoned here, never ended ERROR by a race."""
    lost: list[str] = []
    for rec in batch:
        err = rec.error
        if err is None:
            continue  # nearly every record: the writer holds the GIL for this loop
        if (
            rec.kind == R.STEP
            and isinstance(err, errors.ConstraintError)
            and duplicate(err)
            and rec.params[0] in store.owned
        ):
            wid = rec.params[0]
            rec.error = errors.FencedError(
                f"workflow {wid!r}: step position {rec.params[1]} was already recorded by another executor; "
                "this process abandons the workflow",
                workflow_id=wid,
            )
            lost.append(wid)
    if lost:
        log.warning(
            "durably: %d step record(s) collided with another executor's: %s",
            len(lost),
            lost[:10],
            extra=_logs.many("leases.step_collided", lost),
        )
        lose(store, lost)
