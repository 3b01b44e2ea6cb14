"""Crash tests for users' workflows: ``durably.testing.crash_check``.

durably's own crash harness (``crashtests/``) pointed at a user's workflow.
The workflow runs in a child process (``_crashchild.py``) once without a
kill (the reference), then once per *kill point*: the child SIGKILLs itself
at that point, a fresh child reopens the database and finishes the workflow
(the engine recovers it), and the check compares:

* the outcome with the reference (status, stored output, error type and
  message): a step whose effects leak into later results when it runs
  twice (a non-idempotent step) shows up here;
* no recorded step's body ran again (durably's promise 2: a body runs more
  than once only when its process died before its outcome was durable);
* which steps' bodies ran more than once: where the user's idempotency
  matters (those steps run again after a crash in production too).

Kill points: before each step's body (the previous outcome durable), after
each step's body (its outcome not yet durable: the body runs again), before
the workflow's completion is recorded, and ``random_kills`` more at seeded
random crash points of the reference run (inside the journal's commit, ...).

Each run starts in a fresh working directory (a relative path the workflow
writes to is the case's own) on the check's one database (an SQLite file in
a temporary directory, or the PostgreSQL URL given), each case under its
own workflow id.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..store import is_postgres, make_store
from ._imports import path_of

STEP_KILLS = ("step.before_body", "step.after_body")
FINAL_KILL = "workflow.before_complete"


@dataclass(frozen=True)
class KillPoint:
    """One case: killed at the ``hit``-th hit of crash point ``point`` (the
    step there: ``step`` at ``position``), then recovered. ``ok``: the
    outcome equals the reference and no recorded step ran again;
    ``rerun``: steps whose bodies ran more than once in this case."""

    point: str
    hit: int
    step: str | None
    position: str | None
    killed: bool
    ok: bool
    rerun: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass
class CrashReport:
    """The reference outcome and every kill point's case."""

    target: str
    reference: dict[str, Any]
    points: list[KillPoint] = field(default_factory=list[KillPoint])

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.points)

    @property
    def failures(self) -> list[KillPoint]:
        return [p for p in self.points if not p.ok]

    @property
    def rerun_steps(self) -> list[str]:
        """Steps whose bodies ran more than once at some kill point: where
        the workflow relies on their idempotency."""
        return sorted({name for p in self.points for name in p.rerun})

    def assert_ok(self) -> None:
        """AssertionError listing every kill point whose recovered run did
        not end as the uninterrupted run did (or re-ran a recorded step)."""
        if self.failures:
            lines = [f"{describe(p)}: {'; '.join(p.problems)}" for p in self.failures]
            raise AssertionError(f"crash check of {self.target}:\n" + "\n".join(lines))


def describe(point: KillPoint) -> str:
    where = f" ({point.step} at {point.position})" if point.step else ""
    return f"killed at {point.point}#{point.hit}{where}"


