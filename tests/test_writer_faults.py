"""Defence in depth: an unexpected error applying one record fails that
record alone, and a background thread logs a failed round and carries
on (SQLite).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from durably import errors, testing


def _warnings(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("durably") and r.levelno >= level]


# -- defence in depth: an unexpected error in one record -------------------------------


def test_an_unexpected_error_applying_one_record_fails_that_record_alone(make_engine, monkeypatch) -> None:
    from durably.store import _ops

    engine = make_engine()
    real_send = _ops.OPS["send"]

    def send(conn: Any, dest: str, topic: Any, *rest: Any) -> Any:
        if topic == "boom":
            raise RuntimeError("a bug in one record's handler")
        return real_send(conn, dest, topic, *rest)

    monkeypatch.setitem(_ops.OPS, "send", send)

    @engine.step()
    def work(i: int) -> int:
        return i * 2

    @engine.workflow()
    def inbox() -> list[str]:
        return [engine.recv("ok", timeout=30) for _ in range(3)]

    with engine:
        h = engine.start(inbox)
        with pytest.raises(errors.InternalError, match="a bug in one record"):
            engine.send(h.workflow_id, "x", topic="boom")
        for i in range(3):
            engine.send(h.workflow_id, f"m{i}", topic="ok")
        assert h.result(timeout=10) == ["m0", "m1", "m2"]
        assert testing.journal_running(engine)


def test_a_background_thread_logs_a_failed_round_and_carries_on(make_engine, caplog) -> None:
    engine = make_engine()
    fired: list[Any] = []
    failures = [RuntimeError("a transient bug in a round")]

    @engine.workflow()
    def on_slot(slot: Any) -> None:
        fired.append(slot)

    with caplog.at_level(logging.ERROR, logger="durably"), engine:
        engine.schedule("every-second", "* * * * * *", on_slot)
        runner = engine._schedules.runner
        real = runner.run_round

        rounds_after: list[int] = []

        def flaky() -> Any:
            if failures:
                raise failures.pop()
            rounds_after.append(1)
            return real()

        runner.run_round = flaky  # type: ignore[method-assign]
        runner.kick()
        deadline = time.monotonic() + 10
        while len(rounds_after) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not failures and len(rounds_after) >= 2, "the schedule runner died instead of trying again"
        assert runner._thread is not None and runner._thread.is_alive()
        assert any("failed a round" in m for m in _warnings(caplog, logging.ERROR))
