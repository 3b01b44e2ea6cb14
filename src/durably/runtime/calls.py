"""The durable calls of workflow code, written once: ``sleep``, ``now``,
``random``, ``uuid4``, ``patched``, ``deprecate_patch``, ``send``, ``recv``
and the events, with their ``_async`` forms.

``Engine.sleep`` and ``Registry.sleep`` are the same call: each hands it to
the ``DurableCalls`` of an engine (the engine its own; a registry the one of
the engine running the calling workflow, or the one open engine it is bound
to). The primitives themselves are the toolkit's (``runtime/toolkit.py``)
and messaging's (``runtime/messaging.py``) generators; this table runs them
with the sync or the async driver.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from .._signatures import documented
from .messaging import Messaging
from .toolkit import Toolkit


def _uuid4() -> str:
    return str(_uuid.uuid4())


class DurableCalls:
    """An engine's durable calls (a part of ``Engine``, shared by the
    registries bound to it), run on its ``Toolkit`` and ``Messaging``."""

    __slots__ = ("kit", "msg")

    def __init__(self, kit: Toolkit, msg: Messaging) -> None:
        self.kit, self.msg = kit, msg

    # -- messages and events (runtime/messaging.py) -----------------------------------

    @documented(Messaging.send)
    def send(
        self, workflow_id: str, message: Any, topic: str | None = None, idempotency_key: str | None = None
    ) -> None:
        self.kit.drive(self.msg.send(workflow_id, message, topic, idempotency_key), "send")

    async def send_async(
        self, workflow_id: str, message: Any, topic: str | None = None, idempotency_key: str | None = None
    ) -> None:
        """``send`` for asyncio code (in an async workflow: ``await ...send_async``)."""
        await self.kit.drive_async(self.msg.send(workflow_id, message, topic, idempotency_key))

    @documented(Messaging.send_many)
    def send_many(self, messages: Iterable[tuple[Any, ...]]) -> None:
        self.kit.drive(self.msg.send_many(messages), "send_many")

    async def send_many_async(self, messages: Iterable[tuple[Any, ...]]) -> None:
        """``send_many`` for asyncio code."""
        await self.kit.drive_async(self.msg.send_many(messages))

    @documented(Messaging.recv)
    def recv(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        return self.kit.drive(self.msg.recv(topic, timeout, type), "recv")

    async def recv_async(self, topic: str | None = None, timeout: float | None = None, type: Any = None) -> Any:
        """``recv`` for async workflows."""
        return await self.kit.drive_async(self.msg.recv(topic, timeout, type), "recv")

    @documented(Messaging.set_event)
    def set_event(self, key: str, value: Any) -> None:
        self.kit.drive(self.msg.set_event(key, value), "set_event")

    async def set_event_async(self, key: str, value: Any) -> None:
        """``set_event`` for async workflows."""
        await self.kit.drive_async(self.msg.set_event(key, value))

    @documented(Messaging.get_event)
    def get_event(self, workflow_id: str, key: str, timeout: float | None = None, type: Any = None) -> Any:
        return self.kit.drive(self.msg.get_event(workflow_id, key, timeout, type), "get_event")

    async def get_event_async(self, workflow_id: str, key: str, timeout: float | None = None, type: Any = None) -> Any:
        """``get_event`` for asyncio code."""
        return await self.kit.drive_async(self.msg.get_event(workflow_id, key, timeout, type), "get_event")

    @documented(Messaging.get_all_events)
    def get_all_events(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        events: dict[str, Any] = self.kit.drive(self.msg.get_all_events(workflow_id, type), "get_all_events")
        return events

    async def get_all_events_async(self, workflow_id: str, type: Any = None) -> dict[str, Any]:
        """``get_all_events`` for asyncio code."""
        events: dict[str, Any] = await self.kit.drive_async(self.msg.get_all_events(workflow_id, type))
        return events

    # -- durable time, values and patches (runtime/toolkit.py) ---------------------------

    @documented(Toolkit.sleep)
    def sleep(self, seconds: float) -> None:
        self.kit.drive(self.kit.sleep(seconds), "sleep")

    async def sleep_async(self, seconds: float) -> None:
        """``sleep`` for async workflows."""
        await self.kit.drive_async(self.kit.sleep(seconds), "sleep")

    def now(self) -> datetime:
        """The current time (UTC); inside a workflow, recorded and replayed."""
        ts = self.kit.drive(self.kit.value("now", self.kit.clock.now, float), "now")
        return datetime.fromtimestamp(ts, UTC)

    async def now_async(self) -> datetime:
        """``now`` for async workflows."""
        ts = await self.kit.drive_async(self.kit.value("now", self.kit.clock.now, float), "now")
        return datetime.fromtimestamp(ts, UTC)

    def random(self) -> float:
        """A float in [0, 1); inside a workflow, recorded and replayed."""
        value: float = self.kit.drive(self.kit.value("random", _random.random, float), "random")
        return value

    async def random_async(self) -> float:
        """``random`` for async workflows."""
        value: float = await self.kit.drive_async(self.kit.value("random", _random.random, float), "random")
        return value

    def uuid4(self) -> str:
        """A random UUID string; inside a workflow, recorded and replayed."""
        value: str = self.kit.drive(self.kit.value("uuid4", _uuid4, str), "uuid4")
        return value

    async def uuid4_async(self) -> str:
        """``uuid4`` for async workflows."""
        value: str = await self.kit.drive_async(self.kit.value("uuid4", _uuid4, str), "uuid4")
        return value

    @documented(Toolkit.patched)
    def patched(self, change: str) -> bool:
        return self.kit.patched(change)

    @documented(Toolkit.deprecate_patch)
    def deprecate_patch(self, change: str) -> bool:
        return self.kit.deprecate_patch(change)
