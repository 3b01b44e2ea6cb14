"""Events: a snapshot of every event of a workflow (``get_all_events``),
live, replayed from the journal, decoded into a type, with either codec
(both backends)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import durably
from durably import errors

T0 = 1_800_000_000.0  # a fixed virtual start time


@dataclasses.dataclass
class Order:
    id: str
    qty: int


# -- get_all_events -------------------------------------------------------------------


def _publisher(engine: durably.Engine):
    @engine.workflow(name="publisher")
    def publisher() -> None:
        engine.set_event("stage", "started")
        engine.set_event("count", 1)
        engine.set_event("stage", "half")
        engine.set_event("ready", True)
        engine.recv("go")
        engine.set_event("stage", "done")

    return publisher


def test_get_all_events_returns_the_latest_value_of_every_key(make_engine) -> None:
    engine = make_engine(clock=durably.VirtualClock(T0))
    publisher = _publisher(engine)
    with engine:
        h = engine.start(publisher, workflow_id="pub")
        assert engine.get_event("pub", "ready", timeout=10) is True
        events = engine.get_all_events("pub")
        assert events == {"count": 1, "ready": True, "stage": "half"}
        assert list(events) == ["count", "ready", "stage"]  # in key order
        engine.send("pub", None, topic="go")
        h.result(timeout=10)
        assert engine.get_all_events("pub")["stage"] == "done"
        assert engine.get_all_events("not-started-yet") == {}


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_get_all_events_in_a_workflow_replays_the_recorded_snapshot(make_engine, flavour) -> None:
    clock = durably.VirtualClock(T0)

    def build():
        engine = make_engine(clock=clock)
        publisher = _publisher(engine)

        if flavour == "sync":

            @engine.workflow(name="reader")
            def reader(wid: str) -> list:
                snapshot = engine.get_all_events(wid)
                engine.sleep(10)  # the process dies here; the events change meanwhile
                return [snapshot, engine.get_all_events(wid)]
        else:

            @engine.workflow(name="reader")
            async def reader(wid: str) -> list:
                snapshot = await engine.get_all_events_async(wid)
                await engine.sleep_async(10)
                return [snapshot, await engine.get_all_events_async(wid)]

        return engine, publisher, reader

    engine, publisher, reader = build()
    with engine:
        engine.start(publisher, workflow_id="pub")
        assert engine.get_event("pub", "ready", timeout=10) is True
        engine.start(reader, "pub", workflow_id="r")
        clock.wait_for_timers(1)
    engine2, _, _ = build()
    with engine2:
        engine2.send("pub", None, topic="go")
        engine2.handle("pub").result(timeout=10)
        clock.wait_for_timers(1)
        clock.advance(10)
        before, after = engine2.handle("r").result(timeout=10)
        assert before == {"count": 1, "ready": True, "stage": "half"}  # as recorded, not as now
        assert after == {"count": 1, "ready": True, "stage": "done"}
        steps = engine2.steps("r")
        names = [s.name for s in steps if s.name != "wake"]  # async: the end of a sleep is a row too
        assert names == ["get_all_events", "sleep", "get_all_events"]
        assert json.loads(steps[0].output) == before  # the journal stays plain JSON


def test_get_all_events_decodes_into_a_type(make_engine) -> None:
    engine = make_engine(clock=durably.VirtualClock(T0))

    @engine.workflow(name="orders")
    def orders() -> None:
        engine.set_event("o-1", Order("o-1", 1))
        engine.set_event("o-2", Order("o-2", 2))
        engine.recv("go")
        engine.set_event("o-3", {"id": "o-3"})  # qty missing

    @engine.workflow(name="typed_reader")
    def typed_reader(wid: str) -> str:
        events = engine.get_all_events(wid, type=Order)
        assert all(isinstance(v, Order) for v in events.values())
        return ",".join(f"{o.id}x{o.qty}" for o in events.values())

    with engine:
        h = engine.start(orders, workflow_id="o")
        assert engine.get_event("o", "o-2", timeout=10) == {"id": "o-2", "qty": 2}
        assert engine.get_all_events("o", type=Order) == {"o-1": Order("o-1", 1), "o-2": Order("o-2", 2)}
        assert engine.run(typed_reader, "o") == "o-1x1,o-2x2"
        engine.send("o", None, topic="go")
        h.result(timeout=10)
        with pytest.raises(errors.SerializationError, match="o-3"):
            engine.get_all_events("o", type=Order)


def test_get_all_events_with_the_pickle_codec(make_engine) -> None:
    engine = make_engine(clock=durably.VirtualClock(T0), codec="pickle")

    @engine.workflow(name="pub")
    def pub() -> None:
        engine.set_event("tags", {"a", "b"})  # a set: pickle only
        engine.set_event("n", 3)
        engine.recv("go")

    @engine.workflow(name="snap")
    def snap(wid: str) -> dict:
        return engine.get_all_events(wid)

    with engine:
        h = engine.start(pub, workflow_id="p")
        assert engine.get_event("p", "n", timeout=10) == 3
        assert engine.get_all_events("p") == {"n": 3, "tags": {"a", "b"}}
        assert engine.run(snap, "p") == {"n": 3, "tags": {"a", "b"}}
        engine.send("p", None, topic="go")
        h.result(timeout=10)
