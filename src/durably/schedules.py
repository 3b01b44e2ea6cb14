"""Cron schedules: start a workflow once per slot, with the slot time.

A schedule is a row of the ``schedules`` table: its definition (cron
expression, workflow name, time zone, missed-slot policy), its progress
(``last_slot``: every slot at or before it has been fired or deliberately
skipped) and whether it is paused. The row is the schedule: one created at
runtime keeps firing after a restart without being declared again, as long
as its workflow function is registered. ``engine.schedule`` in code
declares one (inserting the row, or replacing the definition of the row of
that name; progress and paused state are kept).

Slots come from croniter (standard 5-field cron, a 6th field for seconds,
``@hourly`` and the like), evaluated in the schedule's time zone (UTC by
default; any IANA zone through zoneinfo). Each slot starts its workflow with
the id ``schedule:<name>@<slot ISO time>`` (local time with its UTC offset):
the id is the idempotency key, so a slot can never fire twice, even if the
process dies between starting the workflow and recording the slot, and a
backfill never duplicates a slot that already ran.

Missed slots (the engine was closed, or the machine was down) follow
``missed``: ``"latest"`` (default) fires only the most recent missed slot,
``"all"`` fires every missed slot in order, ``"skip"`` fires none of them and
waits for the next slot. A paused schedule fires nothing; resuming it skips
the slots that fell while it was paused (pausing is a decision, not an
outage; ``backfill_schedule`` runs any of them on purpose).

Daylight saving time is croniter's rule for aware datetimes: a slot at a
local time that does not exist (the spring-forward gap) fires once, at the
first local time after the gap; a slot at an ambiguous local time (the
fall-back hour) fires at both occurrences, an hour apart, with two ids that
differ by their UTC offset.

All of it lives in this module's SQL, written through the journal like
every other record; the runner and the management calls are serialized by
one lock, so once ``pause_schedule`` or ``delete_schedule`` returns, this
process fires no further slot of that schedule.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from . import _logs, errors
from . import _records as R
from ._names import check_name
from .handle import WorkflowHandle
from .journal import Record
from .runtime.context import workflow_context
from .runtime.waits import RETRY_FIRST, RETRY_MAX, BackgroundLoop

if TYPE_CHECKING:
    from typing import Protocol

    from .clock import Clock
    from .journal import Journal
    from .runtime.workflows import WorkflowSpec
    from .store.contract import ScheduleRow, StoreContract

    class Start(Protocol):
        """How a schedule starts its workflow (the starter's ``start``)."""

        def __call__(
            self, workflow: WorkflowSpec, /, *args: Any, workflow_id: str | None = None
        ) -> WorkflowHandle[Any]: ...


log = _logs.get("durably.schedules")

MISSED = ("latest", "all", "skip")
_CATCH_UP_MAX = 1000  # slots fired per schedule per round with missed="all"
MAX_BACKFILL = 10_000  # slots one backfill_schedule call may start
_LATE = 60.0  # a due slot older than this (seconds) was missed: the runner was not there for it
# How far croniter looks for the next (or previous) slot: an expression with
# no slot within this many years (February 30th) has none; schedule() refuses it.
HORIZON_YEARS = 50


def _zone(tz: Any, name: str) -> tzinfo:
    if tz is None:
        return UTC
    check_name(tz, f"schedule {name!r} tz")
    try:
        return ZoneInfo(tz)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError (a path-like key) ...
        raise errors.UsageError(
            f"schedule {name!r}: tz {tz!r} is not an IANA time zone known here (e.g. 'Europe/Paris'; "
            "on Windows install the tzdata package)"
        ) from exc


class Schedule:
    """A schedule's definition, and its slots."""

    __slots__ = ("name", "cron", "workflow", "missed", "tz", "zone")

    def __init__(self, name: str, cron: str, workflow: str, missed: str = "latest", tz: str | None = None) -> None:
        check_name(name, "schedule name")
        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise errors.UsageError(f"schedule {name!r}: {cron!r} is not a valid cron expression")
        if not isinstance(missed, str) or missed not in MISSED:
            raise errors.UsageError(f"schedule {name!r}: missed must be one of {MISSED}, not {missed!r}")
        self.zone = _zone(tz, name)
        self.name = name
        self.cron = cron
        self.workflow = workflow  # the workflow's registered name
        self.missed = missed
        self.tz = tz

    @property
    def definition(self) -> tuple[str, str, str, str | None]:
        return (self.cron, self.workflow, self.missed, self.tz)

    def __repr__(self) -> str:
        tz = "" if self.tz is None else f", tz={self.tz!r}"
        return f"Schedule({self.name!r}, {self.cron!r}, {self.workflow!r}, missed={self.missed!r}{tz})"

    def at(self, ts: float) -> datetime:
        """The aware local datetime of a unix time (the right offset in a fold)."""
        return datetime.fromtimestamp(ts, self.zone)

    def slot_id(self, slot: float) -> str:
        return f"schedule:{self.name}@{self.at(slot).isoformat()}"

    def _iter(self, ts: float) -> croniter:
        return croniter(self.cron, self.at(ts), max_years_between_matches=HORIZON_YEARS)

    def next_after(self, ts: float) -> float | None:
        """The first slot strictly after ``ts``; None if there is none within
        HORIZON_YEARS (February 30th; a year field that has passed)."""
        try:
            slot: float = self._iter(ts).get_next(float)
            return slot
        except CroniterBadDateError:
            return None

    def latest_at(self, ts: float) -> float | None:
        """The newest slot at or before ``ts``; None if there is none within HORIZON_YEARS."""
        try:
            prev = self._iter(ts).get_prev(float)  # strictly before ts
        except CroniterBadDateError:
            prev = None
        nxt = self.next_after(ts - 1.0 if prev is None else prev)  # a slot at ts itself
        return nxt if nxt is not None and nxt <= ts else prev

    def slots_after(self, after: float, until: float) -> tuple[list[float], float | None]:
        """Due slots in (after, until] (only the newest unless missed="all"),
        and the first slot after ``until`` (None: no more slots)."""
        nxt = self.next_after(until)
        if self.missed != "all":
            latest = self.latest_at(until)
            return ([latest] if latest is not None and latest > after else []), nxt
        it = self._iter(after)
        due: list[float] = []
        while len(due) < _CATCH_UP_MAX:
            try:
                slot = it.get_next(float)
            except CroniterBadDateError:  # no slot after the last one
                break
            if slot > until:
                break
            due.append(slot)
        return due, nxt

    def slots_between(self, start: float, end: float) -> list[float]:
        """The slots in [start, end); UsageError past MAX_BACKFILL of them."""
        first = self.latest_at(start)
        if first is None or first < start:
            first = self.next_after(start)
        if first is None:
            return []
        it = self._iter(first)
        slots: list[float] = []
        slot = first
        while slot < end:
            if len(slots) == MAX_BACKFILL:
                raise errors.UsageError(
                    f"schedule {self.name!r}: the range holds more than {MAX_BACKFILL} slots; nothing was "
                    "started. Backfill it in smaller ranges"
                )
            slots.append(slot)
            try:
                slot = it.get_next(float)
            except CroniterBadDateError:  # no slot after this one
                break
        return slots


@dataclass(frozen=True)
class ScheduleInfo:
    """One schedule, as ``engine.list_schedules`` gives it.

    ``workflow`` is the workflow's registered name; ``tz`` None means UTC.
    ``last_slot``: progress; every slot at or before it has been fired or
    deliberately skipped (missed-slot policy, pause). Before the first slot
    comes (and after a resume) it is the moment the schedule was created
    (resumed). ``next_slot``: the first slot after now, None while paused.
    Both are aware datetimes in the schedule's time zone."""

    name: str
    cron: str
    workflow: str
    tz: str | None
    missed: str
    paused: bool
    last_slot: datetime
    next_slot: datetime | None


def schedule_info(row: ScheduleRow, now: float) -> ScheduleInfo:
    """A stored schedule as users see it, its next slot after ``now`` (unix time)."""
    name, cron, workflow, last, paused, tz, missed = row
    try:
        schedule = Schedule(name, cron, workflow, missed, tz)
    except errors.UsageError:  # a zone unknown on this machine: shown in UTC
        schedule = Schedule(name, cron, workflow, missed, None)
    # None: paused, or no slot to come (a row from before schedule() refused those)
    nxt_ts = None if paused else schedule.next_after(max(last, now))
    nxt = None if nxt_ts is None else schedule.at(nxt_ts)
    return ScheduleInfo(name, cron, workflow, tz, missed, bool(paused), schedule.at(last), nxt)


def _not_in_workflow(what: str) -> None:
    if workflow_context() is not None:
        # Not journaled: a replay would run it again, maybe undoing a later change.
        raise errors.UsageError(
            f"engine.{what}() manages schedules and is not journaled; call it outside workflow code "
            "(or inside a step, whose recorded outcome covers it)"
        )


class ScheduleRunner(BackgroundLoop):
    """One thread firing every schedule's slots on the engine's clock."""

    thread_name = "durably-schedules"

    def __init__(self, schedules: ScheduleManager, journal: Journal) -> None:
        super().__init__(schedules.clock, journal)
        self.schedules = schedules
        self._parsed: dict[tuple[Any, ...], Schedule | None] = {}
        self._warned: set[tuple[Any, ...]] = set()
        self._failures: dict[str, int] = {}  # schedule name: rounds failed in a row

    def run_round(self) -> float | None:
        schedules = self.schedules
        wake: float | None = None
        with schedules.lock:
            for row in schedules.store.schedules():
                nxt = self._fire_isolated(row)
                if nxt is not None:
                    wake = nxt if wake is None else min(wake, nxt)
        return wake

    def _fire_isolated(self, row: ScheduleRow) -> float | None:
        """One schedule's part of a round: what goes wrong with it (a
        workflow that fails to start, a row this version cannot read) is
        logged with its name and retried later, with backoff, on its own;
        the other schedules fire on time."""
        name = row.name
        try:
            nxt = self._fire_due(row)
        except Exception as exc:
            if not self.journal.running or isinstance(exc, errors.NotOpenError):
                raise  # the writer stopped, the engine closes: the runner stops (BackgroundLoop)
            failures = self._failures[name] = self._failures.get(name, 0) + 1
            retry: float = min(RETRY_FIRST * 2 ** (failures - 1), RETRY_MAX)
            log.error(
                "durably: schedule %r failed (%r, %d time(s) in a row); its slots are tried again in %.1f s, "
                "the other schedules are not held back",
                name,
                exc,
                failures,
                retry,
                exc_info=failures == 1,
                extra=_logs.fields("schedules.failed", schedule=name),
            )
            return self.clock.now() + retry
        self._failures.pop(name, None)
        return nxt

    def _first(self, key: tuple[Any, ...]) -> bool:
        """Whether ``key`` is warned about for the first time (once each)."""
        first = key not in self._warned
        self._warned.add(key)
        return first

    def _definition(self, row: ScheduleRow) -> Schedule | None:
        name, cron, workflow, _last, _paused, tz, missed = row
        key = (name, cron, workflow, tz, missed)
        if key not in self._parsed:
            try:
                self._parsed[key] = Schedule(name, cron, workflow, missed, tz)
            except errors.UsageError as exc:  # e.g. a time zone this machine does not know
                self._parsed[key] = None
                log.error(
                    "durably: schedule %r cannot run here: %s",
                    name,
                    exc,
                    extra=_logs.fields("schedules.unusable", schedule=name),
                )
        return self._parsed[key]

    def _fire_due(self, row: ScheduleRow) -> float | None:
        schedules = self.schedules
        name, _cron, workflow, last, paused, _tz, _missed = row
        if paused:
            return None
        schedule = self._definition(row)
        if schedule is None:
            return None
        spec = schedules.workflows.get(workflow)
        if spec is None:
            # Its slots wait (progress is not moved) until an engine that
            # registers the workflow runs them, by the missed-slot policy.
            if self._first(("unregistered", name, workflow)):
                log.warning(
                    "durably: schedule %r starts workflow %r, which is not registered with this engine; its slots wait",
                    name,
                    workflow,
                    extra=_logs.fields("schedules.unregistered", workflow_name=workflow, schedule=name),
                )
            return None
        now = self.clock.now()
        due, nxt = schedule.slots_after(last, now)
        if nxt is None:
            if self._first(("no slot", name, schedule.cron)):
                log.warning(
                    "durably: schedule %r (%r) has no slot in the next %d years; it fires nothing more",
                    name,
                    schedule.cron,
                    HORIZON_YEARS,
                    extra=_logs.fields("schedules.no_slot", schedule=name),
                )
        if not due:
            return nxt
        missed, current = due[:-1], due[-1]
        late = now - current > _LATE
        if late:
            missed = due
        fire = [
            *({"all": missed, "latest": missed[-1:] if late else [], "skip": []}[schedule.missed]),
            *([] if late else [current]),
        ]
        start = schedules.start_workflow
        for slot in fire:
            try:
                start(spec, schedule.at(slot), workflow_id=schedule.slot_id(slot))
            except errors.WorkflowConflictError as exc:
                # The slot's id belongs to another workflow (the schedule's
                # workflow changed): that slot cannot run; the others do.
                log.error(
                    "durably: schedule %r skips a slot: %s",
                    name,
                    exc,
                    extra=_logs.fields("schedules.slot_skipped", schedule.slot_id(slot), spec.name, schedule=name),
                )
        self.journal.submit(Record(R.WRITE, ("schedule_advance", (due[-1], name, due[-1]))))
        if len(due) == _CATCH_UP_MAX:
            return now  # more may be due: another round at once
        return nxt


class ScheduleManager:
    """Cron schedules: declaring, managing and running them (a part of ``Engine``).

    Every method but ``schedule`` needs the engine open, and none may be
    called from workflow code (they are not journaled; a step may call them).
    ``start_workflow`` starts a workflow (the starter's ``start``); ``spec``
    looks a registered workflow up, ``check_open`` is the engine's open
    check, ``opened`` whether ``open`` ran and ``close`` has not ended.
    ``journal`` is the one of the current open (``open``); the schedule
    runner thread is built with it.
    """

    def __init__(
        self,
        store: StoreContract,
        clock: Clock,
        workflows: dict[str, WorkflowSpec],
        spec: Callable[[Any], WorkflowSpec],
        start_workflow: Start,
        check_open: Callable[[], None],
        opened: Callable[[], bool],
        journal: Journal,
    ) -> None:
        self.store = store
        self.clock = clock
        self.workflows = workflows
        self.spec = spec
        self.start_workflow = start_workflow
        self.check_open = check_open
        self.opened = opened
        self.journal = journal
        self.declared: dict[str, Schedule] = {}  # declared by this process's code
        self.lock = threading.Lock()  # the runner's rounds and the changes below
        self.runner: ScheduleRunner | None = None
        self.runs = False  # this open fires slots (an executor's; a client's never does)

    # -- declaring ------------------------------------------------------------------

    def schedule(
        self, name: str, cron: str, workflow: Callable[..., Any] | str, *, missed: str = "latest", tz: str | None = None
    ) -> Schedule:
        """Start ``workflow(slot)`` once per slot of the cron expression ``cron``
        (``slot``: the slot's aware datetime in the schedule's time zone).

        ``tz``: an IANA time zone name (``"Europe/Paris"``) the expression is
        read in; None (default) is UTC. Each slot fires at most once, across
        crashes and restarts (the slot is the workflow id:
        ``schedule:<name>@<slot ISO>``). Slots missed while the engine was
        not running: ``"latest"`` fires the most recent one, ``"all"`` fires
        each in order (at most 1,000 per round), ``"skip"`` fires none.

        Called before ``open`` it declares the schedule (written at open);
        called on an open engine it creates it at once (durable before this
        returns) and it starts firing. The schedule persists: it keeps
        firing after a restart whether or not the code declares it again.
        Declaring a name that exists replaces its definition and keeps its
        progress and paused state; declaring one name twice in one process
        with different definitions raises UsageError (``delete_schedule``
        first). An invalid expression, policy or time zone raises UsageError.
        """
        _not_in_workflow("schedule")
        check_name(name, "schedule name")
        Schedule(name, cron, "", missed, tz)  # vet the definition before the workflow
        spec = self.spec(workflow)  # registered, or UsageError
        schedule = Schedule(name, cron, spec.name, missed, tz)
        now = self.clock.now()
        if schedule.next_after(now) is None:
            raise errors.UsageError(
                f"schedule {name!r}: {cron!r} has no slot in the next {HORIZON_YEARS} years (a date that does not "
                "exist, such as February 30th, or a year that has passed); nothing was scheduled"
            )
        check_name(schedule.slot_id(now), f"schedule {name!r}: the id of its workflows")
        with self.lock:
            existing = self.declared.get(name)
            if existing is not None and existing.definition != schedule.definition:
                raise errors.UsageError(
                    f"schedule {name!r} is already declared as {existing!r}; delete_schedule({name!r}) first "
                    "to replace it"
                )
            if self.opened():
                self.check_open()
                self._write_schedule(schedule)
            self.declared[name] = schedule
            if self.opened():
                self.kick()
        return schedule

    def _write_schedule(self, schedule: Schedule) -> None:
        self.journal.submit(
            Record(
                R.WRITE,
                (
                    "schedule_upsert",
                    (schedule.name, schedule.cron, schedule.workflow, self.clock.now(), schedule.tz, schedule.missed),
                ),
            )
        )

    # -- managing -------------------------------------------------------------------

    def _schedule_call(self, what: str, name: Any) -> str:
        _not_in_workflow(what)
        self.check_open()
        return check_name(name, "schedule name")

    def _schedule_row(self, name: str) -> ScheduleRow:
        rows = self.store.schedules(name)
        if not rows:
            raise errors.ScheduleNotFoundError(f"no schedule named {name!r}", name=name)
        return rows[0]

    def pause_schedule(self, name: str) -> None:
        """Pause the schedule ``name``: it fires no slot until resumed (across
        restarts too; a code declaration does not resume it). Durable before
        it returns; workflows it already started keep running. Pausing a
        paused schedule does nothing. ScheduleNotFoundError if none."""
        name = self._schedule_call("pause_schedule", name)
        with self.lock:
            changed = self.journal.submit(Record(R.WRITE, ("schedule_pause", (name,))))
        if not changed:
            raise errors.ScheduleNotFoundError(f"no schedule named {name!r}", name=name)

    def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule. The slots that fell while it was paused
        are skipped, whatever its ``missed`` policy (which is for outages,
        not decisions): the first slot after this call fires next. Use
        ``backfill_schedule`` to run skipped slots. Resuming a schedule that
        is not paused does nothing. ScheduleNotFoundError if none."""
        name = self._schedule_call("resume_schedule", name)
        with self.lock:
            changed = self.journal.submit(Record(R.WRITE, ("schedule_resume", (self.clock.now(), name))))
            if not changed:
                self._schedule_row(name)  # ScheduleNotFoundError, or it was not paused
            self.kick()

    def delete_schedule(self, name: str) -> None:
        """Delete the schedule ``name``: no further slot fires; the workflows it
        started are untouched. A schedule declared in code is created again
        (with fresh progress) the next time that code declares it.
        ScheduleNotFoundError if none."""
        name = self._schedule_call("delete_schedule", name)
        with self.lock:
            changed = self.journal.submit(Record(R.WRITE, ("schedule_delete", (name,))))
            self.declared.pop(name, None)
        if not changed:
            raise errors.ScheduleNotFoundError(f"no schedule named {name!r}", name=name)

    def trigger_schedule(self, name: str, *, workflow_id: str | None = None) -> WorkflowHandle[Any]:
        """Run the schedule's workflow now, once, outside its slot sequence:
        ``workflow(now)``, ``now`` in the schedule's time zone. Its progress
        and next slot are unchanged; a paused schedule can be triggered.

        The id is ``workflow_id`` when given (an idempotency key: triggering
        again with it returns the first run's handle), else
        ``schedule:<name>@trigger:<now ISO>``, ``now`` on the engine's clock
        (so two triggers at one instant of that clock are one run).
        ScheduleNotFoundError if there is no such schedule; UsageError if its
        workflow is not registered here.
        """
        name = self._schedule_call("trigger_schedule", name)
        if workflow_id is not None:
            check_name(workflow_id, "workflow_id")
        row = self._schedule_row(name)
        schedule = Schedule(name, row.cron, row.workflow, row.missed, row.tz)
        spec = self.spec(row.workflow)
        now = schedule.at(self.clock.now())
        wid = workflow_id or f"schedule:{name}@trigger:{now.isoformat()}"
        return self.start_workflow(spec, now, workflow_id=wid)

    def backfill_schedule(self, name: str, start: datetime, end: datetime) -> list[WorkflowHandle[Any]]:
        """Start the schedule's workflow for every slot in [start, end) (aware
        datetimes), each with its slot's usual id ``schedule:<name>@<slot>``:
        a slot that already ran (or was already backfilled) is not run again,
        its existing workflow's handle is returned. Returns one handle per
        slot, in slot order. Progress is unchanged; paused schedules can be
        backfilled. UsageError for a naive datetime, ``end`` before
        ``start``, or more than 10,000 slots (nothing is started);
        ScheduleNotFoundError if there is no such schedule.
        """
        name = self._schedule_call("backfill_schedule", name)
        for what, value in (("start", start), ("end", end)):
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise errors.UsageError(
                    f"backfill_schedule {what} must be an aware datetime (with a tzinfo), not {value!r}"
                )
        if end < start:
            raise errors.UsageError(f"backfill_schedule: end ({end}) is before start ({start})")
        row = self._schedule_row(name)
        schedule = Schedule(name, row.cron, row.workflow, row.missed, row.tz)
        spec = self.spec(row.workflow)
        slots = schedule.slots_between(start.timestamp(), end.timestamp())
        return [self.start_workflow(spec, schedule.at(slot), workflow_id=schedule.slot_id(slot)) for slot in slots]

    def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the database, by name (``ScheduleInfo``)."""
        _not_in_workflow("list_schedules")
        self.check_open()
        now = self.clock.now()
        return [schedule_info(row, now) for row in self.store.schedules()]

    # -- running --------------------------------------------------------------------

    def kick(self) -> None:
        """Start the runner, or make it look again (holding ``lock``); a
        client's engine runs none."""
        runner = self.runner
        if not self.runs:
            return
        if runner is None:
            runner = self.runner = ScheduleRunner(self, self.journal)
            runner.start()
        else:
            runner.kick()

    def open(self, journal: Journal) -> None:
        """At each open: the journal schedule changes and the runner write to."""
        self.journal = journal

    def start(self) -> None:
        """At open: write the declared schedules, then fire every schedule's slots."""
        with self.lock:
            self.runs = True
            for schedule in self.declared.values():
                self._write_schedule(schedule)
            if self.declared or self.store.has_schedules():
                self.kick()

    def stop(self) -> None:
        self.runs = False
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
