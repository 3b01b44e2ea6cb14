"""Counts of rare events an engine keeps for its metrics (durably/telemetry.py
reads them in observable counters): plain ints, bumped where the event
happens, never on a step's path."""

from __future__ import annotations


class Counters:
    """Since the engine was made (they outlive an open)."""

    __slots__ = ("recoveries", "takeovers", "fenced", "parked")

    def __init__(self) -> None:
        self.recoveries = 0  # workflows resumed by an open's recovery
        self.takeovers = 0  # workflows taken over from an executor that is gone
        self.fenced = 0  # workflows this executor lost to another (its lease ran out)
        self.parked = 0  # workflows parked: a replay mismatch, an unregistered function, too many recoveries
