"""Putting a finished database file in place, as a backup or a copy does:
under its final name without ever replacing a file there, and durably so."""

from __future__ import annotations

import os
from collections.abc import Callable


def link_into_place(tmp: str, dest: str, taken: Callable[[str], Exception]) -> None:
    """``tmp`` (complete, closed and synced) is also named ``dest``: a hard
    link, which fails if ``dest`` exists (a file that appeared meanwhile is
    never replaced); on a file system without hard links, a rename after a
    check. ``taken(what)`` is the error raised when ``dest`` exists. The new
    name is durable only once its folder is synced (``sync_folder``)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise taken(f"{dest!r} appeared while the copy was being made") from None
    except OSError:  # a file system without hard links
        if os.path.lexists(dest):
            raise taken(f"{dest!r} exists") from None
        os.rename(tmp, dest)


def sync_folder(path: str) -> None:
    """Make the names in ``path``'s folder durable (a new or removed file)."""
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
