"""Workflow and step names (issue 18, item 3): the default name is the same
however the module was loaded, two functions under one name are refused at
registration, and aliases adopt what was recorded under an old name.

On 785dce3 a workflow started by ``python app.py`` was recorded as
``__main__.flow``; the same file imported as ``app`` (a worker, a test, the
CLI) registered ``app.flow`` and left it parked "not registered", and a step
recorded as ``__main__.charge`` parked its workflow on replay under
``app.charge``. The subprocess tests below run real scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import durably
from durably import Status, _names, errors

SRC = str(Path(durably.__file__).resolve().parents[1])

# A durably application: run as a script, as a module, or imported (then
# ``main()`` is called). NAMES_CRASH=1 kills the process in the second step's
# body: the first step's record is durable by then (no speculative
# progress), so the workflow stays PENDING with one recorded step.
# NAMES_OLD=1 names everything as durably did before the fix (explicitly).
APP = textwrap.dedent("""
    import json
    import os

    import durably

    OLD = os.environ.get("NAMES_OLD") == "1"
    engine = durably.Engine(os.environ["NAMES_DB"])


    @engine.step(name="__main__.charge" if OLD else None)
    def charge(order: str) -> str:
        return f"charged {order}"


    @engine.step(name="__main__.ship" if OLD else None)
    def ship(order: str) -> str:
        if os.environ.get("NAMES_CRASH") == "1":
            os._exit(3)
        return f"shipped {order}"


    @engine.workflow(name=os.environ.get("NAMES_FLOW") or ("__main__.flow" if OLD else None))
    def flow(order: str) -> str:
        return charge(order) + ", " + ship(order)


    def main() -> None:
        with engine:
            recovery = {"resumed": engine.recovery.resumed, "unknown": engine.recovery.unknown}
            result = engine.start(flow, "o-1", workflow_id="w1").result(timeout=20)
            print(json.dumps({"result": result, **recovery, "name": engine.handle("w1").info().name,
                              "steps": [s.name for s in engine.steps("w1")]}))


    if __name__ == "__main__":
        main()
""")


def _layout(tmp_path: Path, package: bool = False) -> tuple[Path, str]:
    """Write the app (``app.py``, or ``pkg/app.py`` in a package); return
    the directory to run from and the module's import name."""
    if package:
        (tmp_path / "pkg").mkdir()
        (tmp_path / "pkg" / "__init__.py").write_text("")
        (tmp_path / "pkg" / "app.py").write_text(APP)
        return tmp_path, "pkg.app"
    (tmp_path / "app.py").write_text(APP)
    return tmp_path, "app"


def _run(cwd: Path, module: str, how: str, crash: bool = False, **env: str) -> dict[str, Any] | None:
    """Run the app ``how``: "script" (python path/app.py), "module"
    (python -m app) or "import" (import app; app.main()). Returns what it
    printed, or None for a run that crashed on purpose."""
    args = {
        "script": [str(cwd / (module.replace(".", "/") + ".py"))],
        "module": ["-m", module],
        "import": ["-c", f"import {module} as app; app.main()"],
    }[how]
    full = dict(os.environ, PYTHONPATH=SRC, NAMES_DB=str(cwd / "app.db"), **env)
    if crash:
        full["NAMES_CRASH"] = "1"
    run = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=90, env=full)
    if crash:
        assert run.returncode == 3, run.stderr[-3000:]
        return None
    assert run.returncode == 0, f"{how} run failed:\n{run.stderr[-3000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- the default name does not depend on how the module was loaded ------------------


@pytest.mark.parametrize("first,second", [("script", "import"), ("import", "script"), ("module", "script")])
def test_a_workflow_started_by_one_loading_mode_is_recovered_by_another(
    tmp_path: Path, first: str, second: str
) -> None:
    cwd, module = _layout(tmp_path)
    _run(cwd, module, first, crash=True)
    out = _run(cwd, module, second)
    assert out == {
        "result": "charged o-1, shipped o-1",
        "resumed": ["w1"],
        "unknown": [],
        "name": "app.flow",
        "steps": ["app.charge", "app.ship"],
    }


