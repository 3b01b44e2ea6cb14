"""Default workflow ids: time-ordered UUIDs (version 7, RFC 9562).

Workflow ids key both tables' B-trees. Random (v4) ids scatter every batch
of new rows over the whole index, so each commit rewrites as many pages as
it has rows; time-ordered ids append at the right edge and a batch of 500
steps dirties a handful of pages. Still unique across processes (74 random
bits per millisecond) and a standard UUID string.

The random bits come from the OS (``os.urandom``), read 4 KiB at a time:
CPython releases the GIL around each ``getrandom()`` call, so one call per
id handed the GIL to the journal's writer at every workflow start, and the
event loop then waited to get it back (about 6 us per start under load,
against 0.4 us for the call itself).
"""

from __future__ import annotations

import os
import threading
import time

_POOL_BYTES = 4096  # 409 ids per read of the OS's random source

_lock = threading.Lock()
_pool = b""
_at = 0


def _random80() -> int:
    """80 random bits from the OS's source, never the same bytes twice."""
    global _pool, _at
    with _lock:
        at = _at
        if at + 10 > len(_pool):  # read by a lock: no other thread takes these bytes meanwhile
            _pool, at = os.urandom(_POOL_BYTES), 0
        _at = at + 10
        chunk = _pool[at : at + 10]
    return int.from_bytes(chunk, "big")


def _forget() -> None:
    """In a forked child: fresh bytes (never the parent's next ids) and a
    fresh lock (the parent's may have been held by another thread)."""
    global _lock, _pool, _at
    _lock, _pool, _at = threading.Lock(), b"", 0


os.register_at_fork(after_in_child=_forget)


def new_id() -> str:
    ms = time.time_ns() // 1_000_000
    rand = _random80()
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    return uuid_text(value)


def uuid_text(value: int) -> str:
    """``str(uuid.UUID(int=value))`` (the reference; a test pins that they
    agree) without building the UUID: once per workflow start."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
