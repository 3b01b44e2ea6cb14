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

from collections.abc import Iterable
from typing import Any, Callable

import msgspec

from .. import errors
from .._names import check_optional
from ..codec import JsonCodec
from .context import workflow_context
from .toolkit import WAITER, BLOCK, Gen, Toolkit, name_arg, seconds_arg, replayed_outcome

Message = tuple[str, str | None, Any]  # (destination, topic, encoded payload): what the store inserts


def _topic(topic: Any) -> str | None:
    return None if topic is None else name_arg(topic, "topic")


def _pack_json(rows: list[tuple[str, Any]]) -> str:
    # The stored values are JSON texts already: embed them as they are, so
    # the recorded step reads {"stage": 2, ...} with json_extract.
    return msgspec.json.encode({key: msgspec.Raw(value) for key, value in rows}).decode()


_RAW_MAP = msgspec.json.Decoder(dict[str, msgspec.Raw])


class Messaging(Toolkit):
    """``send``/``send_many``/``recv`` and ``set_event``/``get_event``/``get_all_events``
    (a base of ``Engine``)."""

    def _journaled(self, op: str, args: tuple[Any, ...]) -> Gen:
        """Run the store op ``op``: outside a workflow a plain client call;
        inside, one step named ``op`` whose recorded outcome a replay returns
        (or raises) instead of running it again."""
        ctx = workflow_context()
        if ctx is None:
            return (yield from self._op(None, None, op, op, args))
        pos = ctx.take_position()
        recorded = ctx.replayed(pos, op)
        if recorded is not None:
            return replayed_outcome(recorded)
        return (yield from self._op(ctx, pos, op, op, args))

    # -- messages --------------------------------------------------------------------

    def _send(self, workflow_id: Any, message: Any, topic: Any, idempotency_key: Any = None) -> Gen:
        self._check_open()
        dest = name_arg(workflow_id, "send() workflow_id")
        topic = _topic(topic)
        key = check_optional(idempotency_key, "send() idempotency_key")
        ctx = workflow_context()
        if ctx is not None and key is not None:
            raise errors.UsageError(
                "send(idempotency_key=...) is for sends from outside a workflow: in workflow code a send "
                "is journaled and happens exactly once already (a replay does not repeat it). Drop the key; "
                "to make the whole operation idempotent, start the workflow with workflow_id=<your key>")
        payload = self._codec.encode(message, f"message to workflow {dest!r}")
        yield from self._journaled("send", (dest, topic, payload, key))
        self._waits.notify(("msg", dest, topic))

    def send(self, workflow_id: str, message: Any, topic: str | None = None,
             idempotency_key: str | None = None) -> None:
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
        return self._drive(self._send(workflow_id, message, topic, idempotency_key), "send")

    async def send_async(self, workflow_id: str, message: Any, topic: str | None = None,
                         idempotency_key: str | None = None) -> None:
        return await self._drive_async(self._send(workflow_id, message, topic, idempotency_key))

    def _messages(self, messages: Any) -> list[Message]:
        if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, Iterable):
            raise errors.UsageError(
                f"send_many() takes an iterable of (workflow_id, message[, topic]) tuples, not {type(messages).__name__}")
        out: list[Message] = []
        for i, item in enumerate(messages):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise errors.UsageError(
                    f"send_many() item {i} must be a (workflow_id, message) or (workflow_id, message, topic) "
                    f"tuple, not {repr(item)[:80]}")
            dest = name_arg(item[0], f"send_many() item {i} workflow_id")
            topic = _topic(item[2] if len(item) == 3 else None)
            out.append((dest, topic, self._codec.encode(item[1], f"message {i} to workflow {dest!r}")))
        return out

    def _send_many(self, messages: Any) -> Gen:
        self._check_open()
        batch = self._messages(messages)  # every item vetted and encoded before anything is queued
        if not batch:
            return
        yield from self._journaled("send_many", (batch,))
        for dest, topic in dict.fromkeys((m[0], m[1]) for m in batch):
            self._waits.notify(("msg", dest, topic))

    def send_many(self, messages: Iterable[tuple[Any, ...]]) -> None:
        """Deliver every message of ``messages``, an iterable of
        ``(workflow_id, message)`` or ``(workflow_id, message, topic)``
        tuples, atomically: one transaction, all or nothing (one unknown
        workflow id raises WorkflowNotFoundError and delivers none). Each
        receiver gets its messages in the order given, per topic. Inside a
        workflow the batch is one journaled step (not sent again on replay).
        Every item is checked (names, encoding) before anything is written;
        an empty batch does nothing and records nothing."""
        return self._drive(self._send_many(messages), "send_many")

    async def send_many_async(self, messages: Iterable[tuple[Any, ...]]) -> None:
        return await self._drive_async(self._send_many(messages))

    def _recv(self, topic: Any, timeout: Any, as_type: Any) -> Gen:
        topic = _topic(topic)
        timeout = seconds_arg(timeout, "recv timeout", allow_none=True)
        ctx = workflow_context()
        if ctx is None:
            raise errors.UsageError("recv() is only valid inside a workflow (it consumes that workflow's messages)")
        raw = yield from self._wait_for(ctx, f"recv:{topic or ''}", ("msg", ctx.workflow_id, topic),
                                        "recv", (ctx.workflow_id, topic), timeout)
        return self._decode(raw, as_type, f"message on topic {topic!r}")

    def recv(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        """The next message sent to this workflow on ``topic`` (oldest first),
        waiting up to ``timeout`` seconds (None: forever); None on timeout.
        The timeout's deadline is recorded: it survives restarts. ``type``
        decodes the message into that type (a dataclass, msgspec Struct ...),
        as annotations do for step results; by default JSON values."""
        return self._drive(self._recv(topic, timeout, type), "recv")

    async def recv_async(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        return await self._drive_async(self._recv(topic, timeout, type))

    # -- events ----------------------------------------------------------------------

    def _set_event(self, key: Any, value: Any) -> Gen:
        key = name_arg(key, "event key")
        ctx = workflow_context()
        if ctx is None:
            raise errors.UsageError("set_event() is only valid inside a workflow (events belong to a workflow)")
        raw = self._codec.encode(value, f"event {key!r} of workflow {ctx.workflow_id!r}")
        pos = ctx.take_position()
        if ctx.replayed(pos, f"set_event:{key}") is None:
            yield from self._op(ctx, pos, f"set_event:{key}", "set_event", (ctx.workflow_id, key, raw))
            self._waits.notify(("event", ctx.workflow_id, key))

    def set_event(self, key: str, value: Any) -> None:
        """Publish ``value`` under ``key`` for this workflow (latest wins)."""
        return self._drive(self._set_event(key, value), "set_event")

    async def set_event_async(self, key: str, value: Any) -> None:
        return await self._drive_async(self._set_event(key, value))

    def _get_event(self, workflow_id: Any, key: Any, timeout: Any, as_type: Any) -> Gen:
        self._check_open()
        wid = name_arg(workflow_id, "get_event() workflow_id")
        key = name_arg(key, "event key")
        timeout = seconds_arg(timeout, "get_event timeout", allow_none=True)
        ctx = workflow_context()
        if ctx is not None:
            raw = yield from self._wait_for(ctx, f"get_event:{key}", ("event", wid, key), "get_event", (wid, key), timeout)
            return self._decode(raw, as_type, f"event {key!r}")
        deadline = None if timeout is None else self._clock.now() + timeout
        expired = False  # the deadline's timer fired (a backward clock jump does not stretch it)
        while True:
            self._check_open()  # engine closing: end the wait with NotOpenError
            waiter = yield WAITER, None
            self._waits.add(("event", wid, key), waiter)
            try:
                # A workflow that does not exist yet has no event yet: wait
                # for it, as inside a workflow (it is often about to start).
                raw = self._store.read("event", wid, key)
                if raw is not None:
                    return self._decode(raw, as_type, f"event {key!r}")
                if deadline is not None and (expired or self._clock.now() >= deadline):
                    return None
                expired = yield BLOCK, (waiter, deadline)
            finally:
                self._waits.remove(("event", wid, key), waiter)

    def get_event(self, workflow_id: str, key: str, timeout: float | None = None, type: Any = None) -> Any:
        """The latest value workflow ``workflow_id`` published under ``key``,
        waiting up to ``timeout`` seconds for one (None: forever); None on
        timeout. Inside a workflow the value read is journaled. ``type``: as
        for ``recv``."""
        return self._drive(self._get_event(workflow_id, key, timeout, type), "get_event")

    async def get_event_async(self, workflow_id: str, key: str, timeout: float | None = None,
                              type: Any = None) -> Any:
        return await self._drive_async(self._get_event(workflow_id, key, timeout, type))

    def _pack_events(self) -> Callable[[list[tuple[str, Any]]], Any]:
        """How a snapshot of events becomes one stored step output."""
        if isinstance(self._codec, JsonCodec):
            return _pack_json
        encode = self._codec.encode
        return lambda rows: encode(dict(rows), "events")

    def _unpack_events(self, raw: Any) -> list[tuple[str, Any]]:
        if isinstance(self._codec, JsonCodec):
            return [(key, bytes(value)) for key, value in _RAW_MAP.decode(raw).items()]
        return list(self._codec.decoder(Any)(raw).items())

    def _get_all_events(self, workflow_id: Any, as_type: Any) -> Gen:
        self._check_open()
        wid = name_arg(workflow_id, "get_all_events() workflow_id")
        if workflow_context() is None:
            rows = self._store.read("all_events", wid)
        else:
            # Live and replayed runs decode the same recorded snapshot.
            rows = self._unpack_events((yield from self._journaled("get_all_events", (wid, self._pack_events()))))
        return {key: self._decode(raw, as_type, f"event {key!r} of workflow {wid!r}") for key, raw in rows}

    def get_all_events(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        """The latest value of every event workflow ``workflow_id`` has
        published, as a dict by key (in key order); empty when it has none
        (or does not exist yet). Does not wait. Inside a workflow the
        snapshot read is journaled: a replay returns the recorded one.
        ``type`` decodes every value into that type, as for ``recv``."""
        return self._drive(self._get_all_events(workflow_id, type), "get_all_events")

    async def get_all_events_async(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        return await self._drive_async(self._get_all_events(workflow_id, type))
