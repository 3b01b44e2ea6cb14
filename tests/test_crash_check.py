"""Crash tests for users' workflows (``durably.testing.crash_check``) on both
backends: a non-idempotent step is found (the negative control), an
idempotent workflow passes, every step boundary is a kill point."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from durably import errors, testing
from durably.testing import _crashcheck

from . import _crashflows as flows


def test_a_non_idempotent_step_is_found(db_path: str, tmp_path: Path) -> None:
    report = testing.crash_check(flows.appending, "hello", db=db_path, random_kills=0, workdir=tmp_path)
    assert report.reference == {"status": "SUCCESS", "output": "1", "error": None}
    assert not report.ok
    [failure] = report.failures
    assert (failure.point, failure.step, failure.position, failure.killed) == (
        "step.after_body",
        "tests._crashflows.append_line",
        "#0",
        True,
    )
    assert failure.rerun == ("tests._crashflows.append_line",)
    assert "'output': '2'" in failure.problems[0]  # its second line reached the result
    with pytest.raises(AssertionError, match=r"killed at step.after_body#1 \(tests._crashflows.append_line at #0\)"):
        report.assert_ok()


def test_an_idempotent_workflow_passes_at_every_step_boundary(db_path: str, tmp_path: Path) -> None:
    report = testing.crash_check(flows.overwriting, "hello", db=db_path, random_kills=1, seed=3, workdir=tmp_path)
    report.assert_ok()
    boundaries = [(p.point, p.step, p.position) for p in report.points[:5]]
    assert boundaries == [
        ("step.before_body", "tests._crashflows.write_line", "#0"),
        ("step.after_body", "tests._crashflows.write_line", "#0"),
        ("step.before_body", "tests._crashflows.count_lines", "#1"),
        ("step.after_body", "tests._crashflows.count_lines", "#1"),
        ("workflow.before_complete", None, None),
    ]
    assert len(report.points) == 6 and all(p.killed for p in report.points)
    # Killed after a body, before its outcome was durable: that body ran again (and only that one).
    assert [p.rerun for p in report.points[:4]] == [
        (),
        ("tests._crashflows.write_line",),
        (),
        ("tests._crashflows.count_lines",),
    ]
    assert report.rerun_steps == ["tests._crashflows.count_lines", "tests._crashflows.write_line"]


@pytest.mark.sqlite_only  # (the same code on PostgreSQL: the two tests above run there; runtime kept small)
def test_an_async_workflow_and_a_child_workflow_by_import_path(db_path: str, tmp_path: Path) -> None:
    doubled = testing.crash_check(
        "tests._crashflows:doubling", 5, db=db_path, random_kills=0, max_points=1, workdir=tmp_path / "a"
    )
    doubled.assert_ok()
    assert doubled.reference["output"] == "20"
    assert [(p.point, p.step) for p in doubled.points] == [
        ("step.before_body", "tests._crashflows.double"),
        ("step.after_body", "tests._crashflows.double"),
        ("workflow.before_complete", None),
    ]
    assert doubled.points[1].rerun == ("tests._crashflows.double",)
    child = testing.crash_check(flows.parent, "x", db=db_path, random_kills=0, max_points=1, workdir=tmp_path / "c")
    child.assert_ok()
    assert child.reference["output"] == "2"
    # The child's first step is the first kill point (the parent's start of it is not a step body).
    assert [p.step for p in child.points] == ["tests._crashflows.write_line", "tests._crashflows.write_line", None]


@pytest.mark.sqlite_only  # (runtime kept small: the outcome comparison is the same code on both)
def test_a_workflow_that_fails_fails_the_same_way_after_each_kill(
    db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative database path: the same file for every run (they run elsewhere)
    report = testing.crash_check(flows.failing, "x", db="relative.db", random_kills=0, max_points=1)
    assert report.reference == {"status": "ERROR", "output": None, "error": {"type": "ValueError", "message": "no x"}}
    report.assert_ok()
    assert len(report.points) == 3 and (tmp_path / "relative.db").exists()


def test_a_workflow_that_cannot_be_imported_is_refused() -> None:
    def local() -> None: ...

    with pytest.raises(errors.UsageError, match="cannot be imported by a child process"):
        testing.crash_check(local)
    with pytest.raises(errors.UsageError, match="failed"):
        testing.crash_check("tests._crashflows:no_such_workflow", random_kills=0)


class _Canned(_crashcheck._Case):
    """A case whose runs are told, not made: the checker's own negative control."""

    def __init__(self, ledger: list[tuple[str, str, str, int]], recorded: set[tuple[str, str]]) -> None:
        self._ledger, self._recorded, self.pids = ledger, recorded, iter([100, 200])

    def run(self, name: str, kill: Any, hits: bool = False) -> tuple[int, str, str, int]:
        pid = next(self.pids)
        if pid == 100:
            return -signal.SIGKILL, "", "", pid
        return 0, '{"status": "SUCCESS", "output": "1", "error": null}', "", pid

    def ledger(self, name: str) -> list[tuple[str, str, str, int]]:
        return self._ledger

    def recorded(self, name: str) -> set[tuple[str, str]]:
        return self._recorded


def test_a_recorded_step_run_again_is_a_failure_of_the_engine() -> None:
    reference = {"status": "SUCCESS", "output": "1", "error": None}
    ran_twice = [("c", "#0", "s", 100), ("c", "#0", "s", 200)]
    recorded = _Canned(ran_twice, {("c", "#0")})  # recorded before the kill, then run again
    point = _crashcheck._kill_case(recorded, "c", "step.before_body", 2, "t", "#1", reference)
    assert not point.ok and point.problems == ("step s (c at #0) ran again after its outcome was recorded",)
    in_flight = _Canned(ran_twice, set())  # not recorded when the process died: allowed, reported
    point = _crashcheck._kill_case(in_flight, "c", "step.after_body", 1, "s", "#0", reference)
    assert point.ok and point.rerun == ("s",)