def test_a_package_module_run_as_a_script_is_named_by_its_package_path(tmp_path: Path) -> None:
    cwd, module = _layout(tmp_path, package=True)
    _run(cwd, module, "script", crash=True)  # python pkg/app.py
    out = _run(cwd, module, "import")
    assert out is not None
    assert (out["resumed"], out["name"], out["steps"]) == (["w1"], "pkg.app.flow", ["pkg.app.charge", "pkg.app.ship"])


def test_a_step_recorded_by_a_script_replays_when_the_module_is_imported(tmp_path: Path) -> None:
    # The workflow has an explicit name: only the steps' default names are at stake.
    cwd, module = _layout(tmp_path)
    _run(cwd, module, "script", crash=True, NAMES_FLOW="flow")
    out = _run(cwd, module, "import", NAMES_FLOW="flow")
    assert out is not None
    assert (out["result"], out["resumed"], out["steps"]) == (
        "charged o-1, shipped o-1",
        ["w1"],
        ["app.charge", "app.ship"],
    )


def test_a_database_written_with_the_old_main_names_is_adopted_by_the_script(tmp_path: Path) -> None:
    """Before the fix a script recorded ``__main__.<qualname>``; that is now
    an implicit alias of its functions, so the same script adopts it."""
    cwd, module = _layout(tmp_path)
    _run(cwd, module, "script", crash=True, NAMES_OLD="1")
    out = _run(cwd, module, "script")
    assert out == {
        "result": "charged o-1, shipped o-1",
        "resumed": ["w1"],
        "unknown": [],
        "name": "__main__.flow",  # history is not rewritten
        "steps": ["__main__.charge", "app.ship"],
    }


def _defined_in(namespace: dict[str, Any], source: str = "def flow(x: int) -> int:\n    return x\n") -> Any:
    exec(compile(source, str(namespace.get("__file__", "<notebook>")), "exec"), namespace)
    return namespace["flow"]


