"""Messages: idempotent client sends (``idempotency_key``), atomic batches
(``send_many``), their async forms, and bad input refused with nothing
written; each live and replayed after a restart (both backends)."""

from __future__ import annotations

import asyncio

import pytest

import durably
from durably import errors, testing

T0 = 1_800_000_000.0  # a fixed virtual start time


def _count(engine: durably.Engine, table: str) -> int:
    return testing.counts(engine)[table]


def _build(make_engine, clock, **kw):
    """An engine with an ``inbox`` workflow: receives on each topic of
    ``topics`` in turn and returns what it got."""
    engine = make_engine(clock=clock, **kw)

    @engine.workflow(name="inbox")
    def inbox(topics: list) -> list:
        return [engine.recv(topic) for topic in topics]

    return engine, inbox


# -- send(..., idempotency_key=) ------------------------------------------------------


def test_a_keyed_send_is_delivered_once_however_often_it_is_retried(make_engine) -> None:
    engine, inbox = _build(make_engine, durably.VirtualClock(T0))
    with engine:
        h = engine.start(inbox, [None, None], workflow_id="in")
        engine.send("in", "pay", idempotency_key="req-1")
        engine.send("in", "pay", idempotency_key="req-1")  # the handler, retried: returns normally
        engine.send("in", "other", topic="t", idempotency_key="req-1")  # the first send wins
        engine.send("in", "next", idempotency_key="req-2")
        assert h.result(timeout=10) == ["pay", "next"]
        engine.send("in", "pay", idempotency_key="req-1")  # even once the first was received
        assert _count(engine, "messages") == 0
        assert testing.send_keys(engine) == [("req-1", "in"), ("req-2", "in")]


def test_a_keyed_send_retried_after_a_restart_is_not_delivered_again(make_engine) -> None:
    clock = durably.VirtualClock(T0)
    engine, inbox = _build(make_engine, clock)
    with engine:
        engine.start(inbox, [None, None], workflow_id="in")
        engine.send("in", "first", idempotency_key="req-1")
    engine2, _ = _build(make_engine, clock)
    with engine2:
        assert engine2.recovery.resumed == ["in"]
        engine2.send("in", "first", idempotency_key="req-1")  # the retry, in the next process
        engine2.send("in", "second", idempotency_key="req-2")
        assert engine2.handle("in").result(timeout=10) == ["first", "second"]
        assert _count(engine2, "messages") == 0


def test_an_idempotency_key_names_one_destination(make_engine) -> None:
    """Keys are global to the file: the same key to another workflow is a
    UsageError and delivers nothing; a send that failed records no key."""
    engine, inbox = _build(make_engine, durably.VirtualClock(T0))
    with engine:
        a = engine.start(inbox, [None], workflow_id="a")
        b = engine.start(inbox, [None], workflow_id="b")
        engine.send("a", "for a", idempotency_key="k")
        with pytest.raises(errors.UsageError, match="already used to send to workflow 'a'"):
            engine.send("b", "for b", idempotency_key="k")
        assert [m.dest for m in testing.messages(engine)] in ([], ["a"])  # a may have received it
        # a failed send leaves no key behind: the retry once the workflow exists delivers
        with pytest.raises(errors.WorkflowNotFoundError):
            engine.send("c", "early", idempotency_key="kc")
        assert [k.key for k in testing.send_keys(engine)] == ["k"]
        c = engine.start(inbox, [None], workflow_id="c")
        engine.send("c", "on time", idempotency_key="kc")
        engine.send("b", "for b", idempotency_key="kb")
        assert (a.result(timeout=10), b.result(timeout=10), c.result(timeout=10)) == (["for a"], ["for b"], ["on time"])


def test_a_key_used_elsewhere_is_refused_before_the_destination_is_looked_up(make_engine) -> None:
    """The key's owner decides first, on both backends (PostgreSQL used to
    say WorkflowNotFoundError here while SQLite said UsageError): a key sent
    to workflow 'a' may not send to a workflow that does not exist either."""
    engine, inbox = _build(make_engine, durably.VirtualClock(T0))
    with engine:
        a = engine.start(inbox, [None], workflow_id="a")
        engine.send("a", "for a", idempotency_key="k")
        with pytest.raises(errors.UsageError, match="already used to send to workflow 'a'"):
            engine.send("nobody", "lost", idempotency_key="k")
        assert a.result(timeout=10) == ["for a"]
        assert [k.key for k in testing.send_keys(engine)] == ["k"]


