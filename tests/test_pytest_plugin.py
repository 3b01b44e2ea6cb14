"""The pytest plugin (``durably.testing.plugin``, entry point ``pytest11``):
its fixtures and helpers, used as a user's test suite uses them, in a pytest
run of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import durably

ROOT = Path(__file__).resolve().parents[1]

USER_TESTS = """
import os

import pytest

import durably
from durably import testing


def test_engine_on_a_temporary_file(durably_engine, durably_db):
    @durably_engine.step()
    def hello(name: str) -> str:
        return "hello " + name

    @durably_engine.workflow()
    def greet(name: str) -> str:
        return hello(name)

    assert durably_engine.run(greet, "you") == "hello you"
    assert os.path.exists(durably_db) and testing.backend(durably_engine) == "sqlite"


def test_memory_engine(durably_memory_engine):
    @durably_memory_engine.workflow()
    def answer() -> int:
        return 42

    assert durably_memory_engine.run(answer) == 42


def test_three_days_in_virtual_time(durably_virtual_engine, durably_clock, durably_run, durably_steps):
    engine = durably_virtual_engine
    before = durably_clock.now()

    @engine.step()
    def send(what: str) -> str:
        return "sent " + what

    @engine.workflow()
    def reminder(days: int) -> str:
        engine.sleep(days * 86400)
        return send("reminder")

    assert durably_run(reminder, 3, workflow_id="r-1") == "sent reminder"
    assert durably_clock.now() - before >= 3 * 86400
    durably_steps("r-1", ["sleep", ("send", "sent reminder")])
    with pytest.raises(AssertionError, match="expected"):
        durably_steps("r-1", ["send"])


def test_a_step_error_is_asserted_by_its_class(durably_virtual_engine, durably_steps):
    engine = durably_virtual_engine

    @engine.step()
    def fail() -> None:
        raise KeyError("no")

    @engine.workflow()
    def flow() -> str:
        try:
            fail()
        except KeyError:
            return "caught"
        return "not raised"

    assert engine.run(flow, workflow_id="f-1") == "caught"
    durably_steps("f-1", [("fail", KeyError)])


def test_a_bound_on_virtual_time(durably_virtual_engine, durably_clock):
    engine = durably_virtual_engine

    @engine.workflow()
    def waits_a_year() -> None:
        engine.sleep(400 * 86400)

    with pytest.raises(durably.errors.ResultTimeoutError, match="virtual seconds"):
        testing.run_virtual(engine, durably_clock, waits_a_year, max_virtual=30 * 86400)


@pytest.fixture
def durably_register():
    def register(engine):
        @engine.workflow(name="double")
        def double(x: int) -> int:
            return 2 * x

    return register


def test_a_client_starts_what_the_engine_runs(durably_engine, durably_client):
    handle = durably_client.start("double", 21)
    assert durably_engine.handle(handle.workflow_id).result(timeout=10) == 42


def test_crash_check_in_one_line(durably_crash):
    report = durably_crash.check("tests._crashflows:appending", "x", random_kills=0)
    assert not report.ok and "tests._crashflows.append_line" in report.rerun_steps
    durably_crash.check("tests._crashflows:overwriting", "x", random_kills=0, max_points=1).assert_ok()
"""


def _entry_point_installed() -> bool:
    return any(ep.value == "durably.testing.plugin" for ep in entry_points(group="pytest11"))


def test_the_fixtures_in_a_users_test_suite(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    plugin = [] if _entry_point_installed() else ["-p", "durably.testing.plugin"]
    # The parent's path too: an entry point found here is found there (it is not loaded twice).
    # The durably under test (installed, or this tree's src/ with its extension built in place).
    src = str(Path(durably.__file__).resolve().parents[1])
    path = [src, *os.environ.get("PYTHONPATH", "").split(os.pathsep), str(ROOT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, "-W", "error", "test_user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "7 passed" in proc.stdout


FIXTURES = {
    "durably_register",
    "durably_db",
    "durably_engine",
    "durably_memory_engine",
    "durably_clock",
    "durably_virtual_engine",
    "durably_client",
    "durably_run",
    "durably_steps",
    "durably_crash",
}


def test_the_plugin_defines_its_fixtures_none_autouse() -> None:
    """Loaded in every test run once durably is installed (durably's own
    included): it must not act on tests that do not ask for it."""
    from durably.testing import plugin

    markers = {
        name: value._fixture_function_marker
        for name, value in vars(plugin).items()
        if hasattr(value, "_fixture_function_marker")
    }
    assert set(markers) == FIXTURES
    assert [name for name, marker in markers.items() if marker.autouse] == []
    assert not [name for name in vars(plugin) if name.startswith("pytest_")]  # no hooks


def test_the_entry_point_is_declared() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"durably": "durably.testing.plugin"}
