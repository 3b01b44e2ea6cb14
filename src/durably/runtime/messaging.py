"""Messages and events between workflows (part of the toolkit).

``send`` / ``recv``: a message is consumed in the same transaction that
records the receiving step, so it is delivered exactly once, oldest first
per topic. ``set_event`` / ``get_event``: the latest value per (workflow,
key). Waiters wake on the commit that makes what they wait for visible.
"""

from __future__ import annotations

from typing import Any

from .. import errors
from ..codec import decode_error
from .context import workflow_context
from .toolkit import WAITER, BLOCK, Gen, Toolkit, name_arg, seconds_arg


def _topic(topic: Any) -> str | None:
    return None if topic is None else name_arg(topic, "topic")


class Messaging(Toolkit):
    """``send``/``recv`` and ``set_event``/``get_event`` (a base of ``Engine``)."""

    # -- messages --------------------------------------------------------------------

    def _send(self, workflow_id: Any, message: Any, topic: Any) -> Gen:
        self._check_open()
        dest = name_arg(workflow_id, "send() workflow_id")
        topic = _topic(topic)
        payload = self._codec.encode(message, f"message to workflow {dest!r}")
        ctx = workflow_context()
        if ctx is None:
            yield from self._op(None, None, "send", "send", (dest, topic, payload))
        else:
            pos = ctx.take_position()
            recorded = ctx.replayed(pos, "send")
            if recorded is not None:
                if recorded[1] is not None:
                    raise decode_error(recorded[1])
                return
            yield from self._op(ctx, pos, "send", "send", (dest, topic, payload))
        self._waits.notify(("msg", dest, topic))

    def send(self, workflow_id: str, message: Any, topic: str | None = None) -> None:
        """Deliver ``message`` to workflow ``workflow_id`` (received once, in
        order per topic). Durable before it returns; from inside a workflow it
        is journaled, so a replay does not send it again.
        WorkflowNotFoundError if no such workflow exists."""
        return self._drive(self._send(workflow_id, message, topic), "send")

    async def send_async(self, workflow_id: str, message: Any, topic: str | None = None) -> None:
        return await self._drive_async(self._send(workflow_id, message, topic))

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
        while True:
            self._check_open()  # engine closing: end the wait with NotOpenError
            waiter = yield WAITER, None
            self._waits.add(("event", wid, key), waiter)
            try:
                # A workflow that does not exist yet has no event yet: wait
                # for it, as inside a workflow (it is often about to start).
                rows = self._store.query("SELECT value FROM events WHERE workflow_id = ? AND key = ?", (wid, key))
                if rows and rows[0][0] is not None:
                    return self._decode(rows[0][0], as_type, f"event {key!r}")
                if deadline is not None and self._clock.now() >= deadline:
                    return None
                yield BLOCK, (waiter, deadline)
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
