"""Default workflow ids: time-ordered UUIDs (version 7, RFC 9562).

Workflow ids key both tables' B-trees. Random (v4) ids scatter every batch
of new rows over the whole index, so each commit rewrites as many pages as
it has rows; time-ordered ids append at the right edge and a batch of 500
steps dirties a handful of pages. Still unique across processes (74 random
bits per millisecond) and a standard UUID string.
"""

from __future__ import annotations

import os
import time


def new_id() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    return uuid_text(value)


def uuid_text(value: int) -> str:
    """``str(uuid.UUID(int=value))`` (the reference; a test pins that they
    agree) without building the UUID: once per workflow start."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
