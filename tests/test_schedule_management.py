"""Managing schedules on an open engine: create, pause, resume, delete,
trigger, backfill, list, redeclare; persistence across restarts; bad input
refused; one bad schedule holds no other back (both backends)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

import durably
from durably import errors

from ._schedules import PARIS, T0, settle, tick_engine


def _slot(minute: int, hour: int = 0) -> datetime:
    return datetime(2027, 1, 1, hour, minute, tzinfo=UTC)


def test_a_schedule_created_while_the_engine_is_open_starts_firing(make_engine) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    with engine:
        assert engine._schedules.runner is None  # no schedule yet: no thread
        engine.schedule("five", "*/5 * * * *", "tick")
        assert [s.name for s in engine.list_schedules()] == ["five"]
        clock.advance(300)
        assert settle(engine, 1) == ["schedule:five@2027-01-01T00:05:00+00:00"]
        assert fired == [_slot(5)]


def test_a_runtime_schedule_keeps_firing_after_a_restart_without_being_declared_again(make_engine) -> None:
    clock, fired = durably.VirtualClock(T0), []
    with tick_engine(make_engine, clock, fired) as engine:
        engine.schedule("five", "*/5 * * * *", "tick", missed="all")
    clock.advance(600)  # down across 00:05 and 00:10
    engine2 = tick_engine(make_engine, clock, fired)  # registers the workflow only
    with engine2:
        assert settle(engine2, 2) == [
            "schedule:five@2027-01-01T00:05:00+00:00",
            "schedule:five@2027-01-01T00:10:00+00:00",
        ]
        clock.advance(300)
        settle(engine2, 3)
    assert sorted(fired) == [_slot(5), _slot(10), _slot(15)]


def test_a_paused_schedule_fires_nothing_and_resuming_skips_the_paused_slots(make_engine) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    with engine:
        engine.schedule("five", "*/5 * * * *", "tick", missed="all")  # even "all" does not catch up
        engine.pause_schedule("five")
        engine.pause_schedule("five")  # pausing a paused schedule does nothing
        (info,) = engine.list_schedules()
        assert info.paused and info.next_slot is None
        clock.advance(600)  # 00:05 and 00:10 fall while paused
        assert settle(engine, 0) == [] and fired == []
        engine.resume_schedule("five")
        (info,) = engine.list_schedules()
        assert not info.paused and info.next_slot == _slot(15)
        assert info.last_slot.timestamp() == T0 + 600  # progress jumped to the resume
        assert settle(engine, 0) == []
        clock.advance(300)
        assert settle(engine, 1) == ["schedule:five@2027-01-01T00:15:00+00:00"]
        engine.resume_schedule("five")  # not paused: nothing changes
        clock.advance(300)
        settle(engine, 2)
    assert fired == [_slot(15), _slot(20)]


def test_paused_survives_a_restart_even_when_the_code_declares_the_schedule_again(make_engine) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    engine.schedule("five", "*/5 * * * *", "tick")
    with engine:
        engine.pause_schedule("five")
    clock.advance(3600)
    engine2 = tick_engine(make_engine, clock, fired)
    engine2.schedule("five", "*/5 * * * *", "tick")
    with engine2:
        assert engine2.list_schedules()[0].paused
        clock.advance(300)
        assert settle(engine2, 0) == []
        engine2.resume_schedule("five")
        clock.advance(300)
        assert settle(engine2, 1) == ["schedule:five@2027-01-01T01:10:00+00:00"]
    assert fired == [_slot(10, hour=1)]


def test_a_deleted_schedule_fires_no_more_and_its_started_workflows_are_kept(make_engine) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    engine.schedule("five", "*/5 * * * *", "tick")
    with engine:
        clock.advance(300)
        settle(engine, 1)
        engine.delete_schedule("five")
        assert engine.list_schedules() == []
        clock.advance(600)
        assert settle(engine, 1) == ["schedule:five@2027-01-01T00:05:00+00:00"]
        with pytest.raises(errors.ScheduleNotFoundError):
            engine.delete_schedule("five")
        # Deleted, the name is free: declared again, with another definition,
        # it starts from now (fresh progress).
        engine.schedule("five", "*/10 * * * *", "tick")
        clock.advance(600)
        assert settle(engine, 2)[-1] == "schedule:five@2027-01-01T00:20:00+00:00"


def test_trigger_runs_the_workflow_now_once_outside_the_slot_sequence(make_engine) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    with engine:
        engine.schedule("five", "*/5 * * * *", "tick")
        engine.pause_schedule("five")  # a paused schedule can be triggered
        h = engine.trigger_schedule("five")
        assert h.workflow_id == "schedule:five@trigger:2027-01-01T00:00:30+00:00"
        assert h.result(timeout=10) == "2027-01-01T00:00:30+00:00"
        # The default id is the engine clock's instant: one run per instant.
        assert engine.trigger_schedule("five").workflow_id == h.workflow_id
        # An explicit id is an idempotency key.
        first = engine.trigger_schedule("five", workflow_id="manual-1")
        clock.advance(10)
        again = engine.trigger_schedule("five", workflow_id="manual-1")
        assert again.workflow_id == "manual-1" and again.result(timeout=10) == first.result(timeout=10)
        assert len(engine.list_workflows(limit=None)) == 2
        # Progress is untouched: once resumed, the next slot fires as usual.
        engine.resume_schedule("five")
        (info,) = engine.list_schedules()
        assert info.next_slot == _slot(5)
        clock.advance(290)
        settle(engine, 3)
    assert fired == [_slot(0) + timedelta(seconds=30), _slot(0) + timedelta(seconds=30), _slot(5)]


def test_backfill_starts_each_slot_of_the_range_once_with_its_usual_id(make_engine) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    engine.schedule("five", "*/5 * * * *", "tick")  # missed="latest"
    with engine:
        clock.advance(600)  # 00:05 and 00:10 due at once: only 00:10 fires
        assert settle(engine, 1) == ["schedule:five@2027-01-01T00:10:00+00:00"]
        handles = engine.backfill_schedule("five", _slot(0), _slot(15))  # [00:00, 00:15)
        ids = [f"schedule:five@2027-01-01T00:{m:02d}:00+00:00" for m in (0, 5, 10)]
        assert [h.workflow_id for h in handles] == ids
        assert [h.result(timeout=10) for h in handles] == [_slot(m).isoformat() for m in (0, 5, 10)]
        assert [h.workflow_id for h in engine.backfill_schedule("five", _slot(0), _slot(15))] == ids
        again = engine.backfill_schedule("five", _slot(1), _slot(10, hour=0) + timedelta(seconds=1))
        assert [h.workflow_id for h in again] == ids[1:]
        assert sorted(w.workflow_id for w in engine.list_workflows(limit=None)) == ids  # nothing duplicated
        assert engine.backfill_schedule("five", _slot(1), _slot(1)) == []
        (info,) = engine.list_schedules()
        assert info.last_slot == _slot(10)  # a backfill leaves progress alone
    assert sorted(fired) == [_slot(0), _slot(5), _slot(10)]


@pytest.mark.parametrize(
    "start, end",
    [
        (datetime(2027, 1, 1), datetime(2027, 1, 2)),  # naive
        (datetime(2027, 1, 2, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),  # end before start
        (T0, T0 + 60),  # not datetimes
        (datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC)),  # 86,400 slots
    ],
    ids=["naive", "reversed", "floats", "too-many"],
)
def test_bad_backfills_are_refused_and_start_nothing(make_engine, start, end) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    with engine:
        engine.schedule("secs", "* * * * * *", "tick")
        engine.pause_schedule("secs")
        with pytest.raises(errors.UsageError):
            engine.backfill_schedule("secs", start, end)
        assert engine.list_workflows(limit=None) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.pause_schedule("nope"),
        lambda e: e.resume_schedule("nope"),
        lambda e: e.delete_schedule("nope"),
        lambda e: e.trigger_schedule("nope"),
        lambda e: e.backfill_schedule("nope", _slot(0), _slot(5)),
    ],
    ids=["pause", "resume", "delete", "trigger", "backfill"],
)
def test_an_unknown_schedule_is_a_typed_error(make_engine, call) -> None:
    engine = tick_engine(make_engine, durably.VirtualClock(T0), [])
    with engine:
        with pytest.raises(errors.ScheduleNotFoundError) as raised:
            call(engine)
    assert raised.value.name == "nope" and isinstance(raised.value, errors.UsageError)


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.pause_schedule("s"),
        lambda e: e.list_schedules(),
        lambda e: e.trigger_schedule("s"),
        lambda e: e.schedule("t", "* * * * *", "tick"),
    ],
    ids=["pause", "list", "trigger", "create"],
)
def test_schedule_management_is_refused_in_workflow_code(make_engine, call) -> None:
    engine = tick_engine(make_engine, durably.VirtualClock(T0), [])

    @engine.workflow(name="manager")
    def manager() -> None:
        call(engine)

    with engine:
        engine.schedule("s", "0 0 1 1 *", "tick")
        with pytest.raises(errors.WorkflowFailedError) as raised:
            engine.run(manager)
        assert isinstance(raised.value.error, errors.UsageError)
        assert not engine.list_schedules()[0].paused


def test_schedule_management_needs_an_open_engine(make_engine) -> None:
    engine = tick_engine(make_engine, durably.VirtualClock(T0), [])
    engine.schedule("s", "* * * * *", "tick")  # declaring before open is fine
    for call in (
        lambda: engine.pause_schedule("s"),
        engine.list_schedules,
        lambda: engine.backfill_schedule("s", _slot(0), _slot(5)),
    ):
        with pytest.raises(errors.NotOpenError):
            call()


def test_list_schedules_gives_typed_info(make_engine) -> None:
    clock = durably.VirtualClock(datetime(2027, 6, 1, 12, 0, tzinfo=UTC))
    engine = tick_engine(make_engine, clock, [])
    with engine:
        engine.schedule("paris", "0 9 * * 1-5", "tick", tz=PARIS, missed="skip")
        engine.schedule("utc", "@hourly", "tick")
        engine.pause_schedule("utc")
        paris, utc = engine.list_schedules()
    assert isinstance(paris, durably.ScheduleInfo)
    assert (paris.name, paris.cron, paris.workflow, paris.tz, paris.missed, paris.paused) == (
        "paris",
        "0 9 * * 1-5",
        "tick",
        PARIS,
        "skip",
        False,
    )
    assert paris.last_slot == datetime(2027, 6, 1, 12, 0, tzinfo=UTC)  # created then, nothing fired yet
    # Tuesday 1 June 2027, 14:00 in Paris: next is Wednesday 09:00 CEST
    assert paris.next_slot.isoformat() == "2027-06-02T09:00:00+02:00"
    assert (utc.tz, utc.paused, utc.next_slot, utc.missed) == (None, True, None, "latest")


def test_redeclaring_replaces_the_definition_and_keeps_progress(make_engine) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    engine.schedule("s", "*/5 * * * *", "tick")
    with engine:
        clock.advance(300)
        settle(engine, 1)
        with pytest.raises(errors.UsageError, match="already declared"):
            engine.schedule("s", "*/10 * * * *", "tick")  # twice in one process
    engine2 = tick_engine(make_engine, clock, fired)
    engine2.schedule("s", "*/10 * * * *", "tick", tz=PARIS)  # a deploy changes it
    with engine2:
        (info,) = engine2.list_schedules()
        assert (info.cron, info.tz, info.last_slot) == ("*/10 * * * *", PARIS, _slot(5))
        clock.advance(300)
        assert settle(engine2, 2)[-1] == "schedule:s@2027-01-01T01:10:00+01:00"


def test_a_schedule_whose_workflow_is_not_registered_waits(make_engine, caplog) -> None:
    clock, fired = durably.VirtualClock(T0), []
    with tick_engine(make_engine, clock, fired) as engine:
        engine.schedule("five", "*/5 * * * *", "tick", missed="all")
    bare = make_engine(clock=clock)  # does not register "tick"
    with bare:
        clock.advance(300)
        time.sleep(0.1)
        assert bare.list_workflows(limit=None) == []
        assert any("not registered" in r.getMessage() for r in caplog.records)
    engine3 = tick_engine(make_engine, clock, fired)  # registers it again: the slot runs
    with engine3:
        assert settle(engine3, 1) == ["schedule:five@2027-01-01T00:05:00+00:00"]


# -- one bad schedule holds no other back (issue 19 item 7) ----------------------------------

NEVER = ["0 0 30 2 *", "0 0 31 4 *", "0 0 1 1 * 0 2020"]  # February 30th, April 31st, a year gone by


@pytest.mark.parametrize("cron", NEVER)
def test_a_cron_expression_that_never_matches_is_refused(make_engine, cron) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    with pytest.raises(errors.UsageError, match="has no slot in the next 50 years"):
        engine.schedule("never", cron, "tick")  # declared before open: refused all the same
    with engine:
        with pytest.raises(errors.UsageError, match="has no slot"):
            engine.schedule("never", cron, "tick")
        assert engine.list_schedules() == []
    # a rare expression is not "never": February 29th
    with tick_engine(make_engine, clock, fired) as engine2:
        engine2.schedule("leap", "0 0 29 2 *", "tick")
        assert engine2.list_schedules()[0].next_slot == datetime(2028, 2, 29, tzinfo=UTC)


def _plant_schedule(engine: durably.Engine, name: str, cron: str) -> None:
    """A schedule row written as an older version would have (schedule()
    now refuses it): straight through the journal, as schedule() writes."""
    from durably import _records as R
    from durably.journal import Record

    engine._schedules.journal.submit(Record(R.WRITE, ("schedule_upsert", (name, cron, "tick", T0, None, "latest"))))


def test_a_stored_schedule_that_never_matches_holds_no_other_back_and_is_listed(make_engine, caplog) -> None:
    """On 785dce3 every round failed on it (CroniterBadDateError), so "five"
    never fired, and list_schedules() raised the croniter error."""
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    with engine:
        _plant_schedule(engine, "a-feb30", "0 0 30 2 *")  # sorts first: a round reads it before "five"
        engine.schedule("five", "*/5 * * * *", "tick")
        clock.advance(300)
        assert settle(engine, 1) == ["schedule:five@2027-01-01T00:05:00+00:00"]
        bad, five = engine.list_schedules()
        assert (bad.name, bad.next_slot, five.next_slot) == ("a-feb30", None, _slot(10))
        clock.advance(300)
        assert settle(engine, 2)[1] == "schedule:five@2027-01-01T00:10:00+00:00"
    assert any("a-feb30" in r.getMessage() and "no slot" in r.getMessage() for r in caplog.records)


def test_a_schedule_whose_workflow_fails_to_start_holds_no_other_back(make_engine, monkeypatch, caplog) -> None:
    """A start that raises (here a stand-in for any failure) is logged with
    the schedule's name and tried again later; the other schedules fire on
    time. On 785dce3 the whole round failed, so "five" never fired."""
    clock, fired = durably.VirtualClock(T0), []
    engine = tick_engine(make_engine, clock, fired)
    real_start = engine._schedules.start_workflow  # how the schedules start their workflows
    broken = [True]

    def start(workflow, *args, **kwargs):
        if broken[0] and kwargs.get("workflow_id", "").startswith("schedule:a-broken@"):
            raise RuntimeError("cannot start this one")
        return real_start(workflow, *args, **kwargs)

    monkeypatch.setattr(engine._schedules, "start_workflow", start)
    with engine:
        engine.schedule("a-broken", "*/5 * * * *", "tick")
        engine.schedule("five", "*/5 * * * *", "tick")
        clock.advance(300)
        assert settle(engine, 1) == ["schedule:five@2027-01-01T00:05:00+00:00"]
        assert any(r.levelname == "ERROR" and "'a-broken'" in r.getMessage() for r in caplog.records)
        broken[0] = False  # mended: its retry (on the engine's clock) fires the slot it missed
        clock.advance(1)
        assert settle(engine, 2)[1] == "schedule:a-broken@2027-01-01T00:05:00+00:00"
