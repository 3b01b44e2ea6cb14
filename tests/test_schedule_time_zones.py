"""Schedules in a time zone: slots across daylight saving time changes
(a nonexistent and an ambiguous local time, a backfill across both) and
bad time zones refused (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import durably
from durably import errors

from ._schedules import PARIS, T0, settle, tick_engine


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", 5, "../../etc/passwd", "Europe/Paris\x00"])
def test_a_bad_time_zone_is_refused_and_nothing_is_written(make_engine, tz) -> None:
    engine = tick_engine(make_engine, durably.VirtualClock(T0), [])
    with engine:
        with pytest.raises(errors.UsageError):
            engine.schedule("s", "* * * * *", "tick", tz=tz)
        assert engine.list_schedules() == []


# -- daylight saving time (Europe/Paris, 2027) ---------------------------------------
# Spring forward: Sunday 28 March 2027, 02:00 CET (+01:00) becomes 03:00 CEST
# (+02:00); local times from 02:00 to 02:59 do not exist.
# Fall back: Sunday 31 October 2027, 03:00 CEST becomes 02:00 CET; local times
# from 02:00 to 02:59 happen twice.


def test_a_slot_at_a_nonexistent_local_time_fires_once_at_the_end_of_the_gap(make_engine) -> None:
    clock, fired = durably.VirtualClock(datetime(2027, 3, 27, 23, 0, tzinfo=UTC)), []  # 00:00 CET
    engine = tick_engine(make_engine, clock, fired)
    engine.schedule("paris", "30 2 * * *", "tick", tz=PARIS, missed="all")
    with engine:
        clock.advance(3600)  # 01:00 CET: nothing yet
        assert settle(engine, 0) == []
        clock.advance(3600 - 1)  # 01:59:59 CET
        assert settle(engine, 0) == []
        clock.advance(1)  # 03:00 CEST, the first local time after the gap
        assert settle(engine, 1) == ["schedule:paris@2027-03-28T03:00:00+02:00"]
        clock.advance(3600)  # 04:00 CEST: nothing more that day
        assert settle(engine, 1) == ["schedule:paris@2027-03-28T03:00:00+02:00"]
        clock.advance(22 * 3600 + 30 * 60)  # the next day, back at 02:30 local
        assert settle(engine, 2)[-1] == "schedule:paris@2027-03-29T02:30:00+02:00"
    assert fired == [datetime(2027, 3, 28, 1, 0, tzinfo=UTC), datetime(2027, 3, 29, 0, 30, tzinfo=UTC)]
    assert fired[0].utcoffset() == timedelta(hours=2)  # the workflow gets the local time


def test_a_slot_at_an_ambiguous_local_time_fires_at_both_occurrences(make_engine) -> None:
    clock, fired = durably.VirtualClock(datetime(2027, 10, 30, 22, 0, tzinfo=UTC)), []  # 00:00 CEST
    engine = tick_engine(make_engine, clock, fired)
    engine.schedule("paris", "30 2 * * *", "tick", tz=PARIS, missed="all")
    with engine:
        clock.advance(2.5 * 3600)  # 02:30 CEST, the first 02:30
        assert settle(engine, 1) == ["schedule:paris@2027-10-31T02:30:00+02:00"]
        clock.advance(3600)  # 02:30 CET, the second 02:30, an hour later
        assert settle(engine, 2) == [
            "schedule:paris@2027-10-31T02:30:00+02:00",
            "schedule:paris@2027-10-31T02:30:00+01:00",
        ]
        clock.advance(3600)
        assert len(settle(engine, 2)) == 2
    assert fired == [datetime(2027, 10, 31, 0, 30, tzinfo=UTC), datetime(2027, 10, 31, 1, 30, tzinfo=UTC)]
    assert [f.utcoffset() for f in fired] == [timedelta(hours=2), timedelta(hours=1)]


def test_backfill_across_both_dst_changes_follows_the_same_rule(make_engine) -> None:
    engine = tick_engine(make_engine, durably.VirtualClock(datetime(2027, 12, 1, tzinfo=UTC)), [])
    with engine:
        engine.schedule("paris", "30 2 * * *", "tick", tz=PARIS)
        engine.schedule("half", "*/30 * * * *", "tick", tz=PARIS)
        spring = engine.backfill_schedule("paris", datetime(2027, 3, 27, tzinfo=UTC), datetime(2027, 3, 30, tzinfo=UTC))
        fall = engine.backfill_schedule("paris", datetime(2027, 10, 30, tzinfo=UTC), datetime(2027, 11, 1, tzinfo=UTC))
        gap = engine.backfill_schedule(
            "half", datetime(2027, 3, 28, 0, 0, tzinfo=UTC), datetime(2027, 3, 28, 2, 0, tzinfo=UTC)
        )
    assert [h.workflow_id.split("@")[1] for h in spring] == [
        "2027-03-27T02:30:00+01:00",
        "2027-03-28T03:00:00+02:00",
        "2027-03-29T02:30:00+02:00",
    ]
    assert [h.workflow_id.split("@")[1] for h in fall] == [
        "2027-10-30T02:30:00+02:00",
        "2027-10-31T02:30:00+02:00",
        "2027-10-31T02:30:00+01:00",
    ]
    # Every 30 minutes across the gap: 02:00 and 02:30 (not existing) become one 03:00 slot.
    assert [h.workflow_id.split("@")[1] for h in gap] == [
        "2027-03-28T01:00:00+01:00",
        "2027-03-28T01:30:00+01:00",
        "2027-03-28T03:00:00+02:00",
        "2027-03-28T03:30:00+02:00",
    ]
