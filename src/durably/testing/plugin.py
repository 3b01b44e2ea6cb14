"""durably's pytest plugin, loaded by the ``pytest11`` entry point once
durably is installed (or with ``-p durably.testing.plugin``).

Fixtures (none autouse; durably itself is imported only when one is used):

* ``durably_db``: a database path in the test's temporary directory;
* ``durably_engine``: an open Engine on ``durably_db``;
* ``durably_memory_engine``: an open ``Engine(":memory:")``;
* ``durably_clock``: a ``VirtualClock`` (time moves only when told);
* ``durably_virtual_engine``: an open ``Engine(":memory:", clock=durably_clock)``;
* ``durably_client``: a client-mode Engine on ``durably_engine``'s file;
* ``durably_register``: override it to register your workflows with each
  engine above before it opens (a callable taking the engine; the default
  does nothing);
* ``durably_run``: ``durably_run(workflow, *args, **kwargs)`` starts the
  workflow on ``durably_virtual_engine`` and runs it to its end in virtual
  time (``durably.testing.run_virtual``), returning its result;
* ``durably_steps``: ``durably.testing.assert_steps`` bound to
  ``durably_virtual_engine``;
* ``durably_crash``: ``durably_crash.check(workflow, *args, **kwargs)``:
  ``durably.testing.crash_check`` with its files under the test's temporary
  directory; returns the report (``.assert_ok()``, ``.rerun_steps``).

Example::

    def test_reminder(durably_virtual_engine, durably_run, durably_steps):
        @durably_virtual_engine.workflow()
        def remind(days: int) -> str:
            durably_virtual_engine.sleep(days * 86400)
            return "sent"

        assert durably_run(remind, 3) == "sent"   # three days, in microseconds
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .. import Engine
    from ..clock import VirtualClock
    from ._crashcheck import CrashReport


def _opened(engine: Engine, register: Callable[[Engine], Any]) -> Iterator[Engine]:
    register(engine)
    engine.open()
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def durably_register() -> Callable[[Any], Any]:
    """Called with each fixture engine before it opens: override it to
    register the application's workflows there (the default does nothing)."""
    return lambda engine: None


@pytest.fixture
def durably_db(tmp_path: Path) -> str:
    """A database path in the test's temporary directory (not created)."""
    return str(tmp_path / "durably.db")


@pytest.fixture
def durably_engine(durably_db: str, durably_register: Callable[[Any], Any]) -> Iterator[Engine]:
    """An open Engine on a temporary file, closed after the test."""
    from .. import Engine

    yield from _opened(Engine(durably_db), durably_register)


@pytest.fixture
def durably_memory_engine(durably_register: Callable[[Any], Any]) -> Iterator[Engine]:
    """An open ``Engine(":memory:")``, closed after the test."""
    from .. import Engine

    yield from _opened(Engine(":memory:"), durably_register)


@pytest.fixture
def durably_clock() -> VirtualClock:
    """A VirtualClock: sleeps and timeouts end when the test moves it."""
    from ..clock import VirtualClock

    return VirtualClock()


@pytest.fixture
def durably_virtual_engine(durably_clock: VirtualClock, durably_register: Callable[[Any], Any]) -> Iterator[Engine]:
    """An open ``Engine(":memory:", clock=durably_clock)``."""
    from .. import Engine

    yield from _opened(Engine(":memory:", clock=durably_clock), durably_register)


@pytest.fixture
def durably_client(durably_engine: Engine, durably_db: str) -> Iterator[Engine]:
    """A client-mode Engine (starts, sends, reads; never runs a workflow)
    on ``durably_engine``'s file."""
    from .. import Engine

    client = Engine(durably_db, client=True)
    client.open()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def durably_run(durably_virtual_engine: Engine, durably_clock: VirtualClock) -> Callable[..., Any]:
    """``durably_run(workflow, *args, **kwargs)``: its result, run to the end in virtual time."""
    from ._helpers import run_virtual

    def run(workflow: Any, *args: Any, **kwargs: Any) -> Any:
        return run_virtual(durably_virtual_engine, durably_clock, workflow, *args, **kwargs)

    return run


@pytest.fixture
def durably_steps(durably_virtual_engine: Engine) -> Callable[..., Any]:
    """``durably_steps(workflow_id, expected)``: ``assert_steps`` on ``durably_virtual_engine``."""
    from ._helpers import assert_steps

    def check(workflow_id: str, expected: Any, **options: Any) -> Any:
        return assert_steps(durably_virtual_engine, workflow_id, expected, **options)

    return check


class CrashChecker:
    """What the ``durably_crash`` fixture gives: ``check(...)``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0

    def check(self, workflow: Any, *args: Any, **kwargs: Any) -> CrashReport:
        """``durably.testing.crash_check(workflow, *args, **kwargs)``, its
        files under the test's temporary directory."""
        from ._crashcheck import crash_check

        self.count += 1
        workdir = self.workdir / f"crash-{self.count}"
        workdir.mkdir(parents=True)
        return crash_check(workflow, *args, workdir=workdir, **kwargs)


@pytest.fixture
def durably_crash(tmp_path: Path) -> CrashChecker:
    """Crash tests for the test's workflows: ``durably_crash.check(wf, *args)``."""
    return CrashChecker(tmp_path)
