"""The workloads' evidence ledger: one fsynced record per line, written with
O_APPEND by every worker process.

A SIGKILL can land inside a ``write()`` that crosses a page boundary of the
file (Linux copies page by page and stops on a fatal signal), leaving a torn
record glued to the next process's first one; seen once in 1,450 full-tier
chaos rounds. So each record starts on a fresh line and ends with an end
marker: a record without it was torn by a kill and is dropped (the process
that wrote it died right there, so what it recorded was in flight anyway).
"""

from __future__ import annotations

import os
from pathlib import Path

END = "."


def format_record(*fields: object) -> str:
    return "\n" + "|".join(map(str, (*fields, END))) + "\n"


def write_record(fd: int, *fields: object) -> None:
    os.write(fd, format_record(*fields).encode())
    os.fsync(fd)


def read_ledger(path: Path) -> tuple[list[list[str]], int]:
    """Complete records (their fields, end marker removed) and the number of
    torn ones."""
    records, torn = [], 0
    if not path.exists():
        return records, torn
    for line in path.read_text().splitlines():
        if not line:
            continue
        fields = line.split("|")
        if fields[-1] != END:
            torn += 1
            continue
        records.append(fields[:-1])
    return records, torn
