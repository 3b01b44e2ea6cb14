"""apsw's Connection and Cursor as the SQLite store's modules name them in
their annotations: apsw's own classes at run time (``Connection is
apsw.Connection``), and for the type checkers the same classes with the
methods durably calls typed without ``collections.abc.Buffer``. apsw's
stubs import that name, which Python 3.11 (the oldest durably supports)
lacks: under 3.11 a checker reads every ``execute`` of apsw's as partially
unknown. A value bound or read is ``Any`` here, as ``None | int | float |
bytes | str`` to SQLite."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import apsw

if TYPE_CHECKING:

    class Cursor(apsw.Cursor):
        def __iter__(self) -> Cursor: ...
        def __next__(self) -> tuple[Any, ...]: ...
        def fetchall(self) -> list[tuple[Any, ...]]: ...

    class Connection(apsw.Connection):
        def execute(
            self,
            statements: str,
            bindings: Any = None,
            *,
            can_cache: bool = True,
            prepare_flags: int = 0,
            explain: int = -1,
        ) -> Cursor: ...
        def executemany(
            self,
            statements: str,
            sequenceofbindings: Iterable[Any],
            *,
            can_cache: bool = True,
            prepare_flags: int = 0,
            explain: int = -1,
        ) -> Cursor: ...
        def pragma(self, name: str, value: Any = None, *, schema: str | None = None) -> Any: ...

else:
    Connection = apsw.Connection
    Cursor = apsw.Cursor

__all__ = ["Connection", "Cursor"]
