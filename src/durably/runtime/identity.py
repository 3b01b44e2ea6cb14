"""Who an engine is to the store: its executor id, its app version, and
whether it is a client (it starts and reads workflows, never runs one)."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from .._ids import new_id

if TYPE_CHECKING:
    from ..store.contract import StoreContract


class Identity:
    """This engine, as recorded on the workflows it runs and on its executor
    row. ``executor_id`` is made again at each open after the first, and at
    an open in another process than the one that built the engine (an app
    module imported before gunicorn forks its workers), so two workers never
    share one executor id (``renew``). The parts read it at each use."""

    __slots__ = ("executor_id", "app_version", "client", "pid")

    def __init__(self, app_version: str, client: bool) -> None:
        self.app_version = app_version
        self.client = client
        self.executor_id = ""
        self.pid = 0

    def renew(self, store: StoreContract) -> None:
        """A new executor id (each open is a new executor: its row is a new
        registration), told to the store."""
        self.pid = os.getpid()
        self.executor_id = f"{socket.gethostname()}:{self.pid}:{new_id()[-8:]}"
        store.executor = self.executor_id
        store.start_owner = None if self.client else self.executor_id
