"""Ctrl-C, KeyboardInterrupt and SystemExit in a workflow or a step: the
caller gets them (or its waiters a typed error), the writer keeps going,
and the next open resumes the workflow (SQLite).

How each test failed on 8213365 (run there with DURABLY_NO_EXTENSIONS=1; the
error classes it lacked, InvalidNameError, WorkflowInterruptedError and
WorkflowParkedError, stood in by never-raised stubs so that each test could
show the old behaviour instead of an AttributeError):

* ctrl_c (6 delays): the child died with JournalStoppedError (KeyboardInterrupt
  inside the lone-step commit stopped the writer): 11 of 12 over two runs;
  the twelfth child hung after the SIGINT (killed after 30 s).
* keyboard_interrupt_or_system_exit in a started workflow: ResultTimeoutError
  after 5 s; called directly: hung (timeout), for KeyboardInterrupt and
  sys.exit alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import durably
from durably import Status

# Child processes import the durably under test (the one this process imported).
SRC = str(Path(durably.__file__).resolve().parents[1])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


# -- Ctrl-C in a workflow called directly -----------------------------------------

_CTRL_C_CHILD = """
import os, signal, sys
import durably

# Ctrl-C raises KeyboardInterrupt even when the test runner ignores SIGINT
# (a runner started in the background by a shell), which the child inherits.
signal.signal(signal.SIGINT, signal.default_int_handler)

path, stop = sys.argv[1], sys.argv[2]
engine = durably.Engine(path)

@engine.step(name="more")
def more(i: int) -> bool:
    if i == 20:
        print("ready", flush=True)
    return not os.path.exists(stop)

@engine.workflow(name="ctrl_c")
def ctrl_c() -> int:
    i = 0
    while more(i):
        i += 1
    return i

with engine:
    ctrl_c()  # runs until the stop file exists: here, until Ctrl-C
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("delay", [0.3, 0.35, 0.4, 0.45, 0.5, 0.55])
def test_ctrl_c_in_a_workflow_called_directly_raises_keyboard_interrupt_and_the_next_open_resumes_it(
    make_engine, db_path, tmp_path, delay: float
) -> None:
    stop = str(tmp_path / "stop")
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_CHILD, db_path, stop],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr, stderr
    assert "JournalStoppedError" not in stderr, stderr
    Path(stop).touch()
    engine = make_engine()

    @engine.step(name="more")
    def more(i: int) -> bool:
        return not os.path.exists(stop)

    @engine.workflow(name="ctrl_c")
    def ctrl_c() -> int:
        i = 0
        while more(i):
            i += 1
        return i

    with engine:  # no WalMissingError, no refusal: the file is fine
        (wid,) = [w.workflow_id for w in engine.list_workflows()]
        result = engine.handle(wid).result(timeout=30)
        steps = engine.steps(wid)  # (read after the end: the resumed run records its last step itself)
        assert result > 20 and result == len(steps) - 1
        assert [s.output for s in steps] == ["true"] * result + ["false"]  # no step lost or run twice
        assert engine.handle(wid).status() is Status.SUCCESS


# -- KeyboardInterrupt and SystemExit in a step -----------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signal_exc", [KeyboardInterrupt, SystemExit])
def test_a_step_raising_keyboard_interrupt_or_system_exit_in_a_started_workflow_gives_waiters_a_typed_error(
    make_engine, signal_exc: type[BaseException]
) -> None:
    raising = [True]
    ran: list[int] = []

    def register(engine: durably.Engine) -> Any:
        @engine.step(name="first")
        def first() -> int:
            ran.append(1)
            return 1

        @engine.step(name="interrupted")
        def interrupted() -> int:
            if raising[0]:
                raise signal_exc()
            return 2

        @engine.workflow(name="interruptible")
        def interruptible() -> int:
            return first() + interrupted()

        return interruptible

    engine = make_engine()
    interruptible = register(engine)
    with engine:
        h = engine.start(interruptible, workflow_id="int-1")
        with pytest.raises(durably.WorkflowInterruptedError):
            h.result(timeout=5)
        assert h.status() is Status.PENDING
    raising[0] = False
    again = make_engine()
    register(again)
    with again:
        assert again.handle("int-1").result(timeout=10) == 3
    assert ran == [1]  # the recorded step did not run again


@pytest.mark.timeout(30)
def test_a_step_raising_keyboard_interrupt_in_a_workflow_called_directly_propagates_to_the_caller(make_engine) -> None:
    raising = [True]

    def register(engine: durably.Engine) -> Any:
        @engine.step(name="ask")
        def ask() -> int:
            if raising[0]:
                raise KeyboardInterrupt
            return 7

        @engine.workflow(name="direct")
        def direct() -> int:
            return ask()

        return direct

    engine = make_engine()
    direct = register(engine)
    with engine:
        with pytest.raises(KeyboardInterrupt):
            direct()
        (info,) = engine.list_workflows()
        assert info.status is Status.PENDING  # resumable, not failed
    raising[0] = False
    again = make_engine()
    register(again)
    with again:
        assert again.handle(info.workflow_id).result(timeout=10) == 7


@pytest.mark.timeout(30)
def test_sys_exit_in_a_step_of_a_workflow_called_directly_propagates_as_system_exit(make_engine) -> None:
    engine = make_engine()

    @engine.step()
    def quit_now() -> None:
        sys.exit(3)

    @engine.workflow()
    def direct() -> None:
        quit_now()

    with engine:
        with pytest.raises(SystemExit) as info:
            direct()
        assert info.value.code == 3
