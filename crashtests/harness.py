"""Run the workload under crash injection, restart it, and check the outcome.

A *case* is a list of crash specs (``point:n``) applied to successive runs of
``workload.py`` on the same database, followed by clean runs until it
finishes. Between runs the harness snapshots, with apsw (never the stdlib
``sqlite3`` module, never ``open()`` on database files), which step outcomes
were durable when the process died. The checker then folds the effects
ledger and the final database into counts that must all be zero.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import apsw

WORKLOAD = Path(__file__).with_name("workload.py")


@dataclass
class Run:
    crash_at: str | None
    returncode: int
    pid: int
    recorded: set[tuple[str, int]]  # durable (workflow_id, position) after the run
    stdout: str
    stderr: str


@dataclass
class Verdict:
    runs: list[Run] = field(default_factory=list)
    lost: int = 0          # a started workflow not SUCCESS, or a wrong result
    rerun_recorded: int = 0  # a step body ran again after its outcome was durable
    speculative: int = 0   # a step ran on an input that is not the recorded one
    tx_duplicates: int = 0  # transaction-step rows not exactly once
    duplicated_effects: int = 0  # bodies run more than once (allowed: killed in flight)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.rerun_recorded or self.speculative or self.tx_duplicates or self.problems)


def run_workload(db: Path, ledger: Path, crash_at: str | None, *, workflows: int, steps: int,
                 synchronous: str = "full", extra_env: dict[str, str] | None = None, timeout: float = 120,
                 kill_after: float | None = None) -> Run:
    env = dict(os.environ)
    env.pop("DURABLY_CRASH_AT", None)
    if crash_at:
        env["DURABLY_CRASH_AT"] = crash_at
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(db), str(ledger), "--workflows", str(workflows),
         "--steps", str(steps), "--synchronous", synchronous],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    if kill_after is not None:
        try:
            out, err = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=timeout)
    else:
        out, err = proc.communicate(timeout=timeout)
    return Run(crash_at, proc.returncode, proc.pid, recorded_steps(db), out, err)


def recorded_steps(db: Path) -> set[tuple[str, int]]:
    if not db.exists():
        return set()
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        if not conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'steps'").get:
            return set()
        return {(w, p) for w, p in conn.execute("SELECT workflow_id, position FROM steps")}
    finally:
        conn.close()


def pending_count(db: Path) -> int:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT count(*) FROM workflows WHERE status = 'PENDING'").get
    finally:
        conn.close()


def run_case(workdir: Path, crashes: list[str | float], *, workflows: int = 6, steps: int = 4,
             extra_env: dict[str, str] | None = None, max_clean_runs: int = 3) -> Verdict:
    """Apply each crash in turn (``"point:n"``, or a float: SIGKILL after that
    many seconds), then run clean until the workload finishes, then check."""
    db, ledger = workdir / "crash.db", workdir / "ledger.txt"
    verdict = Verdict()
    for spec in crashes:
        if isinstance(spec, float):
            run = run_workload(db, ledger, None, workflows=workflows, steps=steps, extra_env=extra_env,
                               kill_after=spec)
        else:
            if spec.endswith(":pending"):  # the n-th launch where n = pending workflows now
                spec = spec.replace(":pending", f":{max(1, pending_count(db))}")
            run = run_workload(db, ledger, spec, workflows=workflows, steps=steps, extra_env=extra_env)
        verdict.runs.append(run)
        if run.returncode not in (0, -signal.SIGKILL):
            verdict.problems.append(f"run with DURABLY_CRASH_AT={spec} exited {run.returncode}: {run.stderr[-2000:]}")
            return verdict
    for _ in range(max_clean_runs):
        run = run_workload(db, ledger, None, workflows=workflows, steps=steps, extra_env=extra_env)
        verdict.runs.append(run)
        if run.returncode == 0:
            break
    else:
        verdict.problems.append(f"workload did not finish after crashes {crashes}: {run.stderr[-2000:]}")
        return verdict
    check(verdict, db, ledger, steps)
    return verdict


def check(verdict: Verdict, db: Path, ledger: Path, steps: int) -> None:
    """Fold the ledger and the final database into the verdict's counts."""
    final = json.loads(verdict.runs[-1].stdout)["results"]
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        statuses = dict(conn.execute("SELECT workflow_id, status FROM workflows"))
        outputs = {(w, p): o for w, p, o in conn.execute("SELECT workflow_id, position, output FROM steps")}
        tx_rows = list(conn.execute("SELECT workflow_id, position, count(*) FROM effects GROUP BY 1, 2"))
        tx_values = {(w, p): v for w, p, v in conn.execute("SELECT workflow_id, position, value FROM effects")}
    finally:
        conn.close()
    # lost: every planned workflow (and child) is SUCCESS, with the result its journal implies
    for wid, result in final.items():
        if statuses.get(wid) != "SUCCESS":
            verdict.lost += 1
            verdict.problems.append(f"{wid} ended {statuses.get(wid)}")
    for wid, status in statuses.items():
        if status != "SUCCESS":
            verdict.lost += 1
            verdict.problems.append(f"{wid} is {status}")
    for (wid, pos), n in {(w, p): n for w, p, n in tx_rows}.items():
        if n != 1:
            verdict.tx_duplicates += 1
            verdict.problems.append(f"transaction rows for {wid}@{pos}: {n}")
    # ledger lines: workflow|position|input|pid
    lines = [line.split("|") for line in ledger.read_text().splitlines() if line]
    pid_round = {run.pid: i for i, run in enumerate(verdict.runs)}
    seen: dict[tuple[str, int], int] = {}
    for wid, pos_s, value_s, pid_s in lines:
        key, value, rnd = (wid, int(pos_s)), int(value_s), pid_round[int(pid_s)]
        seen[key] = seen.get(key, 0) + 1
        # never re-run: the outcome was durable before this body's process started
        if any(key in verdict.runs[r].recorded for r in range(rnd)):
            verdict.rerun_recorded += 1
            verdict.problems.append(f"{wid}@{key[1]} ran again in run {rnd} after being recorded")
        # no speculation: the input must be the durable output of the previous step
        expected = _input_of(wid, key[1], outputs)
        if expected is not None and value != expected:
            verdict.speculative += 1
            verdict.problems.append(f"{wid}@{key[1]} ran on input {value}, journal says {expected}")
    verdict.duplicated_effects = sum(n - 1 for n in seen.values() if n > 1)
    # transaction rows carry the value the workflow computed from durable outputs
    for (wid, pos), value in tx_values.items():
        expected = _input_of(wid, pos, outputs)
        if expected is not None and value != expected:
            verdict.speculative += 1
            verdict.problems.append(f"transaction {wid}@{pos} stored {value}, journal says {expected}")


def _input_of(wid: str, pos: int, outputs: dict[tuple[str, int], str]) -> int | None:
    if wid.startswith("parent-") and "/" not in wid:
        if pos != 1:
            return None
        child_id = json.loads(outputs[(wid, 0)])
        return int(json.loads(outputs[(child_id, max(p for w, p in outputs if w == child_id))]))
    if pos == 0:
        return 0
    prev = outputs.get((wid, pos - 1))
    return None if prev is None else int(prev)
