"""Queues and schedules: ``queues`` (read-only), ``schedules`` (the list,
read-only) and ``schedules pause|resume|trigger|backfill`` (through a
client-mode Engine, as ``engine.pause_schedule`` and the rest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ..errors import DurablyError
from ..schedules import schedule_info
from . import _common as C

if TYPE_CHECKING:
    from .. import Engine


@click.command()
@C.DB_ARGUMENT
@C.json_option
def queues(db: str, as_json: bool) -> int:
    """Each queue: workflows waiting and running, and the limits its executors declared."""
    with C.reader(db) as store:
        rows = store.queue_stats()
    if as_json:
        C.emit_json(
            {
                "queues": [
                    {
                        "queue": r.queue,
                        "enqueued": r.enqueued,
                        "running": r.running,
                        "concurrency": r.concurrency,
                        "rate_limit": None
                        if r.rate_starts is None
                        else {"starts": r.rate_starts, "seconds": r.rate_period},
                        "declared_at": r.declared_at,
                    }
                    for r in rows
                ]
            }
        )
        return 0
    out = C.table("QUEUE", "ENQUEUED", "RUNNING", "CONCURRENCY", "RATE LIMIT", "DECLARED (UTC)")
    for r in rows:
        rate = "" if r.rate_starts is None else f"{r.rate_starts} per {r.rate_period:g}s"
        concurrency = "" if r.declared_at is None else ("none" if r.concurrency is None else r.concurrency)
        out.add_row(*C.cells(r.queue, r.enqueued, r.running, concurrency, rate, C.when(r.declared_at)))
    C.console().print(out)
    return 0


class _Schedules(click.Group):
    """``durably schedules DB`` lists (it is ``durably schedules list DB``);
    ``durably schedules pause DB NAME`` and the others change one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_Schedules)
def schedules() -> None:
    """List schedules (`durably schedules DB`), or change one:
    `durably schedules pause|resume|trigger|backfill DB NAME ...`."""


@schedules.command("list")
@C.DB_ARGUMENT
@C.json_option
def list_schedules(db: str, as_json: bool) -> int:
    """Every schedule: its cron, workflow, zone, whether paused, its last and next slots."""
    with C.reader(db) as store:
        infos = [schedule_info(row, time.time()) for row in store.schedules()]
    if as_json:
        C.emit_json({"schedules": [C.schedule_doc(i) for i in infos]})
        return 0
    out = C.table("SCHEDULE", "CRON", "WORKFLOW", "TZ", "PAUSED", "LAST SLOT", "NEXT SLOT")
    for i in infos:
        nxt = "" if i.next_slot is None else i.next_slot.isoformat()
        out.add_row(*C.cells(i.name, i.cron, i.workflow, i.tz or "UTC", i.paused, i.last_slot.isoformat(), nxt))
    C.console().print(out)
    return 0


def _change(db: str, name: str, as_json: bool, what: str, change: Callable[[Engine], Any]) -> int:
    with C.client(db) as engine:
        try:
            result = change(engine)
        except DurablyError as exc:
            C.refuse(C.describe(exc), C.code_of(exc))
        info = next((i for i in engine.list_schedules() if i.name == name), None)
    doc: dict[str, Any] = {"schedule": None if info is None else C.schedule_doc(info), "action": what}
    if result is not None:
        doc["workflow_ids"] = [h.workflow_id for h in result]
    if as_json:
        C.emit_json(doc)
    else:
        click.echo(f"{C.shown(name)}\t{what}")
        for wid in doc.get("workflow_ids", []):
            click.echo(C.shown(wid))
    return 0


_NAME = click.argument("name", metavar="NAME")


@schedules.command()
@C.DB_ARGUMENT
@_NAME
@C.json_option
def pause(db: str, name: str, as_json: bool) -> int:
    """Pause a schedule: it fires no slot until resumed."""
    return _change(db, name, as_json, "paused", lambda e: e.pause_schedule(name))


@schedules.command("resume")
@C.DB_ARGUMENT
@_NAME
@C.json_option
def resume_(db: str, name: str, as_json: bool) -> int:
    """Resume a paused schedule (the slots that fell while paused are skipped)."""
    return _change(db, name, as_json, "resumed", lambda e: e.resume_schedule(name))


@schedules.command()
@C.DB_ARGUMENT
@_NAME
@click.option("--workflow-id", help="the run's id (an idempotency key; default: schedule:NAME@trigger:<now>)")
@C.json_option
def trigger(db: str, name: str, workflow_id: str | None, as_json: bool) -> int:
    """Run the schedule's workflow now, once, outside its slots."""
    return _change(db, name, as_json, "triggered", lambda e: [e.trigger_schedule(name, workflow_id=workflow_id)])


@schedules.command()
@C.DB_ARGUMENT
@_NAME
@click.option("--start", "start", required=True, help="first slot at or after: ISO 8601 (UTC unless it says)")
@click.option("--end", "end", required=True, help="slots before: ISO 8601 (UTC unless it says)")
@C.json_option
def backfill(db: str, name: str, start: str, end: str, as_json: bool) -> int:
    """Start the schedule's workflow for every slot in [--start, --end) not run yet."""
    first, last = C.aware(start, "--start"), C.aware(end, "--end")
    return _change(db, name, as_json, "backfilled", lambda e: e.backfill_schedule(name, first, last))
