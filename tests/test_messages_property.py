"""Property: whatever the interleaving of sends, topics and engine restarts,
a receiving workflow gets every message exactly once, in send order per
topic, and nothing is left behind."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import durably
from durably import testing

from .conftest import database

topics = st.sampled_from([None, "a", "b"])
# a plan: each item sends one message on a topic; "restart" closes and reopens the engine
plans = st.lists(st.one_of(topics.map(lambda t: ("send", t)), st.just(("restart", None))), min_size=1, max_size=25)


def _engine(path: str) -> durably.Engine:
    engine = durably.Engine(path, clock=durably.VirtualClock(0.0))

    @engine.workflow(name="inbox")
    def inbox(order: list) -> dict:
        got: dict[str, list] = {}
        for topic in order:
            got.setdefault(str(topic), []).append(engine.recv(topic))
        return got

    return engine


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
@settings(max_examples=30, deadline=None)
@given(plans, st.randoms(use_true_random=False))
def test_messages_exactly_once_in_order_across_restarts(db, plan, rnd) -> None:
    sends = [t for kind, t in plan if kind == "send"]
    order = list(sends)
    rnd.shuffle(order)  # the receiver asks for topics in some other order than they were sent
    with database(db) as path:
        sent: dict[str, list] = {}
        engine = _engine(path).open()
        try:
            engine.start("inbox", order, workflow_id="inbox")
            for i, (kind, topic) in enumerate(plan):
                if kind == "restart":
                    engine.close()
                    engine = _engine(path).open()
                else:
                    engine.send("inbox", i, topic=topic)
                    sent.setdefault(str(topic), []).append(i)
            got = engine.handle("inbox").result(timeout=20)
            assert got == sent
            assert testing.counts(engine)["messages"] == 0
        finally:
            engine.close()
