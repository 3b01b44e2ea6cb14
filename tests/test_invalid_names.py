"""A surrogate or NUL in any name (workflow id, queue, topic, event key,
schedule, ...) fails that call with InvalidNameError; the writer keeps
going and nothing is written (SQLite).

How each test failed on 8213365 (run there with DURABLY_NO_EXTENSIONS=1; the
error classes it lacked, InvalidNameError, WorkflowInterruptedError and
WorkflowParkedError, stood in by never-raised stubs so that each test could
show the old behaviour instead of an AttributeError):

* surrogate_or_nul_in_a_name (15 calls x 2 values): a surrogate reached the
  batch and UnicodeEncodeError stopped the writer, so the call raised
  JournalStoppedError (workflow id, enqueue id, dedup key, topic, recv topic,
  set_event key, send id); or it raised a raw UnicodeEncodeError from a read
  (handle, cancel, resume, steps and get_event ids, get_event key); or the
  call returned (queue name; schedule name, whose thread then died with
  UnicodeEncodeError). NUL was accepted everywhere: "DID NOT RAISE", or
  WorkflowNotFoundError for the ids of existing-workflow calls.
"""

from __future__ import annotations

from typing import Any

import pytest

import durably
from durably import Status, errors, testing

# -- a bad name fails its call, not the writer -------------------------------------

SURROGATE = "caf\udce9.csv"  # what os.listdir returns for a non-UTF-8 file name
NUL = "a\x00b"

# Each case makes one call that takes a name or an id, with `bad` in it; `c`
# (a _NameCase) has the engine, a running workflow's id, a queue and workflows.
NAME_CASES = {
    "workflow_id": lambda c, bad: c.engine.start(c.noop, workflow_id=bad),
    "enqueue_workflow_id": lambda c, bad: c.queue.enqueue(c.noop, workflow_id=bad),
    "message_topic": lambda c, bad: c.engine.send(c.running, "m", topic=bad),
    "recv_topic_in_a_workflow": lambda c, bad: c.run_inside(lambda: c.engine.recv(bad, timeout=0.01)),
    "event_key_set_in_a_workflow": lambda c, bad: c.run_inside(lambda: c.engine.set_event(bad, 1)),
    "event_key_get": lambda c, bad: c.engine.get_event(c.running, bad, timeout=0.01),
    "queue_name": lambda c, bad: c.engine.queue(bad, concurrency=1),
    "dedup_key": lambda c, bad: c.queue.enqueue(c.noop, dedup_key=bad),
    "schedule_name": lambda c, bad: c.engine.schedule(bad, "* * * * *", c.on_slot),
    "handle_id": lambda c, bad: c.engine.handle(bad),
    "cancel_id": lambda c, bad: c.engine.cancel(bad),
    "resume_id": lambda c, bad: c.engine.resume(bad),
    "steps_id": lambda c, bad: c.engine.steps(bad),
    "get_event_id": lambda c, bad: c.engine.get_event(bad, "k", timeout=0.01),
    "send_id": lambda c, bad: c.engine.send(bad, "m"),
}


class _NameCase:
    def __init__(self, engine: durably.Engine) -> None:
        self.engine = engine
        self.inside: list[BaseException] = []
        self._body: Any = None

        @engine.workflow(name="noop")
        def noop() -> str:
            return "ok"

        @engine.workflow(name="on_slot")
        def on_slot(slot: Any) -> None:
            return None

        @engine.workflow(name="waiter")
        def waiter() -> str:
            engine.set_event("ready", True)
            return engine.recv("go", timeout=60)

        @engine.workflow(name="inside")
        def inside() -> str:
            try:
                self._body()
            except Exception as exc:  # recorded for the test to inspect
                self.inside.append(exc)
            return "ok"

        self.noop, self.on_slot, self.waiter, self._inside = noop, on_slot, waiter, inside
        self.queue = engine.queue("work", concurrency=4)
        self.running = ""

    def run_inside(self, body: Any) -> None:
        """Make the call inside a workflow; re-raise what it raised there."""
        self._body = body
        assert self.engine.run(self._inside) == "ok"
        if self.inside:
            raise self.inside[-1]


def _row_counts(engine: durably.Engine) -> dict[str, int]:
    counts = testing.counts(engine)
    return {table: counts[table] for table in ("workflows", "messages", "events", "queue_entries", "schedules")}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [SURROGATE, NUL], ids=["surrogate", "nul"])
@pytest.mark.parametrize("case", list(NAME_CASES))
def test_a_surrogate_or_nul_in_a_name_raises_invalid_name_error_and_the_writer_keeps_going(
    make_engine, case: str, bad: str
) -> None:
    engine = make_engine()
    c = _NameCase(engine)
    with engine:
        handles = [engine.start(c.waiter, workflow_id=f"waiter-{i}") for i in range(20)]
        for h in handles:  # all 20 are inside their recv now
            assert engine.get_event(h.workflow_id, "ready", timeout=10) is True
        c.running = handles[0].workflow_id
        before = _row_counts(engine)
        with pytest.raises(durably.InvalidNameError) as info:
            NAME_CASES[case](c, bad)
        assert isinstance(info.value, errors.UsageError)
        # nothing was written (but the workflow the call was made in, if any)
        after = _row_counts(engine)
        after["workflows"] -= 1 if "in_a_workflow" in case else 0
        assert after == before
        with pytest.raises(durably.InvalidNameError):
            engine.handle(SURROGATE)
        # the writer did not stop: every unrelated workflow still finishes
        for h in handles:
            engine.send(h.workflow_id, "done", topic="go")
        assert [h.result(timeout=10) for h in handles] == ["done"] * 20
        assert all(h.status() is Status.SUCCESS for h in handles)
        assert engine.run(c.noop) == "ok"