def test_a_send_inside_a_step_body_honours_its_key_across_step_retries(make_engine) -> None:
    """A step body is outside workflow code (it may run more than once): a
    keyed send there is delivered once even when the step is retried."""
    engine, inbox = _build(make_engine, durably.VirtualClock(T0))
    attempts: list[int] = []

    @engine.step(name="notify", retries=2, initial_delay=0)
    def notify(dest: str) -> int:
        engine.send(dest, "hi", idempotency_key=f"notify:{dest}")
        attempts.append(1)
        if len(attempts) < 2:
            raise RuntimeError("flaky after sending")
        return len(attempts)

    @engine.workflow(name="notifier")
    def notifier(dest: str) -> int:
        return notify(dest)

    with engine:
        h = engine.start(inbox, [None], workflow_id="in")
        assert engine.run(notifier, "in") == 2
        assert h.result(timeout=10) == ["hi"]
        assert _count(engine, "messages") == 0


def test_a_key_in_workflow_code_is_refused(make_engine) -> None:
    engine, inbox = _build(make_engine, durably.VirtualClock(T0))

    @engine.workflow(name="keyed")
    def keyed(dest: str) -> str:
        try:
            engine.send(dest, "x", idempotency_key="k")
        except errors.UsageError as exc:
            return "refused: " + str(exc)[:40]
        return "sent"

    with engine:
        engine.start(inbox, [None], workflow_id="in")
        assert engine.run(keyed, "in").startswith("refused: send(idempotency_key=...) is for")
        assert _count(engine, "messages") == 0 and _count(engine, "send_keys") == 0


# -- send_many ---------------------------------------------------------------------


def test_send_many_is_all_or_nothing(make_engine) -> None:
    engine, inbox = _build(make_engine, durably.VirtualClock(T0))
    with engine:
        a = engine.start(inbox, ["t", "t", None], workflow_id="a")
        b = engine.start(inbox, [None], workflow_id="b")
        with pytest.raises(errors.WorkflowNotFoundError) as info:
            engine.send_many([("a", 1, "t"), ("nobody", 2), ("b", 3)])
        assert info.value.workflow_id == "nobody"
        assert _count(engine, "messages") == 0
        # order kept per (receiver, topic), whatever the interleaving in the batch
        engine.send_many([("a", 1, "t"), ("b", "x"), ("a", "plain"), ("a", 2, "t"), ["b", "y"]])
        assert (a.result(timeout=10), b.result(timeout=10)) == ([1, 2, "plain"], ["x"])
        assert [m.payload for m in testing.messages(engine, "b")] == ['"y"']
        engine.send_many([])  # nothing to do
        engine.send_many(m for m in [])


def test_send_many_in_a_workflow_is_one_step_not_repeated_on_replay(make_engine) -> None:
    clock = durably.VirtualClock(T0)

    def build():
        engine, inbox = _build(make_engine, clock)

        @engine.workflow(name="fanout")
        def fanout(dests: list) -> str:
            engine.send_many([(d, f"hello {d}") for d in dests])
            engine.sleep(10)  # the process dies here
            engine.send_many([(d, "bye", "end") for d in dests])
            return "sent"

        return engine, inbox, fanout

    engine, inbox, fanout = build()
    with engine:
        for wid in ("in1", "in2"):
            engine.start(inbox, [None, "end"], workflow_id=wid)
        engine.start(fanout, ["in1", "in2"], workflow_id="out")
        clock.wait_for_timers(1)
    engine2, _, _ = build()
    with engine2:
        clock.wait_for_timers(1)
        clock.advance(10)
        assert engine2.handle("out").result(timeout=10) == "sent"
        assert engine2.handle("in1").result(timeout=10) == ["hello in1", "bye"]
        assert engine2.handle("in2").result(timeout=10) == ["hello in2", "bye"]
        assert [s.name for s in engine2.steps("out")] == ["send_many", "sleep", "send_many"]
        assert _count(engine2, "messages") == 0


def test_send_many_to_an_unknown_workflow_fails_that_step_only(make_engine) -> None:
    engine, inbox = _build(make_engine, durably.VirtualClock(T0))

    @engine.workflow(name="careful")
    def careful() -> str:
        try:
            engine.send_many([("in", 1), ("ghost", 2)])
        except errors.WorkflowNotFoundError as exc:
            return f"missing {exc.workflow_id}"
        return "sent"

    with engine:
        engine.start(inbox, [None], workflow_id="in")
        assert engine.run(careful, workflow_id="c") == "missing ghost"
        step = engine.steps("c")[0]
        assert step.name == "send_many" and step.error is not None
        assert _count(engine, "messages") == 0


# -- async forms ----------------------------------------------------------------------


