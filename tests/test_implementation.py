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
    from durably.runtime.calls import DurableCalls
    from durably.runtime.coordination import Coordinator
    from durably.runtime.deadlines import Deadlines
    from durably.runtime.lifecycle import Lifecycle
    from durably.runtime.management import Management
    from durably.runtime.messaging import Messaging
    from durably.runtime.registration import Registrations
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
        "_calls": DurableCalls,
        "_queues": QueueManager,
        "_schedules": ScheduleManager,
        "_starts": Starter,
        "_manage": Management,
        "_life": Lifecycle,
        "_register": Registrations,
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
    the package's ``__init__`` and the ``durably.testing`` package (a user's
    module on top of the public API, which nothing in the engine imports)
    imports ``durably.engine``, not even for type checking (it made an import
    cycle of 5 modules)."""
    importers = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if path.name not in ("engine.py", "__init__.py")
        and path.relative_to(SRC).parts[0] != "testing"
        and re.search(r"from \.+engine import", path.read_text())
    ]
    assert importers == []


def _private_reads(path: Path) -> list[tuple[int, str, str]]:
    """(line, the object read, the private name) of every ``x._name`` read in
    ``path`` (not a dunder; not ``self._name``/``cls._name``, a class's own; not
    a namedtuple's public ``_replace``/``_asdict``/``_fields``; not
    ``os``/``sys`` functions such as ``os._exit``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        if node.attr in {"_replace", "_asdict", "_fields", "_make"}:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls", "os", "sys"}:
            continue
        found.append((node.lineno, ast.unparse(node.value), node.attr))
    return found


def _engine_reads(path: Path) -> int:
    """Reads of ``<...engine>._name``: an Engine's private attributes."""
    count = 0
    for _line, owner, _attr in _private_reads(path):
        if owner.rpartition(".")[2].endswith("engine"):
            count += 1
    return count


def test_nothing_outside_the_engine_reaches_into_its_private_attributes() -> None:
    """The parts get typed references to what they use (the store, the
    clock, another part, an engine method they are handed) instead of
    ``engine._private`` through an untyped reference (the review counted 46
    such accesses at 8213365, 68 before the composition). What is left: a
    handle takes its engine's runner once, the demo reads its own table,
    ``durably.testing`` reads the engine's store and writer (its purpose),
    and the Replayer (and the crash check's child) the application engine's
    runner: its registered workflows, aliases and codec."""
    allowed = Counter({"handle.py": 1, "demo.py": 1, "testing/__init__.py": 2, "testing/_replay.py": 1})
    found: Counter[str] = Counter()
    for path in sorted(SRC.rglob("*.py")):
        if path.name != "engine.py":
            found[str(path.relative_to(SRC))] += _engine_reads(path)
    assert +found == allowed


# What test code may still read of durably's privates, by file: each name
# with the reason no public or ``durably.testing`` read fits. Everything else
# goes through the public API, ``engine.stats()`` and ``durably.testing``.
_STORE_INTERNALS = "the SQLite connections themselves (their PRAGMAs): the store's own settings"
_FAULTS = "a fault injected into the store (crash tests: negative controls with the fence disabled)"
PRIVATE_READS_ALLOWED: dict[str, dict[str, str]] = {
    "tests/test_cli.py": {"_made_by_the_demo": "the demo's guard against a file it did not make"},
    "tests/test_otel.py": {
        attr: "OpenTelemetry's globals are set once per process: the module resets them after (as OTel's own tests do)"
        for attr in ("_TRACER_PROVIDER", "_TRACER_PROVIDER_SET_ONCE", "_METER_PROVIDER", "_METER_PROVIDER_SET_ONCE")
    },
    "tests/test_implementation.py": {"_lease_keeper": "the lease keeper is built at each open (a structural check)"},
    "tests/test_crash_check.py": {
        "_Case": "the crash check's negative control: a recorded step run again, told to its checker (no engine does it)",
        "_kill_case": "the crash check's negative control: a recorded step run again, told to its checker (no engine does it)",
    },
    "tests/test_pytest_plugin.py": {
        "_fixture_function_marker": "pytest's record of a fixture's options (none autouse)"
    },
    "tests/test_replayer.py": {"_select": "a spy on the Replayer's own PostgreSQL session (read-only transactions)"},
    "tests/test_clock.py": {
        "_heap": "cancelled timers do not accumulate in the virtual clock's heap (a leak test)",
        "_clock": "the engine stops the clock thread it started",
        "_thread": "the engine stops the clock thread it started",
    },
    "tests/test_engine.py": {"_store": "PRAGMA synchronous of the writer connection, untouched by SQL steps"},
    "tests/test_store.py": {"_store": _STORE_INTERNALS},
    "tests/test_pg_tx_sandbox.py": {
        "_store": "the writer connection's own session, read between batches",
        "_write_lock": "the writer connection's own session, read between batches",
        "_writer": "the writer connection's own session, read between batches",
    },
    "tests/test_postgres.py": {"_write": "a batch's reply lost on the wire (fault injection)"},
    "tests/test_processes.py": {
        "_store": "counts a watcher's status reads (what a round costs)",
        "_lease_keeper": "two executors' queue claims driven by hand, in a set order",
        "_journal": "two executors' queue claims driven by hand, in a set order",
    },
    "tests/test_queues.py": {"_queues": "the check that refuses another engine's queue"},
    "tests/test_replay_concurrency.py": {
        "_queues": "close() slowed between deciding and interrupting (a race made certain)",
        "_closing": "a step that holds until close() has begun",
        "_tick": "the outcome gate's turn of the loop, driven by hand (which ready callbacks count as settled)",
    },
    "tests/test_results.py": {"_runner": "the waiters' table stays small (a leak test)"},
    "tests/test_schedule_management.py": {
        "_schedules": "no runner thread before a schedule; a schedule row written as an older version did"
    },
    "tests/test_writer_faults.py": {
        "_schedules": "a round of the schedule runner fails once, and its thread carries on",
        "_thread": "a round of the schedule runner fails once, and its thread carries on",
    },
    "crashtests/mp_workload.py": {
        name: _FAULTS for name in ("_store", "_fence", "_lost_to_a_race", "_lone_step", "_committed", "_runner")
    }
    | {"_journal": "a child process polls its writer's failure to exit with it"},
    "crashtests/test_pg_process_crashes.py": {
        "_fence": _FAULTS,
        "_crash_spec": "a subclass of the driver extends its crash points",
        "_LONE_STEP": "the lone step's statement, recognised to lose its reply after it ran",
    },
    "crashtests/test_process_crashes.py": {
        "_store": "the fence lock's key, to hold it from another connection (a frozen-writer check)"
    },
    "crashtests/vfs.py": {"_rollback_unsynced": "the fault VFS's own file objects"},
}


def test_test_code_reads_no_private_attribute_outside_its_allow_list() -> None:
    """Tests read the database through ``engine.stats()`` and
    ``durably.testing`` (named reads, both backends), not
    ``engine._store.query(SQL)`` on durably's tables (the review counted 32
    such reads), so a change of schema changes one module, not the tests.
    The check is by syntax (``ast``): every ``x._name`` read in test code is
    either in ``PRIVATE_READS_ALLOWED`` with its reason, or a failure; an
    entry no longer used fails too, so the list only shrinks."""
    root = Path(__file__).resolve().parent.parent
    files = sorted([*root.joinpath("tests").rglob("*.py"), *root.joinpath("crashtests").rglob("*.py")])
    assert len(files) > 40, "the scan found too few test files: it is not looking at the suites"
    unexpected, used = [], set()
    for path in files:
        rel = path.relative_to(root).as_posix()
        allowed = PRIVATE_READS_ALLOWED.get(rel, {})
        for line, owner, attr in _private_reads(path):
            if attr in allowed:
                used.add((rel, attr))
            else:
                unexpected.append(f"{rel}:{line}: {owner}.{attr}")
    assert unexpected == [], "use engine.stats() or durably.testing (or add a reason here): " + "; ".join(unexpected)
    stale = {(f, a) for f, names in PRIVATE_READS_ALLOWED.items() for a in names} - used
    assert stale == set()
