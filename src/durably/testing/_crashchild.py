"""One run of a user's workflow for the crash check (``_crashcheck.py``):
``python -m durably.testing._crashchild CONFIG.json``.

Every ``durably.Engine`` the user's module makes is made on the check's
database instead (the file or URL in the config: nothing of the user's own
is touched); the engine the workflow is registered with is opened, the
workflow started under the case's id (a start that already exists, after a
kill, waits for the recovered one) and its stored outcome printed as JSON.

The engine's crash points (``durably._crash``) call this module's hook:
each step body's start is appended to the ledger (workflow id, key, step
name, pid) so the parent counts the bodies that ran, every point hit is
logged for the reference run, and the process SIGKILLs itself at the
armed ``point``'s n-th hit, exactly like ``kill -9``.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import sys
from collections import Counter
from typing import Any

from .. import _crash

STEP_POINTS = ("step.before_body", "step.after_body")


class Hook:
    """Replaces ``_crash.hit`` in the child."""

    def __init__(self, ledger: str, hits: str | None, kill: tuple[str, int] | None) -> None:
        self.ledger = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.hits = None if hits is None else os.open(hits, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.kill = kill
        self.count: Counter[str] = Counter()

    def __call__(self, point: str, *where: Any) -> None:
        from ..runtime.context import encode_key

        self.count[point] += 1
        detail = None
        if point in STEP_POINTS and len(where) == 3:
            wid, key, name = where
            detail = [wid, encode_key(key), name]
        if self.hits is not None:  # a page-cache write: survives the process's SIGKILL
            os.write(self.hits, (json.dumps([point, self.count[point], detail]) + "\n").encode())
        if self.kill is not None and self.kill == (point, self.count[point]):
            os.kill(os.getpid(), signal.SIGKILL)
        if point == "step.before_body" and detail is not None:  # the body starts now
            os.write(self.ledger, (json.dumps([*detail, os.getpid()]) + "\n").encode())


def _redirect_engines(db: str, made: list[Any]) -> None:
    """Every Engine made from now on is made on ``db`` (and remembered)."""
    import durably

    original = durably.Engine.__init__

    def init(self: Any, path: str, **options: Any) -> None:
        options.pop("schema", None)  # the check's URL names its own (schema=)
        original(self, db, **options)
        made.append(self)

    durably.Engine.__init__ = init  # type: ignore[method-assign]  # this child process only


def _engine_for(workflow: Any, made: list[Any], module: str) -> Any:
    """The engine to run ``workflow`` on: the one of the engines its module
    made that it is registered with; for a workflow declared in a registry
    (``durably.Registry``), a new engine bound to the module's registries."""
    import durably

    from ._replay import _runner_of

    spec = getattr(workflow, "__durably_workflow__", None)
    if spec is not None:
        found = [e for e in made if spec in _runner_of(e).workflows.values()]
        if len(found) == 1:
            return found[0]
        raise SystemExit(
            f"durably crash check: {workflow!r} is registered with {len(found)} of the {len(made)} engine(s) "
            "its module made; it must be registered with exactly one"
        )
    registries = [v for v in vars(sys.modules[module]).values() if isinstance(v, durably.Registry)]
    if not registries:
        raise SystemExit(
            f"durably crash check: {workflow!r} is neither an engine's workflow nor declared in a registry"
        )
    return durably.Engine(":memory:", registry=registries)  # made on the check's database, as every Engine here


def _stored(value: Any) -> Any:
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, (bytes, bytearray)):
        return {"pickle": base64.b64encode(value).decode("ascii")}
    return value


def main(config_path: str) -> int:
    with open(config_path) as f:  # the parent's config, not a database file
        config = json.load(f)
    kill = config["kill"]
    _crash.hit = Hook(config["ledger"], config.get("hits"), None if kill is None else (kill[0], kill[1]))
    _crash.ARMED = True
    made: list[Any] = []
    _redirect_engines(config["db"], made)
    from . import workflow as stored_row
    from ._imports import import_object

    workflow = import_object(config["target"], "workflow")
    args, kwargs = pickle.loads(base64.b64decode(config["inputs"]))  # the parent's own values
    engine = _engine_for(workflow, made, config["target"].partition(":")[0])
    wid = config["workflow_id"]
    from .. import errors

    with engine:
        handle = engine.start(workflow, *args, workflow_id=wid, **kwargs)
        try:
            handle.result(timeout=config["timeout"])
        except errors.WorkflowFailedError:
            pass  # an ERROR outcome is an outcome: compared as stored
        row = stored_row(engine, wid)
    assert row is not None
    json.dump({"status": row.status, "output": _stored(row.output), "error": _stored(row.error)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
