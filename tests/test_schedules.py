"""Cron schedules: one workflow per slot with the slot time, no slot twice
(even when the slot's progress record is lost), missed-slot policies."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import apsw
import pytest

import durably
from durably import errors

T0 = datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp()


def _build(make_engine, clock, fired: list, missed: str = "latest"):
    engine = make_engine(clock=clock)

    @engine.workflow(name="tick")
    def tick(slot: datetime) -> str:
        fired.append(slot)
        return slot.isoformat()

    engine.schedule("five", "*/5 * * * *", tick, missed=missed)
    return engine


def _settle(engine, count: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while len(engine.list_workflows(status="SUCCESS", limit=10_000)) < count:
        assert time.monotonic() < end, "schedule did not fire"
        time.sleep(0.01)
    time.sleep(0.05)  # nothing more may fire


def _slot(minute: int, hour: int = 0) -> datetime:
    return datetime(2027, 1, 1, hour, minute, tzinfo=UTC)


def test_each_slot_fires_once_with_its_time(make_engine) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = _build(make_engine, clock, fired)
    with engine:
        for _ in range(3):
            time.sleep(0.05)
            clock.advance(300)
        _settle(engine, 3)
        assert fired == [_slot(5), _slot(10), _slot(15)]
        assert engine.handle("schedule:five@2027-01-01T00:05:00+00:00").result(timeout=5) == "2027-01-01T00:05:00+00:00"


@pytest.mark.parametrize(
    "missed, expected",
    [
        ("all", [_slot(m) for m in range(5, 60, 5)] + [_slot(0, 1)]),
        ("latest", [_slot(0, 1)]),
        ("skip", []),
    ],
)
def test_missed_slots_follow_the_policy(make_engine, db_path, missed, expected) -> None:
    clock, fired = durably.VirtualClock(T0), []
    engine = _build(make_engine, clock, fired, missed)
    with engine:
        _settle(engine, 0)
    clock.advance(3600 + 60)  # down for an hour: slots 00:05 ... 01:00 missed
    engine2 = _build(make_engine, clock, fired, missed)
    with engine2:
        _settle(engine2, len(expected))
    assert fired == expected


@pytest.mark.sqlite_only
def test_no_slot_fires_twice_when_its_progress_record_is_lost(make_engine, db_path) -> None:
    """Crash between starting a slot's workflow and recording the slot: the
    slot is computed again at the next open, and its workflow id (the slot)
    makes the second start return the first workflow."""
    clock, fired = durably.VirtualClock(T0), []
    engine = _build(make_engine, clock, fired, missed="all")
    with engine:
        time.sleep(0.05)
        clock.advance(600)
        _settle(engine, 2)
    conn = apsw.Connection(db_path)
    conn.execute("UPDATE schedules SET last_slot = ?", (T0,))  # as if that write was lost
    conn.close()
    engine2 = _build(make_engine, clock, fired, missed="all")
    with engine2:
        time.sleep(0.2)
        _settle(engine2, 2)
        assert len(engine2.list_workflows(limit=100)) == 2
    assert fired == [_slot(5), _slot(10)]


@pytest.mark.parametrize(
    "kw",
    [
        {"cron": "every minute"},
        {"cron": "61 * * * *"},
        {"cron": ""},
        {"cron": None},
        {"missed": "some"},
        {"name": ""},
    ],
)
def test_bad_schedules_are_refused(make_engine, kw) -> None:
    engine = make_engine(clock=durably.VirtualClock(T0))

    @engine.workflow(name="tick")
    def tick(slot: datetime) -> None:
        pass

    args = {"name": "s", "cron": "* * * * *", "workflow": tick, "missed": "latest", **kw}
    with pytest.raises(errors.UsageError):
        engine.schedule(args["name"], args["cron"], args["workflow"], missed=args["missed"])


def test_schedule_needs_a_registered_workflow(make_engine) -> None:
    engine = make_engine(clock=durably.VirtualClock(T0))
    with pytest.raises(errors.UsageError):
        engine.schedule("s", "* * * * *", print)
