"""Cron schedules: start a workflow once per slot, with the slot time.

Slots come from croniter (standard 5-field cron, plus ``@hourly`` and the
like), in UTC. Each slot starts its workflow with the id
``schedule:<name>@<slot ISO time>``: the id is the idempotency key, so a slot
can never fire twice, even if the process dies between starting the
workflow and recording the slot. ``schedules.last_slot`` records progress.

Missed slots (the engine was closed, or the machine was down) follow
``missed``: ``"latest"`` (default) fires only the most recent missed slot,
``"all"`` fires every missed slot in order, ``"skip"`` fires none of them and
waits for the next slot.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from croniter import croniter

from . import _records as R
from . import errors
from ._names import check_name
from .journal import Record
from .runtime.waits import BackgroundLoop


MISSED = ("latest", "all", "skip")
_CATCH_UP_MAX = 1000  # slots fired per schedule per round with missed="all"


class Schedule:
    def __init__(self, name: str, cron: str, workflow: Any, missed: str) -> None:
        check_name(name, "schedule name")
        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise errors.UsageError(f"schedule {name!r}: {cron!r} is not a valid cron expression")
        if missed not in MISSED:
            raise errors.UsageError(f"schedule {name!r}: missed must be one of {MISSED}, not {missed!r}")
        self.name = name
        self.cron = cron
        self.workflow = workflow
        self.missed = missed

    def slots_after(self, after: float, until: float) -> tuple[list[float], float]:
        """Due slots in (after, until] (only the newest unless missed="all"),
        and the first slot after ``until``."""
        at = datetime.fromtimestamp(until, timezone.utc)
        nxt = croniter(self.cron, at).get_next(float)
        if self.missed != "all":
            # the newest slot <= until (a second later, so a slot exactly at until counts)
            latest = croniter(self.cron, datetime.fromtimestamp(until + 1, timezone.utc)).get_prev(float)
            return ([latest] if latest > after else []), nxt
        it = croniter(self.cron, datetime.fromtimestamp(after, timezone.utc))
        due: list[float] = []
        while len(due) < _CATCH_UP_MAX:
            slot = it.get_next(float)
            if slot > until:
                break
            due.append(slot)
        return due, nxt


def slot_id(name: str, slot: float) -> str:
    return f"schedule:{name}@{datetime.fromtimestamp(slot, timezone.utc).isoformat()}"


class ScheduleRunner(BackgroundLoop):
    """One thread firing every schedule's slots on the engine's clock."""

    thread_name = "durably-schedules"

    def run_round(self) -> float | None:
        wake: float | None = None
        for schedule in list(self.engine._schedules.values()):
            nxt = self._fire_due(schedule)
            wake = nxt if wake is None else min(wake, nxt)
        return wake

    def _fire_due(self, schedule: Schedule) -> float:
        engine = self.engine
        now = engine._clock.now()
        rows = engine._store.query("SELECT cron, last_slot FROM schedules WHERE name = ?", (schedule.name,))
        spec = engine._spec(schedule.workflow)
        if not rows:
            # First time: nothing is missed before the schedule existed.
            engine._journal.submit(Record(R.SQL, (
                "INSERT INTO schedules (name, cron, workflow, last_slot) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING", (schedule.name, schedule.cron, spec.name, now))))
            last = now
        else:
            last = rows[0][1]
            if rows[0][0] != schedule.cron:
                engine._journal.submit(Record(R.SQL, (
                    "UPDATE schedules SET cron = ?, workflow = ? WHERE name = ?",
                    (schedule.cron, spec.name, schedule.name))))
        due, nxt = schedule.slots_after(last, now)
        if not due:
            return nxt
        missed, current = due[:-1], due[-1]
        # A slot is "missed" when it is more than a minute old: the runner was not there for it.
        if now - current > 60:
            missed, current = due, None
        fire = [*({"all": missed, "latest": missed[-1:] if current is None else [], "skip": []}[schedule.missed]),
                *([current] if current is not None else [])]
        for slot in fire:
            engine.start(spec, datetime.fromtimestamp(slot, timezone.utc), workflow_id=slot_id(schedule.name, slot))
        engine._journal.submit(Record(R.SQL, (
            "UPDATE schedules SET last_slot = ? WHERE name = ? AND last_slot < ?",
            (due[-1], schedule.name, due[-1]))))
        return nxt


def _declare(engine: Any, name: str, cron: str, workflow: Callable[..., Any] | str, missed: str) -> Schedule:
    schedule = Schedule(name, cron, workflow, missed)
    engine._spec(workflow)  # a registered workflow, or UsageError now
    existing = engine._schedules.get(name)
    if existing is not None and (existing.cron, existing.missed) != (cron, missed):
        raise errors.UsageError(f"schedule {name!r} is already declared with cron {existing.cron!r}")
    engine._schedules[name] = schedule
    return schedule


class Schedules:
    """Declaring cron schedules and running them (a base of ``Engine``)."""

    _open: bool

    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}
        self._schedule_runner: ScheduleRunner | None = None

    def schedule(self, name: str, cron: str, workflow: Callable[..., Any] | str, *, missed: str = "latest") -> Schedule:
        """Start ``workflow(slot)`` once per slot of the cron expression ``cron``
        (UTC; ``slot`` is the slot's aware datetime).

        Each slot fires at most once, across crashes and restarts (the slot
        is the workflow id: ``schedule:<name>@<slot>``). Slots missed while
        the engine was not running: ``"latest"`` fires the most recent one,
        ``"all"`` fires each in order (at most 1,000 per round), ``"skip"``
        fires none. An invalid expression raises UsageError.
        """
        schedule = _declare(self, name, cron, workflow, missed)
        if self._open and self._schedule_runner is None:
            self._schedule_runner = ScheduleRunner(self)
            self._schedule_runner.start()
        elif self._schedule_runner is not None:
            self._schedule_runner.kick()
        return schedule

    def _start_schedules(self) -> None:
        """At open: fire the declared schedules' slots."""
        if self._schedules:
            self._schedule_runner = ScheduleRunner(self)
            self._schedule_runner.start()

    def _stop_schedules(self) -> None:
        if self._schedule_runner is not None:
            self._schedule_runner.stop()
            self._schedule_runner = None
