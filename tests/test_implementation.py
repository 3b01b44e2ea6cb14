"""Which journal is loaded, and who may touch SQLite."""

from __future__ import annotations

import ast
import os
import re
from collections import Counter
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
    """The Engine used to be assembled from mixin bases, and a name defined
    by two of them (a no-op hook in one, the real method in another) worked
    or silently did not depending on their order (queue dispatch stopped when
    two were swapped). Now the Engine holds its parts and inherits from
    none; no part inherits from another (each method has one owner, reached
    through a typed reference); every public method is the Engine's own.
    The lease keeper is built at each open, with that open's journal."""
    import durably
    from durably.queues import QueueManager
    from durably.runtime.coordination import Coordinator
    from durably.runtime.deadlines import Deadlines
    from durably.runtime.lifecycle import Lifecycle
    from durably.runtime.management import Management
    from durably.runtime.messaging import Messaging
    from durably.runtime.runner import Runner
    from durably.runtime.starts import Starter
    from durably.runtime.toolkit import Toolkit
    from durably.schedules import ScheduleManager

    assert durably.Engine.__mro__ == (durably.Engine, object)
    parts = {
        "_runner": Runner,
        "_deadlines": Deadlines,
        "_toolkit": Toolkit,
        "_messaging": Messaging,
        "_queues": QueueManager,
        "_schedules": ScheduleManager,
        "_starts": Starter,
        "_manage": Management,
        "_life": Lifecycle,
    }
    for cls in (*parts.values(), Coordinator):
        assert cls.__mro__ == (cls, object), f"{cls.__name__} inherits {cls.__mro__[1:-1]}"
    engine = durably.Engine(":memory:")
    assert {attr: type(getattr(engine, attr)) for attr in parts} == parts
    assert engine._lease_keeper is None
    with engine:
        assert type(engine._lease_keeper) is Coordinator
    public = [n for n in dir(durably.Engine) if not n.startswith("_")]
    assert [n for n in public if n not in vars(durably.Engine)] == []


def test_no_part_imports_the_engine() -> None:
    """The parts are given what they use, never the Engine: no module but
    the package's ``__init__`` imports ``durably.engine``, not even for
    type checking (it made an import cycle of 5 modules)."""
    importers = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if path.name not in ("engine.py", "__init__.py") and re.search(r"from \.+engine import", path.read_text())
    ]
    assert importers == []


def test_nothing_outside_the_engine_reaches_into_its_private_attributes() -> None:
    """The parts get typed references to what they use (the store, the
    clock, another part, an engine method they are handed) instead of
    ``engine._private`` through an untyped reference (the review counted 46
    such accesses at 8213365, 68 before the composition). What is left: a
    handle takes its engine's runner once, and the demo reads its own
    table."""
    allowed = Counter({"handle.py": 1, "demo.py": 1})
    found: Counter[str] = Counter()
    for path in sorted(SRC.rglob("*.py")):
        if path.name != "engine.py":
            found[str(path.relative_to(SRC))] += len(re.findall(r"engine\._[a-z]", path.read_text()))
    assert +found == allowed
