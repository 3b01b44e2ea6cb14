"""Test helpers over the public API and the named reads: run a workflow to
its end in virtual time, and assert the steps it recorded."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .. import errors
from ..clock import VirtualClock
from ..store._inspect import StoredStep


class Waitable(Protocol):
    """What ``finish`` needs of a handle."""

    @property
    def workflow_id(self) -> str: ...

    def result(self, timeout: float | None = None) -> Any: ...


# Rows that mark when an async workflow's outcome arrived, not a call it made.
MARKS = ("wake", "join")


def run_virtual(
    engine: Any,
    clock: VirtualClock,
    workflow: Callable[..., Any] | str,
    *args: Any,
    max_virtual: float = 366 * 86400.0,
    timeout: float = 30.0,
    workflow_id: str | None = None,
    **kwargs: Any,
) -> Any:
    """Start ``workflow(*args, **kwargs)`` on ``engine`` (opened with
    ``clock=clock``) and run it to its end in virtual time: whenever it waits,
    jump the clock to the next timer (a sleep, a receive timeout, a retry's
    backoff, a deadline). Returns its result (raises as ``handle.result()``
    does). Gives up with ResultTimeoutError once the clock would pass
    ``max_virtual`` seconds after the start, or after ``timeout`` real
    seconds: a workflow that waits for ever (a ``recv`` nobody sends to)
    fails the test instead of hanging it."""
    handle = engine.start(workflow, *args, workflow_id=workflow_id, **kwargs)
    return finish(handle, clock, max_virtual=max_virtual, timeout=timeout)


def finish(handle: Waitable, clock: VirtualClock, *, max_virtual: float = 366 * 86400.0, timeout: float = 30.0) -> Any:
    """``run_virtual`` for a workflow already started: its result."""
    limit = clock.now() + max_virtual
    deadline = time.monotonic() + timeout
    while True:
        try:
            return handle.result(timeout=0.005)
        except errors.ResultTimeoutError:
            if time.monotonic() > deadline:
                raise
        upcoming = clock.next_timer()
        if upcoming is not None and upcoming > limit:
            raise errors.ResultTimeoutError(
                f"workflow {handle.workflow_id!r} still waits {max_virtual} virtual seconds after it started "
                f"(its next timer is {upcoming - limit + max_virtual:.0f} s after the start)",
                workflow_id=handle.workflow_id,
                timeout=max_virtual,
            )
        clock.advance_to_next()


def decoded(raw: Any) -> Any:
    """A stored value as Python: JSON text parsed, pickle bytes unpickled
    (the test's own database)."""
    if raw is None:
        return None
    if isinstance(raw, memoryview):
        return pickle.loads(raw.tobytes())
    if isinstance(raw, (bytes, bytearray)):
        return pickle.loads(raw)
    return json.loads(raw)


def _matches(name: str, expected: str) -> bool:
    return name == expected or name.endswith("." + expected)


def _check(row: StoredStep, expected: Any) -> bool:
    if isinstance(expected, str):
        return _matches(row.name, expected)
    name, outcome = expected
    if not _matches(row.name, name):
        return False
    if isinstance(outcome, type) and issubclass(outcome, BaseException):
        names = (outcome.__name__, outcome.__qualname__, f"{outcome.__module__}.{outcome.__qualname__}")
        return row.error is not None and decoded(row.error).get("type") in names
    return row.error is None and decoded(row.output) == outcome


def assert_steps(engine: Any, workflow_id: str, expected: Sequence[Any], *, marks: bool = False) -> list[StoredStep]:
    """Assert the steps ``workflow_id`` recorded, in position order: each
    expected item is a step name (its full name, or the end after a dot:
    ``"charge"`` matches ``"shop.charge"``) or ``(name, outcome)``, outcome
    the value it returned (as decoded from the journal) or the exception
    class it raised. Toolkit calls count (``"sleep"``, ``"now"``,
    ``"send"``, ``"start:<child>"``...); an async workflow's ``wake`` and
    ``join`` marks are left out unless ``marks``. Returns the rows."""
    from . import steps

    rows = [r for r in steps(engine, workflow_id) if marks or r.name not in MARKS]
    ok = len(rows) == len(expected) and all(_check(r, e) for r, e in zip(rows, expected, strict=False))
    if not ok:
        got = "\n".join(
            f"  {r.position}: {r.name} -> {'error ' + str(decoded(r.error).get('type')) if r.error else r.output}"
            for r in rows
        )
        raise AssertionError(f"workflow {workflow_id!r} recorded:\n{got}\nexpected:\n  {list(expected)!r}")
    return rows