class _Case:
    """Runs children for one check: the database, the target, its inputs."""

    def __init__(self, target: str, inputs: str, db: str, workdir: Path, timeout: float) -> None:
        self.target, self.inputs, self.db, self.workdir, self.timeout = target, inputs, db, workdir, timeout
        self.tag = uuid.uuid4().hex[:8]  # this check's workflow ids: a database may serve several checks

    def workflow_id(self, name: str) -> str:
        return f"crash-check-{self.tag}-{name}"

    def run(self, name: str, kill: tuple[str, int] | None, hits: bool = False) -> tuple[int, str, str, int]:
        """One child run of case ``name`` (its directory, its workflow id):
        (returncode, stdout, stderr, pid)."""
        case = self.workdir / name
        case.mkdir(parents=True, exist_ok=True)
        config = {
            "target": self.target,
            "inputs": self.inputs,
            "db": self.db,
            "workflow_id": self.workflow_id(name),
            "kill": kill,
            "ledger": str(case / "ledger.jsonl"),
            "hits": str(case / "hits.jsonl") if hits else None,
            "timeout": self.timeout,
        }
        path = case / f"config-{len(list(case.glob('config-*')))}.json"
        path.write_text(json.dumps(config))
        # The parent's import path (its "" made absolute: the children run elsewhere).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        env.pop("DURABLY_CRASH_AT", None)
        with subprocess.Popen(
            [sys.executable, "-m", "durably.testing._crashchild", str(path)],
            cwd=case,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            try:
                out, err = proc.communicate(timeout=self.timeout * 2 + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        return proc.returncode, out, err, proc.pid

    def ledger(self, name: str) -> list[tuple[str, str, str, int]]:
        """(workflow id, key, step name, pid) of every step body started."""
        path = self.workdir / name / "ledger.jsonl"
        if not path.exists():
            return []
        out: list[tuple[str, str, str, int]] = []
        for line in path.read_text().splitlines():
            try:
                wid, key, step, pid = json.loads(line)
            except ValueError:
                continue  # a line its writer was killed in the middle of
            out.append((wid, key, step, pid))
        return out

    def recorded(self, name: str) -> set[tuple[str, str]]:
        """(workflow id, key) of every step recorded for case ``name``'s workflow and its children now."""
        wid = self.workflow_id(name)
        store = make_store(self.db)
        store.open_readonly()
        try:
            ids = [wid, *(r.workflow_id for r in store.list_workflows(None, None, None, id_prefix=wid + "/"))]
            return {(w, row[4] or f"#{row[0]}") for w in ids for row in store.load_steps(w)}
        finally:
            store.close(clean=False)


def crash_check(
    workflow: Any,
    *args: Any,
    db: str | None = None,
    random_kills: int = 2,
    seed: int = 0,
    max_points: int | None = None,
    timeout: float = 60.0,
    workdir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> CrashReport:
    """Kill ``workflow(*args, **kwargs)`` at every step boundary in turn (and
    at ``random_kills`` seeded random crash points), recover it each time,
    and report whether it ended as the uninterrupted run did.

    ``workflow``: the decorated workflow (its module importable) or
    ``"module:name"``. Every Engine its module makes is made, in the child
    processes, on ``db``: by default an SQLite file in a temporary
    directory; a ``postgresql://`` URL (``?schema=``) runs it on PostgreSQL.
    ``max_points`` bounds the step boundaries tried (the first ones);
    ``timeout``: seconds one run may take. Arguments travel pickled.

    Example::

        report = durably.testing.crash_check(checkout, "order-1")
        report.assert_ok()
        assert report.rerun_steps == ["shop.charge"]   # runs again after a crash: idempotent?
    """
    target = workflow if isinstance(workflow, str) else path_of(workflow)
    inputs = base64.b64encode(pickle.dumps((args, kwargs))).decode("ascii")
    with tempfile.TemporaryDirectory(prefix="durably-crash-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        database = str(root / "check.db") if db is None else db if is_postgres(db) else os.path.abspath(db)
        case = _Case(target, inputs, database, root, timeout)
        reference, hits = _reference(case)
        report = CrashReport(target, reference)
        plan = _plan(hits, case.workflow_id("reference"), random_kills, seed, max_points)
        for n, (point, hit, step, key) in enumerate(plan):
            report.points.append(_kill_case(case, f"case-{n}", point, hit, step, key, reference))
        return report


def _reference(case: _Case) -> tuple[dict[str, Any], list[tuple[str, int, Any]]]:
    rc, out, err, _pid = case.run("reference", None, hits=True)
    if rc != 0:
        raise errors.UsageError(f"the uninterrupted run of {case.target} failed (exit {rc}): {err.strip()[-2000:]}")
    hits: list[tuple[str, int, Any]] = []
    for line in (case.workdir / "reference" / "hits.jsonl").read_text().splitlines():
        point, n, detail = json.loads(line)
        hits.append((point, n, detail))
    return _outcome(out), hits


def _plan(
    hits: list[tuple[str, int, Any]], root: str, random_kills: int, seed: int, max_points: int | None
) -> list[tuple[str, int, str | None, str | None]]:
    """(point, n, step name, key) of each case: the step boundaries of the
    reference run, in order, then seeded random hits of any crash point."""
    steps = [(p, n, d[2], d[1]) for p, n, d in hits if p in STEP_KILLS and d is not None and _ours(d[0], root)]
    if max_points is not None:
        steps = steps[: 2 * max_points]
    plan: list[tuple[str, int, str | None, str | None]] = list(steps)
    finals = [(p, n) for p, n, _d in hits if p == FINAL_KILL]
    if finals:
        plan.append((FINAL_KILL, finals[-1][1], None, None))  # the root's completion is the last one
    chosen = {(p, n) for p, n, _s, _k in plan}
    others = [(p, n, d) for p, n, d in hits if (p, n) not in chosen and not p.startswith("recovery.")]
    rng = random.Random(seed)
    for p, n, d in rng.sample(others, min(random_kills, len(others))):
        plan.append((p, n, None if d is None else d[2], None if d is None else d[1]))
    return plan


def _ours(workflow_id: str, root: str) -> bool:
    return workflow_id == root or workflow_id.startswith(root + "/")


def _kill_case(
    case: _Case, name: str, point: str, hit: int, step: str | None, key: str | None, reference: dict[str, Any]
) -> KillPoint:
    problems: list[str] = []
    rc, out, err, killed_pid = case.run(name, (point, hit))
    killed = rc == -signal.SIGKILL
    recorded_at_kill = case.recorded(name) if killed else set[tuple[str, str]]()
    if rc not in (0, -signal.SIGKILL):
        problems.append(f"the killed run exited {rc}: {err.strip()[-1000:]}")
    for _attempt in range(3):
        if rc == 0:
            break
        rc, out, err, _pid = case.run(name, None)
    if rc != 0:
        problems.append(f"the recovery run exited {rc}: {err.strip()[-1000:]}")
    elif _outcome(out) != reference:
        problems.append(f"ended {_outcome(out)}, the uninterrupted run ended {reference}")
    ledger = case.ledger(name)
    for wid, k, s in sorted({(w, k, s) for w, k, s, pid in ledger if pid != killed_pid and (w, k) in recorded_at_kill}):
        problems.append(f"step {s} ({wid} at {k}) ran again after its outcome was recorded")
    bodies = Counter((w, k, s) for w, k, s, _pid in ledger)
    rerun = tuple(sorted({s for (_w, _k, s), n in bodies.items() if n > 1}))
    return KillPoint(point, hit, step, key, killed, not problems, rerun, tuple(problems))


def _outcome(stdout: str) -> dict[str, Any]:
    """The stored outcome a child printed (an error as its type and message)."""
    doc: dict[str, Any] = json.loads(stdout)
    error = doc.get("error")
    if isinstance(error, str):
        try:
            parsed = json.loads(error)
            doc["error"] = {"type": parsed.get("type"), "message": parsed.get("message")}
        except (ValueError, AttributeError):
            pass
    return doc