def test_how_a_main_module_is_resolved(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for init in ("pkg/__init__.py", "pkg/sub/__init__.py"):
        (tmp_path / init).write_text("")
    (tmp_path / "loose").mkdir()
    main = {"__name__": "__main__", "__spec__": None}
    assert _names.default_name(_defined_in({**main, "__file__": str(tmp_path / "pkg/sub/app.py")})) == (
        "pkg.sub.app.flow",
        "__main__.flow",
    )
    assert _names.default_name(_defined_in({**main, "__file__": str(tmp_path / "loose/app.py")})) == (
        "app.flow",
        "__main__.flow",
    )
    assert _names.default_name(
        _defined_in({**main, "__file__": str(tmp_path / "loose/app.py"), "__spec__": SimpleNamespace(name="tools.app")})
    ) == ("tools.app.flow", "__main__.flow")  # python -m tools.app
    # An interactive session or a notebook: no file, nothing to resolve.
    assert _names.default_name(_defined_in(dict(main))) == ("__main__.flow", None)
    assert _names.default_name(_defined_in({"__name__": "app"})) == ("app.flow", None)


# -- collisions are refused at registration -------------------------------------------


def test_a_module_loaded_as_main_and_as_itself_on_one_engine_is_a_clear_error(tmp_path: Path) -> None:
    engine = durably.Engine(":memory:")
    file = str(tmp_path / "app.py")
    engine.workflow()(_defined_in({"__name__": "__main__", "__spec__": None, "__file__": file}))
    with pytest.raises(errors.UsageError) as err:
        engine.workflow()(_defined_in({"__name__": "app", "__file__": file}))
    message = str(err.value)
    assert "'app.flow'" in message and "__main__.flow" in message and f"{file}:1" in message
    assert "name=" in message


def test_two_functions_under_one_workflow_name_are_refused_naming_both(make_engine) -> None:
    engine = make_engine()

    @engine.workflow(name="flow")
    def first() -> int:
        return 1

    def second() -> int:
        return 2

    with pytest.raises(errors.UsageError) as err:
        engine.workflow(name="flow")(second)
    message = str(err.value)
    assert first.__qualname__ in message and second.__qualname__ in message and "name=" in message
    assert f"{__file__}:{second.__code__.co_firstlineno}" in message
    with engine:
        assert engine.run(first) == 1  # the first registration stands


def test_two_functions_under_one_step_name_are_refused_transactions_included(make_engine) -> None:
    engine = make_engine()

    @engine.step(name="s")
    def one() -> int:
        return 1

    def two() -> int:
        return 2

    def tx(db: durably.Tx) -> int:
        return 3

    with pytest.raises(errors.UsageError, match="two steps have the name 's'.*name="):
        engine.step(name="s")(two)
    with pytest.raises(errors.UsageError, match="two steps have the name 's'"):
        engine.transaction(name="s")(tx)
    with pytest.raises(errors.UsageError, match="two steps have the alias 's'"):
        engine.step(name="s2", aliases=("s",))(two)  # an alias equal to another's name
    engine.step(name="s2", aliases=("old",))(two)
    with pytest.raises(errors.UsageError, match="two steps have the alias 'old'.*an alias of 's2'"):
        engine.transaction(name="t", aliases=("old",))(tx)
    with pytest.raises(errors.UsageError, match="two steps have the name 'old'.*an alias of 's2'"):
        engine.transaction(name="old")(tx)

    @engine.workflow(name="s")  # workflows are another namespace
    def s() -> int:
        return one()

    with engine:
        assert engine.run(s) == 1


def test_bad_aliases_are_refused() -> None:
    engine = durably.Engine(":memory:")

    def flow() -> None: ...

    with pytest.raises(errors.UsageError, match="tuple of names"):
        engine.workflow(aliases="old.flow")(flow)  # a str would be taken letter by letter
    with pytest.raises(errors.InvalidNameError):
        engine.workflow(aliases=("",))(flow)
    with pytest.raises(errors.InvalidNameError):
        engine.step(aliases=("bad\x00name",))(flow)


# -- the same function registered again replaces its registration ---------------------


def _define(engine: durably.Engine, version: int, aliases: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """One module's code, as a reload or a notebook cell run again gives it:
    new function objects with the same module and qualname."""

    @engine.step(aliases=aliases)
    def bump(x: int) -> int:
        return x + version

    @engine.workflow(aliases=aliases)
    def flow(x: int) -> int:
        return bump(x) * 10

    return flow, bump


def test_the_same_function_registered_again_replaces_its_registration(make_engine) -> None:
    engine = make_engine()
    old_flow, _ = _define(engine, 1, aliases=("a1",))
    new_flow, _ = _define(engine, 2, aliases=("a2",))  # refused on 785dce3: "already registered"
    with engine:
        assert engine.run(new_flow, 1) == 30
        with pytest.raises(errors.UsageError, match="not a workflow registered"):
            engine.start(old_flow, 1)  # replaced, not kept beside
        assert engine.start("a2", 1).result(timeout=10) == 30
        with pytest.raises(errors.UsageError, match="not a workflow registered"):
            engine.start("a1", 1)  # the replaced registration's aliases went with it

    def other() -> None: ...

    engine.workflow(name="a1")(other)  # free again
    engine.step(name="a1")(other)
    with pytest.raises(errors.UsageError, match="two workflows have the name 'a2'"):
        engine.workflow(name="a2")(other)


# -- aliases adopt what was recorded under an old name --------------------------------


def _old_code(engine: durably.Engine, charged: list[str]) -> Any:
    @engine.step(name="old.charge")
    def charge(order: str) -> str:
        charged.append(order)
        return f"charged {order}"

    @engine.transaction(name="old.record")
    def record(db: durably.Tx, order: str) -> int:
        return int(db.execute("SELECT 1")[0][0])

    @engine.workflow(name="old.flow")
    def flow(order: str) -> str:
        receipt = charge(order)
        record(order)
        return receipt + (engine.recv(topic="go") or "")

    return flow


def _new_code(engine: durably.Engine, charged: list[str]) -> Any:
    @engine.step(name="new.charge", aliases=("old.charge",))
    def charge(order: str) -> str:
        charged.append(order)
        return f"charged {order} anew"

    @engine.transaction(name="new.record", aliases=("old.record",))
    def record(db: durably.Tx, order: str) -> int:
        return int(db.execute("SELECT 1")[0][0])

    @engine.workflow(name="new.flow", aliases=("old.flow",))
    def flow(order: str) -> str:
        receipt = charge(order)
        record(order)
        return receipt + (engine.recv(topic="go") or "")

    return flow


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_aliases_adopt_workflows_and_steps_recorded_under_an_old_name(make_engine) -> None:
    charged: list[str] = []
    old = make_engine()
    old_flow = _old_code(old, charged)
    with old:
        old.start(old_flow, "a", workflow_id="done")
        old.send("done", "!", topic="go")
        assert old.handle("done").result(timeout=10) == "charged a!"
        for wid in ("pending", "cancelled"):
            old.start(old_flow, wid, workflow_id=wid)
            _until(lambda wid=wid: len(old.steps(wid)) == 2)  # charge and record are durable; it waits in recv
        old.cancel("cancelled")
    assert charged == ["a", "pending", "cancelled"]

    new = make_engine()
    flow = _new_code(new, charged)
    with new:
        assert new.recovery.resumed == ["pending"] and new.recovery.unknown == []
        new.send("pending", "!", topic="go")
        assert new.handle("pending").result(timeout=10) == "charged pending!"  # charge replayed, not run
        # Start idempotency: an id recorded under the alias is this workflow.
        assert new.start(flow, "ignored", workflow_id="done").result(timeout=10) == "charged a!"
        assert new.resume("cancelled").workflow_id == "cancelled"
        new.send("cancelled", "?", topic="go")
        assert new.handle("cancelled").result(timeout=10) == "charged cancelled?"
        forked = new.fork("done", len(new.steps("done")))  # every step replays, recorded under old names
        assert forked.result(timeout=10) == "charged a!"
        by_alias = new.start("old.flow", "b", workflow_id="by-alias")  # records the current name
        new.send("by-alias", ".", topic="go")
        assert by_alias.result(timeout=10) == "charged b anew."
        assert charged == ["a", "pending", "cancelled", "b"]
        names = {i.workflow_id: i.name for i in new.list_workflows(limit=None)}
        assert names == {
            "done": "old.flow",
            "pending": "old.flow",
            "cancelled": "old.flow",
            forked.workflow_id: "old.flow",
            "by-alias": "new.flow",
        }  # history is not rewritten
        assert [s.name for s in new.steps("pending")][:2] == ["old.charge", "old.record"]
        assert [s.name for s in new.steps("by-alias")][:2] == ["new.charge", "new.record"]

        def another(order: str) -> str:
            return order

        new.workflow(name="another")(another)
        with pytest.raises(errors.WorkflowConflictError):
            new.start(another, "x", workflow_id="done")  # a different workflow is still refused


def test_without_the_alias_the_renamed_workflow_is_parked_not_registered(make_engine) -> None:
    """The control for the test above: a rename without aliases= parks."""
    charged: list[str] = []
    old = make_engine()
    old_flow = _old_code(old, charged)
    with old:
        old.start(old_flow, "p", workflow_id="pending")
        _until(lambda: len(old.steps("pending")) == 2)
    new = make_engine()

    @new.workflow(name="new.flow")
    def flow(order: str) -> str:
        return order

    with new:
        assert new.recovery.unknown == [("pending", "old.flow")]
        assert new.handle("pending").status() == Status.PENDING


def test_a_step_recorded_under_an_old_name_parks_without_the_alias_and_replays_with_it(make_engine) -> None:
    charged: list[str] = []
    old = make_engine()
    old_flow = _old_code(old, charged)
    with old:
        old.start(old_flow, "p", workflow_id="pending")
        _until(lambda: len(old.steps("pending")) == 2)

    renamed = make_engine()

    @renamed.step(name="new.charge")  # renamed without an alias
    def charge(order: str) -> str:
        return order

    @renamed.workflow(name="old.flow")
    def flow(order: str) -> str:
        return charge(order)

    with renamed:
        _until(lambda: renamed.handle("pending").info().parked is not None)
        parked = str(renamed.handle("pending").info().parked)
        assert "called 'new.charge'" in parked and "recorded 'old.charge'" in parked
    fixed = make_engine()
    _new_code(fixed, charged)  # aliases=("old.charge",)
    with fixed:
        fixed.resume("pending")
        fixed.send("pending", "!", topic="go")
        assert fixed.handle("pending").result(timeout=10) == "charged p!"
    assert charged == ["p"]  # recorded once, replayed under the alias


def test_a_queued_workflow_recorded_under_an_alias_is_dispatched(make_engine) -> None:
    client = make_engine(client=True)
    with client:
        client.queue("q").enqueue("old.flow", "q1", workflow_id="q1")
    charged: list[str] = []
    new = make_engine()
    _new_code(new, charged)
    new.queue("q")
    with new:
        _until(lambda: len(new.steps("q1")) == 2)
        new.send("q1", "!", topic="go")
        assert new.handle("q1").result(timeout=10) == "charged q1 anew!"
        assert new.handle("q1").info().name == "old.flow"


def test_a_schedule_of_an_old_name_fires_and_backfills_the_aliased_workflow(make_engine) -> None:
    t0 = datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC)
    clock, fired = durably.VirtualClock(t0.timestamp()), []
    old = make_engine(clock=clock)

    @old.workflow(name="tick")
    def tick(slot: datetime) -> str:
        return "old"

    with old:
        old.schedule("five", "*/5 * * * *", "tick", missed="all")  # recorded: workflow "tick"
        clock.advance(300)
        _until(lambda: len(old.list_workflows(status="SUCCESS")) == 1)
    clock.advance(300)  # down across 00:10
    new = make_engine(clock=clock)

    @new.workflow(name="new.tick", aliases=("tick",))
    def renamed(slot: datetime) -> str:
        fired.append(slot)
        return "new"

    with new:
        _until(lambda: len(new.list_workflows(status="SUCCESS")) == 2)
        assert fired == [t0.replace(minute=10, second=0)]
        # The 00:05 slot ran under the old name: backfilling returns its handle (no conflict, no re-run).
        handles = new.backfill_schedule("five", t0.replace(minute=5, second=0), t0.replace(minute=6, second=0))
        assert [h.result(timeout=10) for h in handles] == ["old"]
        assert len(fired) == 1


def test_a_parent_replays_the_start_of_a_child_recorded_under_the_child_s_old_name(make_engine) -> None:
    def build(engine: durably.Engine, child_name: str, aliases: tuple[str, ...] = ()) -> list[int]:
        ran: list[int] = []

        @engine.workflow(name=child_name, aliases=aliases)
        def child(x: int) -> int:
            ran.append(x)
            return x * 2

        @engine.workflow(name="parent")
        def parent(x: int) -> int:
            doubled = child(x)  # journaled in the parent as "start:<child's name>"
            return doubled + int(engine.recv(topic="go"))

        return ran

    old = make_engine()
    ran = build(old, "old.child")
    with old:
        old.start("parent", 5, workflow_id="p")
        _until(lambda: len(old.steps("p")) == 1 and old.handle("p/0").status() == Status.SUCCESS)
        assert [s.name for s in old.steps("p")] == ["start:old.child"] and ran == [5]
    new = make_engine()
    ran = build(new, "new.child", aliases=("old.child",))
    with new:
        new.send("p", 1, topic="go")
        assert new.handle("p").result(timeout=10) == 11
    assert ran == []  # the child's result was recorded: not run again