def test_async_forms(make_engine) -> None:
    clock = durably.VirtualClock(T0)
    engine, inbox = _build(make_engine, clock)

    @engine.workflow(name="async_fanout")
    async def async_fanout(dests: list) -> dict:
        await engine.set_event_async("phase", "sending")
        await engine.send_many_async([(d, "from async") for d in dests])
        await engine.set_event_async("phase", "sent")
        return await engine.get_all_events_async(engine.workflow_id)

    async def main() -> tuple:
        h = await engine.start_async(inbox, [None, None, "t"], workflow_id="in")
        await engine.send_async("in", "keyed", idempotency_key="ak")
        await engine.send_async("in", "keyed", idempotency_key="ak")
        out = await engine.start_async(async_fanout, ["in"], workflow_id="af")
        got_out = await out.result_async()
        await engine.send_many_async([("in", "last", "t")])
        events = await engine.get_all_events_async("af")
        return await h.result_async(), got_out, events

    with engine:
        got, fanout_events, events = asyncio.run(main())
        assert got == ["keyed", "from async", "last"]
        assert fanout_events == events == {"phase": "sent"}
        assert [s.name for s in engine.steps("af")] == [
            "set_event:phase",
            "send_many",
            "set_event:phase",
            "get_all_events",
        ]
        assert _count(engine, "messages") == 0


def test_blocking_forms_in_an_async_workflow_are_refused(make_engine) -> None:
    engine = make_engine(clock=durably.VirtualClock(T0))

    @engine.workflow(name="wrong")
    async def wrong() -> list:
        out = []
        for call in (lambda: engine.send_many([("x", 1)]), lambda: engine.get_all_events("x")):
            try:
                call()
            except errors.UsageError as exc:
                out.append("_async" in str(exc))
        return out

    with engine:
        assert engine.run(wrong) == [True, True]


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda e: e.send("w", 1, idempotency_key=""), errors.InvalidNameError),
        (lambda e: e.send("w", 1, idempotency_key="a\x00b"), errors.InvalidNameError),
        (lambda e: e.send("w", 1, idempotency_key=7), errors.InvalidNameError),
        (lambda e: e.send("w", 1, idempotency_key="k" * 5000), errors.InvalidNameError),
        (lambda e: e.send("w", object(), idempotency_key="k"), errors.SerializationError),
        (lambda e: e.send_many("w"), errors.UsageError),
        (lambda e: e.send_many(5), errors.UsageError),
        (lambda e: e.send_many({"w": 1}), errors.UsageError),
        (lambda e: e.send_many([("w",)]), errors.UsageError),
        (lambda e: e.send_many([("w", 1, None, "extra")]), errors.UsageError),
        (lambda e: e.send_many([("w", 1), "w"]), errors.UsageError),
        (lambda e: e.send_many([("w", 1), ("", 2)]), errors.InvalidNameError),
        (lambda e: e.send_many([("w", 1), ("w\x7f", 2)]), errors.InvalidNameError),
        (lambda e: e.send_many([("w", 1), ("w", 2, 3)]), errors.InvalidNameError),
        (lambda e: e.send_many([("w", 1), ("w", object())]), errors.SerializationError),
        (lambda e: e.get_all_events(""), errors.InvalidNameError),
        (lambda e: e.get_all_events("w\n"), errors.InvalidNameError),
        (lambda e: e.get_all_events(None), errors.InvalidNameError),
    ],
    ids=[
        "empty-key",
        "nul-key",
        "int-key",
        "long-key",
        "unencodable-keyed",
        "str-batch",
        "int-batch",
        "dict-batch",
        "short-item",
        "long-item",
        "str-item",
        "empty-id",
        "control-id",
        "int-topic",
        "unencodable-item",
        "events-empty-id",
        "events-control-id",
        "events-none-id",
    ],
)
def test_bad_input_gets_a_typed_error_and_nothing_is_written(make_engine, call, exc) -> None:
    engine, inbox = _build(make_engine, durably.VirtualClock(T0))
    with engine:
        engine.start(inbox, [None], workflow_id="w")
        with pytest.raises(exc):
            call(engine)
        assert _count(engine, "messages") == 0
        assert _count(engine, "send_keys") == 0
        assert _count(engine, "workflows") == 1


def test_bad_input_in_a_workflow_takes_no_step(make_engine) -> None:
    engine = make_engine(clock=durably.VirtualClock(T0))

    @engine.workflow(name="sloppy")
    def sloppy() -> list:
        out = []
        for call in (
            lambda: engine.send_many([("", 1)]),
            lambda: engine.get_all_events("\x00"),
            lambda: engine.send_many([("x", 1, 2)]),
        ):
            try:
                call()
            except errors.InvalidNameError:
                out.append("InvalidNameError")
        engine.send_many([])  # nothing to send: no step either
        return out

    with engine:
        assert engine.run(sloppy, workflow_id="s") == ["InvalidNameError"] * 3
        assert engine.steps("s") == []
