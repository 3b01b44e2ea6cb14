"""Messages and events between workflows (part of the toolkit).

``send`` / ``recv``: a message is consumed in the same transaction that
records the receiving step, so it is delivered exactly once, oldest first
per topic. A client send may carry an idempotency key, committed with the
message, so a retried call delivers nothing new; ``send_many`` delivers a
batch all or none. ``set_event`` / ``get_event`` / ``get_all_events``: the
latest value per (workflow, key). Waiters wake on the commit that makes what
they wait for visible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import msgspec

from .. import errors
from .._names import check_optional
from ..codec import JsonCodec
from .context import current, workflow_context
from .toolkit import BLOCK, WAITER, Gen, Toolkit, name_arg, replayed_outcome, seconds_arg

Message = tuple[str, str | None, Any]  # (destination, topic, encoded payload): what the store inserts


def _entry(given: object) -> Sequence[Any] | None:
    """One item of send_many(): a tuple or a list, else None."""
    return cast("Sequence[Any]", given) if isinstance(given, (tuple, list)) else None


def _topic(topic: Any) -> str | None:
    return None if topic is None else name_arg(topic, "topic")


def _pack_json(rows: list[tuple[str, Any]]) -> str:
    # The stored values are JSON texts already: embed them as they are, so
    # the recorded step reads {"stage": 2, ...} with json_extract.
    return msgspec.json.encode({key: msgspec.Raw(value) for key, value in rows}).decode()


_RAW_MAP = msgspec.json.Decoder(dict[str, msgspec.Raw])


class Messaging:
    """``send``/``send_many``/``recv`` and ``set_event``/``get_event``/``get_all_events``
    as toolkit primitives (a part of ``Engine``, built on its ``Toolkit``):
    each method returns the generator the engine's public method drives."""

    __slots__ = ("kit",)

    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def journaled(self, op: str, args: tuple[Any, ...]) -> Gen:
        """Run the store op ``op``: outside a workflow a plain client call;
        inside, one step named ``op`` whose recorded outcome a replay returns
        (or raises) instead of running it again."""
        ctx = workflow_context()
        if ctx is None:
            return (yield from self.kit.op(None, None, op, op, args))
        pos = ctx.take_position()
        recorded = ctx.replayed(pos, op)
        if recorded is not None:
            return replayed_outcome(recorded)
        return (yield from self.kit.op(ctx, pos, op, op, args))

    # -- messages --------------------------------------------------------------------

    def send(self, workflow_id: Any, message: Any, topic: Any, idempotency_key: Any = None) -> Gen:
        """Deliver ``message`` to workflow ``workflow_id`` (received once, in
        order per topic). Durable before it returns; from inside a workflow it
        is journaled, so a replay does not send it again.
        WorkflowNotFoundError if no such workflow exists.

        ``idempotency_key`` (outside workflow code: a client, a step body):
        the key commits in the same transaction as the message, so a second
        send with the same key to the same workflow delivers nothing and
        returns normally, across restarts, even after the first message was
        received. Keys are global to the database file: a key already used
        for another destination raises UsageError (nothing is delivered).
        The first send wins: a retry's message and topic are not compared.
        In workflow code it raises UsageError (sends there are exactly-once
        already)."""
        self.kit.check_open()
        dest = name_arg(workflow_id, "send() workflow_id")
        topic = _topic(topic)
        key = check_optional(idempotency_key, "send() idempotency_key")
        ctx = workflow_context()
        if ctx is not None and key is not None:
            raise errors.UsageError(
                "send(idempotency_key=...) is for sends from outside a workflow: in workflow code a send "
                "is journaled and happens exactly once already (a replay does not repeat it). Drop the key; "
                "to make the whole operation idempotent, start the workflow with workflow_id=<your key>"
            )
        payload = self.kit.codec.encode(message, f"message to workflow {dest!r}")
        yield from self.journaled("send", (dest, topic, payload, key))
        self.kit.waits.notify(("msg", dest, topic))

    def _messages(self, messages: Any) -> list[Message]:
        if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, Iterable):
            kind = type(cast(object, messages)).__name__
            raise errors.UsageError(
                f"send_many() takes an iterable of (workflow_id, message[, topic]) tuples, not {kind}"
            )
        out: list[Message] = []
        for i, given in enumerate(cast("Iterable[object]", messages)):
            item = _entry(given)
            if item is None or len(item) not in (2, 3):
                raise errors.UsageError(
                    f"send_many() item {i} must be a (workflow_id, message) or (workflow_id, message, topic) "
                    f"tuple, not {repr(given)[:80]}"
                )
            dest = name_arg(item[0], f"send_many() item {i} workflow_id")
            topic = _topic(item[2] if len(item) == 3 else None)
            out.append((dest, topic, self.kit.codec.encode(item[1], f"message {i} to workflow {dest!r}")))
        return out

    def send_many(self, messages: Any) -> Gen:
        """Deliver every message of ``messages``, an iterable of
        ``(workflow_id, message)`` or ``(workflow_id, message, topic)``
        tuples, atomically: one transaction, all or nothing (one unknown
        workflow id raises WorkflowNotFoundError and delivers none). Each
        receiver gets its messages in the order given, per topic. Inside a
        workflow the batch is one journaled step (not sent again on replay).
        Every item is checked (names, encoding) before anything is written;
        an empty batch does nothing and records nothing."""
        self.kit.check_open()
        batch = self._messages(messages)  # every item vetted and encoded before anything is queued
        if not batch:
            return
        yield from self.journaled("send_many", (batch,))
        for dest, topic in dict.fromkeys((m[0], m[1]) for m in batch):
            self.kit.waits.notify(("msg", dest, topic))

    def recv(self, topic: Any, timeout: Any, as_type: Any) -> Gen:
        """The next message sent to this workflow on ``topic`` (oldest first),
        waiting up to ``timeout`` seconds (None: forever); None on timeout.
        The timeout's deadline is recorded: it survives restarts. ``type``
        decodes the message into that type (a dataclass, attrs class, Pydantic
        model, msgspec Struct ...), as annotations do for step results; by
        default JSON values."""
        topic = _topic(topic)
        timeout = seconds_arg(timeout, "recv timeout", allow_none=True)
        ctx = workflow_context()
        if ctx is None:
            raise errors.UsageError("recv() is only valid inside a workflow (it consumes that workflow's messages)")
        raw = yield from self.kit.wait_for(
            ctx, f"recv:{topic or ''}", ("msg", ctx.workflow_id, topic), "recv", (ctx.workflow_id, topic), timeout
        )
        return self.kit.decode(raw, as_type, f"message on topic {topic!r}")

    # -- events ----------------------------------------------------------------------

    def set_event(self, key: Any, value: Any) -> Gen:
        """Publish ``value`` under ``key`` for this workflow (latest wins)."""
        key = name_arg(key, "event key")
        ctx = workflow_context()
        if ctx is None:
            outer = current.get()
            if outer is None:
                raise errors.UsageError("set_event() is only valid inside a workflow (events belong to a workflow)")
            # Inside a step body (a long step publishing progress): written
            # now, so waiters see it while the step runs; not a journaled
            # position (the step's outcome covers the body). A body that runs
            # again sets it again: the latest value wins.
            self.kit.mine(outer, "set_event")
            raw = self.kit.codec.encode(value, f"event {key!r} of workflow {outer.workflow_id!r}")
            yield from self.kit.op(None, None, f"set_event:{key}", "set_event", (outer.workflow_id, key, raw))
            self.kit.waits.notify(("event", outer.workflow_id, key))
            return
        raw = self.kit.codec.encode(value, f"event {key!r} of workflow {ctx.workflow_id!r}")
        pos = ctx.take_position()
        if ctx.replayed(pos, f"set_event:{key}") is None:
            yield from self.kit.op(ctx, pos, f"set_event:{key}", "set_event", (ctx.workflow_id, key, raw))
            self.kit.waits.notify(("event", ctx.workflow_id, key))

    def get_event(self, workflow_id: Any, key: Any, timeout: Any, as_type: Any) -> Gen:
        """The latest value workflow ``workflow_id`` published under ``key``,
        waiting up to ``timeout`` seconds for one (None: forever); None on
        timeout. Inside a workflow the value read is journaled. ``type``: as
        for ``recv``."""
        self.kit.check_open()
        wid = name_arg(workflow_id, "get_event() workflow_id")
        key = name_arg(key, "event key")
        timeout = seconds_arg(timeout, "get_event timeout", allow_none=True)
        ctx = workflow_context()
        if ctx is not None:
            raw = yield from self.kit.wait_for(
                ctx, f"get_event:{key}", ("event", wid, key), "get_event", (wid, key), timeout
            )
            return self.kit.decode(raw, as_type, f"event {key!r}")
        deadline = None if timeout is None else self.kit.clock.now() + timeout
        expired = False  # the deadline's timer fired (a backward clock jump does not stretch it)
        while True:
            self.kit.check_open()  # engine closing: end the wait with NotOpenError
            waiter = yield WAITER, None
            self.kit.waits.add(("event", wid, key), waiter)
            try:
                # A workflow that does not exist yet has no event yet: wait
                # for it, as inside a workflow (it is often about to start).
                raw = self.kit.store.read("event", wid, key)
                if raw is not None:
                    return self.kit.decode(raw, as_type, f"event {key!r}")
                if deadline is not None and (expired or self.kit.clock.now() >= deadline):
                    return None
                expired = yield BLOCK, (waiter, deadline)
            finally:
                self.kit.waits.remove(("event", wid, key), waiter)

    def _pack_events(self) -> Callable[[list[tuple[str, Any]]], Any]:
        """How a snapshot of events becomes one stored step output."""
        if isinstance(self.kit.codec, JsonCodec):
            return _pack_json
        encode = self.kit.codec.encode
        return lambda rows: encode(dict(rows), "events")

    def _unpack_events(self, raw: Any) -> list[tuple[str, Any]]:
        if isinstance(self.kit.codec, JsonCodec):
            return [(key, bytes(value)) for key, value in _RAW_MAP.decode(raw).items()]
        return list(self.kit.codec.decoder(Any)(raw).items())

    def get_all_events(self, workflow_id: Any, as_type: Any) -> Gen:
        """The latest value of every event workflow ``workflow_id`` has
        published, as a dict by key (in key order); empty when it has none
        (or does not exist yet). Does not wait. Inside a workflow the
        snapshot read is journaled: a replay returns the recorded one.
        ``type`` decodes every value into that type, as for ``recv``."""
        self.kit.check_open()
        wid = name_arg(workflow_id, "get_all_events() workflow_id")
        if workflow_context() is None:
            rows = self.kit.store.read("all_events", wid)
        else:
            # Live and replayed runs decode the same recorded snapshot.
            rows = self._unpack_events((yield from self.journaled("get_all_events", (wid, self._pack_events()))))
        return {key: self.kit.decode(raw, as_type, f"event {key!r} of workflow {wid!r}") for key, raw in rows}
