"""durably's logs: the event table of docs/guides/observability.md (Logging) matches what the code
logs (an AST scan of every log call), every record carries its structured
fields, a workflow ending in ERROR is logged, and steps log nothing at INFO."""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import durably
from durably import _logs

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "durably"
DOC = ROOT / "docs" / "guides" / "observability.md"
LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR", "exception": "ERROR"}


def _loggers(tree: ast.Module) -> dict[str, str]:
    """Module-level ``name = _logs.get("durably.x")``: name -> logger."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if ast.unparse(call.func) == "_logs.get" and isinstance(call.args[0], ast.Constant):
                for target in node.targets:
                    found[ast.unparse(target)] = call.args[0].value
    return found


def _log_calls() -> Iterator[tuple[str, str, str, str]]:
    """(event, logger, level, where) of every log call in durably's source;
    a call that names no event (or logs through another logger) fails."""
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        loggers = _loggers(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner, method = ast.unparse(node.func.value), node.func.attr
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if owner == "logging" and method in (*LEVELS, "log", "getLogger", "critical"):
                assert method == "getLogger" and path.parts[-2:] in (("cli", "__init__.py"), ("durably", "_logs.py")), (
                    f"{where}: log through a durably logger (durably._logs.get), not logging.{method}"
                )
                continue
            if owner not in loggers:
                continue
            assert method in LEVELS, f"{where}: {owner}.{method}: use debug/info/warning/error/exception"
            extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
            assert (
                isinstance(extra, ast.Call)
                and ast.unparse(extra.func) in ("_logs.fields", "_logs.many")
                and isinstance(extra.args[0], ast.Constant)
            ), f"{where}: a log call needs extra=_logs.fields('<event>', ...) naming its event"
            reserved = set(vars(logging.LogRecord("n", 0, "", 0, "", (), None))) | {"message", "asctime"}
            clash = {k.arg for k in extra.keywords} & reserved
            assert not clash, f"{where}: extra field(s) {clash} would overwrite LogRecord attributes (logging raises)"
            yield extra.args[0].value, loggers[owner], LEVELS[method], where


def _table() -> set[tuple[str, str, str]]:
    text = DOC.read_text()
    section = text[text.index("Every event logged") :]
    rows = re.findall(r"^\| `([\w.]+)` \| `([\w.]+)` \| (\w+) \| .+ \|$", section, re.M)
    return set(rows)


def test_every_log_call_has_a_row_and_every_row_a_log_call() -> None:
    calls = list(_log_calls())
    assert len(calls) >= 25  # the scan sees the code's log calls
    in_code = {(event, logger, level) for event, logger, level, _where in calls}
    table = _table()
    assert in_code - table == set(), "log events missing from the table in docs/guides/observability.md"
    assert table - in_code == set(), "rows of docs/guides/observability.md (Logging) that no log call makes"
    assert {logger for _e, logger, _l in in_code} <= set(_logs.LOGGERS)


def test_the_scan_fails_on_a_call_without_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a new log call with an event of its own has no row."""
    extra = SRC / "_zz_probe.py"
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: [*sorted(SRC.glob("**/*.py")), extra])
    real = Path.read_text

    def read(self: Path, *a: object, **k: object) -> str:
        if self == extra:
            return 'from . import _logs\nlog = _logs.get("durably.engine")\nlog.warning("x", extra=_logs.fields("new.one"))\n'
        return real(self)

    monkeypatch.setattr(Path, "read_text", read)
    with pytest.raises(AssertionError, match="missing from the table"):
        test_every_log_call_has_a_row_and_every_row_a_log_call()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    handler = _Records()
    logger = logging.getLogger("durably")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_a_workflow_ending_in_error_logs_a_warning_with_its_fields(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    engine = durably.Engine(str(tmp_path / "t.db"))

    @engine.step()
    def ok() -> int:
        return 1

    @engine.workflow()
    def fails() -> None:
        ok()
        raise ValueError("no such order")

    with engine:
        with pytest.raises(durably.WorkflowFailedError):
            engine.run(fails)
    [rec] = [r for r in records if getattr(r, "durably_event", None) == "workflow.failed"]
    assert rec.levelno == logging.WARNING and rec.name == "durably.workflows"
    assert rec.workflow_name == fails.__durably_workflow__.name  # type: ignore[attr-defined]
    assert rec.workflow_id in rec.getMessage() and "ValueError: no such order" in rec.getMessage()
    assert rec.step_position == 1  # (the durable calls it made)


def test_a_retry_logs_its_workflow_step_and_position(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    engine = durably.Engine(str(tmp_path / "t.db"))
    calls: list[int] = []

    @engine.step(retries=1, initial_delay=0.001)
    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("try again")
        return 7

    @engine.step()
    def first() -> int:
        return 1

    @engine.workflow()
    def wf() -> int:
        return first() + flaky()

    with engine:
        handle = engine.start(wf, workflow_id="retry-1")
        assert handle.result(timeout=10) == 8
    [rec] = [r for r in records if r.levelno >= logging.WARNING]
    assert rec.durably_event == "step.retry" and rec.name == "durably.steps"  # type: ignore[attr-defined]
    assert (rec.workflow_id, rec.step, rec.step_position) == (  # type: ignore[attr-defined]
        "retry-1",
        flaky.__durably_step__.name,  # type: ignore[attr-defined]
        1,
    )


def test_steps_log_nothing_at_info_or_above(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    engine = durably.Engine(str(tmp_path / "t.db"))

    @engine.step()
    def step(i: int) -> int:
        return i

    @engine.workflow()
    def many(n: int) -> int:
        return sum(step(i) for i in range(n))

    with engine:
        assert engine.run(many, 300) == sum(range(300))
    assert [r.getMessage() for r in records if r.levelno >= logging.INFO] == []
    # every durably record carries the fields, whatever its level
    for rec in records:
        assert {"durably_event", "workflow_id", "workflow_name", "step", "step_position"} <= set(vars(rec))
