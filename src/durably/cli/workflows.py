"""Reading workflows: ``list``, ``show``, ``steps`` and ``tail``. Each opens
the database read-only (nothing written, recovered or left behind), so it
can run beside the engines that use it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from .._status import STATUSES, TERMINAL
from ..handle import StepInfo
from ..store.contract import WorkflowView
from . import _common as C

if TYPE_CHECKING:
    from ..store.contract import StoreContract

_INT64 = click.IntRange(0, 2**63 - 1)
TAIL_LAG = 5.0  # seconds: a start committed up to this long after its creation time is still seen
TAIL_TRACKED = 10_000  # workflows already pending when tail starts that it follows to their end


def view_of(store: StoreContract, workflow_id: str) -> WorkflowView | None:
    """The workflow as users see it (ENQUEUED while it waits), or None."""
    row = store.get_workflow(workflow_id, user_view=True)
    return None if row is None else WorkflowView._make(row)


@click.command("list")
@C.DB_ARGUMENT
@click.option("--status", type=click.Choice(STATUSES), help="only workflows in this status")
@click.option("--name", help="only workflows of this registered name")
@click.option("--limit", type=_INT64, default=50, show_default=True, help="at most this many (0: all)")
@click.option("--offset", type=_INT64, default=0, help="skip this many first")
@click.option("--id-prefix", help="only ids starting with this")
@click.option("--since", help="created at or after: ISO time (UTC unless it says), 15m/7d ago, or @unix")
@click.option("--until", help="created before (same forms as --since)")
@click.option("--queue", help="only workflows enqueued on this queue")
@click.option("--parent", help="only children of this workflow")
@click.option("--oldest-first", is_flag=True, help="oldest first (default: newest first)")
@C.json_option
def list_(db: str, as_json: bool, **f: Any) -> int:
    """List workflows, newest first, with every filter of list_workflows."""
    since = None if f["since"] is None else C.point_in_time(f["since"], "--since")
    until = None if f["until"] is None else C.point_in_time(f["until"], "--until")
    with C.reader(db) as store:
        rows = store.list_workflows(
            f["status"],
            f["name"],
            f["limit"] or None,
            id_prefix=f["id_prefix"],
            start_time=since,
            end_time=until,
            queue=f["queue"],
            parent_id=f["parent"],
            offset=f["offset"],
            newest_first=not f["oldest_first"],
        )
    if as_json:
        C.emit_json({"workflows": [C.workflow_doc(r) for r in rows]})
        return 0
    out = C.table("ID", "STATUS", "NAME", "CREATED (UTC)", "QUEUE", "PARKED")
    for r in rows:
        out.add_row(*C.cells(r.workflow_id, r.status, r.name, C.when(r.created_at), r.queue, r.parked))
    C.console().print(out)
    return 0


@click.command()
@C.DB_ARGUMENT
@click.argument("workflow_id", metavar="ID")
@C.json_option
def steps(db: str, workflow_id: str, as_json: bool) -> int:
    """The recorded steps of one workflow, in the order they were recorded."""
    with C.reader(db) as store:
        if store.get_workflow(workflow_id) is None:
            C.no_workflow(workflow_id, db)
        rows = [StepInfo.from_row(r) for r in store.step_rows(workflow_id)]
    if as_json:
        C.emit_json({"workflow_id": workflow_id, "steps": [C.step_doc(s) for s in rows]})
        return 0
    C.console().print(_steps_table(rows))
    return 0


def _steps_table(rows: list[StepInfo]) -> Any:
    out = C.table("POS", "STEP", "OUTCOME", "RECORDED (UTC)")
    for s in rows:
        outcome = s.output if s.error is None else "ERROR " + str(s.error)
        out.add_row(*C.cells(s.position, s.name, outcome, C.when(s.recorded_at)))
    return out


@click.command()
@C.DB_ARGUMENT
@click.argument("workflow_id", metavar="ID")
@C.json_option
def show(db: str, workflow_id: str, as_json: bool) -> int:
    """One workflow: its info, steps, children, events, and the messages waiting for it."""
    with C.reader(db) as store:
        info = view_of(store, workflow_id)
        if info is None:
            C.no_workflow(workflow_id, db)
        step_rows = [StepInfo.from_row(r) for r in store.step_rows(workflow_id)]
        children = store.list_workflows(parent_id=workflow_id, limit=None, newest_first=False)
        events = store.read("all_events", workflow_id)
        messages = store.messages_for(workflow_id)
    if as_json:
        C.emit_json(
            {
                "workflow": C.workflow_doc(info),
                "steps": [C.step_doc(s) for s in step_rows],
                "children": [C.workflow_doc(c) for c in children],
                "events": {key: C.stored_value(value) for key, value in events},
                "messages": [
                    {"id": m.id, "topic": m.topic, "payload": C.stored_value(m.payload), "created_at": m.created_at}
                    for m in messages
                ],
            }
        )
        return 0
    con = C.console()
    doc = C.workflow_doc(info)
    facts = C.table("FIELD", "VALUE")
    for key in ("workflow_id", "name", "status", "parked", "parent_id", "queue", "priority", "executor"):
        if doc[key] is not None:
            facts.add_row(*C.cells(key, doc[key]))
    for key in ("created_at", "updated_at", "dequeued_at", "deadline"):
        if doc[key] is not None:
            facts.add_row(*C.cells(key, C.when(doc[key]) + " UTC"))
    facts.add_row(*C.cells("recovery_attempts", doc["recovery_attempts"]))
    for key in ("input", "output", "error"):
        if doc[key] is not None:
            facts.add_row(*C.cells(key, C.compact(doc[key])))
    con.print(facts)
    sections: list[tuple[str, Any, int]] = [("steps", _steps_table(step_rows), len(step_rows))]
    kids = C.table("CHILD", "STATUS", "NAME")
    for c in children:
        kids.add_row(*C.cells(c.workflow_id, c.status, c.name))
    sections.append(("children", kids, len(children)))
    evs = C.table("EVENT", "VALUE")
    for key, value in events:
        evs.add_row(*C.cells(key, value))
    sections.append(("events", evs, len(events)))
    msgs = C.table("MESSAGE", "TOPIC", "PAYLOAD", "SENT (UTC)")
    for m in messages:
        msgs.add_row(*C.cells(m.id, m.topic, m.payload, C.when(m.created_at)))
    sections.append(("messages waiting", msgs, len(messages)))
    for title, body, count in sections:
        con.print(f"\n{title}: {count}")
        if count:
            con.print(body)
    return 0


@click.command()
@C.DB_ARGUMENT
@click.option("--name", help="only workflows of this registered name")
@click.option("--interval", default="0.5s", show_default=True, help="how often to look (a duration)")
@click.option("--count", type=click.IntRange(1), help="stop after this many events")
@click.option("--timeout", help="stop after this long (a duration); default: until Ctrl-C")
@click.option(
    "--json", "as_json", is_flag=True, help="one JSON object per line (fields: docs/operations/cli.md, '--json')"
)
def tail(db: str, name: str | None, interval: str, count: int | None, timeout: str | None, as_json: bool) -> int:
    """Follow workflows as they start and end (polls; Ctrl-C stops it)."""
    pause = C.seconds(interval, "--interval")
    deadline = None if timeout is None else time.monotonic() + C.seconds(timeout, "--timeout")
    con = None if as_json else C.console()
    emitted = 0
    with C.reader(db) as store:
        follower = _Follower(store, name)
        try:
            while deadline is None or time.monotonic() < deadline:
                for event, info in follower.poll():
                    if as_json:
                        C.emit_json({"event": event, "at": time.time(), "workflow": C.workflow_doc(info)})
                    else:
                        assert con is not None
                        con.print(*C.cells(C.when(time.time()), event, info.workflow_id, info.status, info.name))
                    emitted += 1
                    if count is not None and emitted >= count:
                        return 0
                    C.flush()
                time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
        except KeyboardInterrupt:  # the operator stopped it: not an error
            return 0
    return 0


class _Follower:
    """What changed since the last look: workflows created (``start``) and
    workflows that reached a terminal status (``end``)."""

    def __init__(self, store: StoreContract, name: str | None) -> None:
        self.store, self.name = store, name
        newest = store.list_workflows(None, name, 1)
        self.since = newest[0].created_at if newest else 0.0  # the store's clock, not this host's
        self.seen: dict[str, float] = {}  # recently created ids (created_at), so a re-read is not a new start
        self.open: set[str] = set()  # followed until they end
        for status in ("PENDING", "ENQUEUED"):
            for row in store.list_workflows(status, name, TAIL_TRACKED, newest_first=False):
                self.open.add(row.workflow_id)
        for row in store.list_workflows(None, name, None, start_time=self.since - TAIL_LAG):
            self.seen[row.workflow_id] = row.created_at

    def poll(self) -> list[tuple[str, WorkflowView]]:
        store = self.store
        out: list[tuple[str, WorkflowView]] = []
        rows = store.list_workflows(None, self.name, None, start_time=self.since - TAIL_LAG, newest_first=False)
        for row in rows:
            if row.workflow_id in self.seen:
                continue
            self.seen[row.workflow_id] = row.created_at
            self.since = max(self.since, row.created_at)
            out.append(("start", row))
            if row.status not in TERMINAL:
                self.open.add(row.workflow_id)
            else:
                out.append(("end", row))
        ended = [wid for wid, status, _parked in store.statuses(sorted(self.open)) if status in TERMINAL]
        for wid in ended:
            self.open.discard(wid)
            info = view_of(store, wid)
            if info is not None:
                out.append(("end", info))
        horizon = self.since - TAIL_LAG
        self.seen = {wid: at for wid, at in self.seen.items() if at >= horizon}
        return out
