"""Users' workflows for tests/test_crash_check.py: the crash check imports
this module in its child processes, where every Engine it makes is made on
the check's database (the path below is never opened)."""

from __future__ import annotations

import durably

engine = durably.Engine("never-opened-crashflows.db")
LEDGER = "effects.txt"  # relative: each run's working directory is its case's own


@engine.step()
def append_line(text: str) -> None:
    """Not idempotent: a second run adds a second line."""
    with open(LEDGER, "a") as f:
        f.write(text + "\n")


@engine.step()
def write_line(text: str) -> None:
    """Idempotent: a second run leaves the file as the first did."""
    with open(LEDGER, "w") as f:
        f.write(text + "\n")


@engine.step()
def count_lines() -> int:
    with open(LEDGER) as f:
        return len(f.read().splitlines())


@engine.workflow()
def appending(text: str) -> int:
    append_line(text)
    return count_lines()


@engine.workflow()
def overwriting(text: str) -> int:
    write_line(text)
    return count_lines()


@engine.step()
async def double(x: int) -> int:
    return 2 * x


@engine.workflow()
async def doubling(x: int) -> int:
    y = await double(x)
    await engine.sleep_async(0.01)
    return await double(y)


@engine.workflow()
def parent(text: str) -> int:
    return overwriting(text) + 1  # a child workflow


@engine.workflow()
def failing(text: str) -> None:
    write_line(text)
    raise ValueError(f"no {text}")
