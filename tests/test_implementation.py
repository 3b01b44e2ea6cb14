"""Which journal is loaded, and who may touch SQLite."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import durably
from durably import journal

from .conftest import expected_implementation

SRC = Path(durably.__file__).parent


def test_compiled_journal_loaded_unless_disabled() -> None:
    assert durably.IMPLEMENTATION == expected_implementation()
    if expected_implementation() == "cython":
        from durably.journal import _journal_c

        assert journal.Journal is _journal_c.Journal
        assert Path(_journal_c.__file__).suffix in (".so", ".pyd")
    else:
        from durably.journal import _journal_py

        assert journal.Journal is _journal_py.Journal


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_store_imports_apsw() -> None:
    store_files = [p for p in SRC.rglob("*.py") if "apsw" in _imports(p)]
    assert store_files, "the scan found no apsw import at all: it is not looking at the package"
    assert all(p.parent.name == "store" for p in store_files), store_files


def test_nothing_imports_stdlib_sqlite3() -> None:
    users = [str(p) for p in SRC.rglob("*.py") if "sqlite3" in _imports(p)]
    assert users == []


def test_compiled_sources_never_call_sqlite_c_api() -> None:
    # apsw embeds its own SQLite: a second copy linked into our extension
    # would break POSIX locking (DESIGN.md section 3).
    sources = list((Path(__file__).resolve().parent.parent / "csrc").glob("*.pyx"))
    assert sources, "csrc/*.pyx not found next to tests/"
    for pyx in sources:
        text = pyx.read_text()
        assert "sqlite3" not in text and "cdef extern" not in text, pyx


def test_crash_points_off_by_default() -> None:
    from durably import _crash

    if not os.environ.get("DURABLY_CRASH_AT") and not os.environ.get("DURABLY_CRASH_LOG"):
        assert _crash.ARMED is False


def test_no_method_is_defined_by_two_parts_of_the_engine() -> None:
    """The Engine's parts are bases; a name defined by two of them (a no-op
    hook in one, the real method in another) would work or silently not
    depending on their order (queue dispatch stopped when two were swapped)."""
    import durably

    bases = durably.Engine.__mro__[:-1]
    names = set().union(*(vars(b).keys() for b in bases))
    twice = {n: [b.__name__ for b in bases if n in vars(b)] for n in names if not n.startswith("__")}
    assert {n: owners for n, owners in twice.items() if len(owners) > 1} == {}
