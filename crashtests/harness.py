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
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from .ledger import read_ledger

WORKLOAD = Path(__file__).with_name("workload.py")


@dataclass
class Run:
    crash_at: str | None
    returncode: int
    pid: int
    recorded: set[tuple[str, int]]  # durable (workflow_id, position) after the run
    torn_batches: int  # after the run: a transaction step's row without its effects row, or vice versa
    stdout: str
    stderr: str


@dataclass
class Verdict:
    runs: list[Run] = field(default_factory=list)
    lost: int = 0  # a planned workflow not SUCCESS at the end
    unexpected: int = 0  # a workflow in the database nobody started
    acked_lost: int = 0  # an acknowledged step outcome missing or changed
    rerun_recorded: int = 0  # a step body ran again after its outcome was durable
    speculative: int = 0  # a step ran on an input that is not the recorded one
    tx_duplicates: int = 0  # transaction-step rows not exactly once
    unjustified_duplicates: int = 0  # a body re-ran though its earlier run was not killed in flight
    duplicated_effects: int = 0  # bodies run more than once (allowed: killed in flight)
    problems: list[str] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)  # typed errors of fault-injected runs

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.acked_lost
            or self.rerun_recorded
            or self.speculative
            or self.tx_duplicates
            or self.unjustified_duplicates
            or self.problems
        )

    def counts(self) -> dict[str, int]:
        return {
            k: getattr(self, k)
            for k in (
                "lost",
                "unexpected",
                "acked_lost",
                "rerun_recorded",
                "speculative",
                "tx_duplicates",
                "unjustified_duplicates",
                "duplicated_effects",
            )
        }


def run_workload(
    db: Path,
    ledger: Path,
    crash_at: str | None,
    *,
    workflows: int,
    steps: int,
    synchronous: str = "full",
    extra_env: dict[str, str] | None = None,
    timeout: float = 120,
    kill_after: float | None = None,
    delay: float = 0.0,
) -> Run:
    env = dict(os.environ)
    env.pop("DURABLY_CRASH_AT", None)
    if crash_at:
        env["DURABLY_CRASH_AT"] = crash_at
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [
            sys.executable,
            str(WORKLOAD),
            str(db),
            str(ledger),
            "--workflows",
            str(workflows),
            "--steps",
            str(steps),
            "--synchronous",
            synchronous,
            "--delay",
            str(delay),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_after is not None:
        try:
            out, err = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=timeout)
    else:
        out, err = proc.communicate(timeout=timeout)
    recorded, torn = snapshot(db, steps)
    return Run(crash_at, proc.returncode, proc.pid, recorded, torn, out, err)


def snapshot(db: Path, steps: int) -> tuple[set[tuple[str, int]], int]:
    """What is durable now: recorded (workflow, position) pairs, and how many
    transaction steps are half there (their row without their SQL's effect or
    the reverse; must be 0, a batch is all or nothing)."""
    if not db.exists():
        return set(), 0
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        if "steps" not in names:
            return set(), 0
        rows = {(w, p): n for w, p, n in conn.execute("SELECT workflow_id, position, name FROM steps")}
        effects = set(conn.execute("SELECT workflow_id, position FROM effects")) if "effects" in names else set()
    finally:
        conn.close()
    books = {k for k, name in rows.items() if name.endswith(".book")}
    return set(rows), len(books ^ effects)


def pending_count(db: Path) -> int:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT count(*) FROM workflows WHERE status = 'PENDING'").get
    finally:
        conn.close()


def run_case(
    workdir: Path,
    crashes: list[Any],
    *,
    workflows: int = 6,
    steps: int = 4,
    extra_env: dict[str, str] | None = None,
    max_clean_runs: int = 3,
    synchronous: str = "full",
    prior_runs: list[Run] | None = None,
    delay: float = 0.0,
) -> Verdict:
    """Apply each crash in turn, then run clean until the workload finishes,
    then check. A crash is ``"point:n"`` (a crash point), a float (SIGKILL
    after that many seconds) or a dict of environment for that run (for
    example ``{"DURABLY_VFS": "powerloss:40:7:1"}``)."""
    db, ledger = workdir / "crash.db", workdir / "ledger.txt"
    verdict = Verdict(runs=list(prior_runs or []))  # runs already made on this database
    for spec in crashes:
        if isinstance(spec, float):
            run = run_workload(
                db,
                ledger,
                None,
                workflows=workflows,
                steps=steps,
                extra_env=extra_env,
                kill_after=spec,
                synchronous=synchronous,
                delay=delay,
            )
        elif isinstance(spec, dict):
            run = run_workload(
                db,
                ledger,
                None,
                workflows=workflows,
                steps=steps,
                extra_env={**(extra_env or {}), **spec},
                synchronous=synchronous,
            )
        else:
            if spec.endswith(":pending"):  # the n-th launch where n = pending workflows now
                spec = spec.replace(":pending", f":{max(1, pending_count(db))}")
            run = run_workload(
                db,
                ledger,
                spec,
                workflows=workflows,
                steps=steps,
                extra_env=extra_env,
                synchronous=synchronous,
                delay=delay,
            )
        verdict.runs.append(run)
        if run.torn_batches:
            verdict.problems.append(f"after {spec}: {run.torn_batches} transaction step(s) half committed")
        if run.returncode == 3 and isinstance(spec, dict):  # an injected fault, reported typed
            verdict.faults.append(json.loads(run.stdout))
        elif run.returncode not in (0, -signal.SIGKILL):
            verdict.problems.append(f"run with DURABLY_CRASH_AT={spec} exited {run.returncode}: {run.stderr[-2000:]}")
            return verdict
    for _ in range(max_clean_runs):
        run = run_workload(
            db, ledger, None, workflows=workflows, steps=steps, extra_env=extra_env, synchronous=synchronous
        )
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
        integrity = conn.execute("PRAGMA integrity_check").get
        statuses = dict(conn.execute("SELECT workflow_id, status FROM workflows"))
        outputs = {(w, p): o for w, p, o in conn.execute("SELECT workflow_id, position, output FROM steps")}
        tx_rows = list(conn.execute("SELECT workflow_id, position, count(*) FROM effects GROUP BY 1, 2"))
        tx_values = {(w, p): v for w, p, v in conn.execute("SELECT workflow_id, position, value FROM effects")}
    finally:
        conn.close()
    if integrity != "ok":
        verdict.problems.append(f"integrity_check: {integrity}")
    # lost / unexpected: every planned workflow (and child) ends SUCCESS, nothing else exists
    for wid in final:
        if statuses.get(wid) != "SUCCESS":
            verdict.lost += 1
            verdict.problems.append(f"{wid} ended {statuses.get(wid)}")
    for wid, status in statuses.items():
        root = wid.split("/")[0]
        if root not in final:
            verdict.unexpected += 1
            verdict.problems.append(f"unexpected workflow {wid}")
        elif status != "SUCCESS":
            verdict.lost += 1
            verdict.problems.append(f"{wid} is {status}")
    for (wid, pos), n in {(w, p): n for w, p, n in tx_rows}.items():
        if n != 1:
            verdict.tx_duplicates += 1
            verdict.problems.append(f"transaction rows for {wid}@{pos}: {n}")
    pid_round = {run.pid: i for i, run in enumerate(verdict.runs)}
    executions: dict[tuple[str, int], list[int]] = {}
    records, _torn = read_ledger(ledger)  # a torn record: its writer was killed mid-write
    for kind, wid, pos_s, value_s, pid_s in records:
        key, value, rnd = (wid, int(pos_s)), int(value_s), pid_round[int(pid_s)]
        if kind == "A":  # acknowledged: the outcome must be in the final journal, unchanged
            if key not in outputs or int(outputs[key]) != value:
                verdict.acked_lost += 1
                verdict.problems.append(f"acknowledged {wid}@{key[1]}={value} but journal has {outputs.get(key)}")
            continue
        executions.setdefault(key, []).append(rnd)
        # never re-run: the outcome was durable before this body's process started
        if any(key in verdict.runs[r].recorded for r in range(rnd)):
            verdict.rerun_recorded += 1
            verdict.problems.append(f"{wid}@{key[1]} ran again in run {rnd} after being recorded")
        # no speculation: the input must be the durable output of the previous step
        expected = _input_of(wid, key[1], outputs)
        if expected is not None and value != expected:
            verdict.speculative += 1
            verdict.problems.append(f"{wid}@{key[1]} ran on input {value}, journal says {expected}")
    for key, rounds in executions.items():
        verdict.duplicated_effects += len(rounds) - 1
        # each earlier execution must belong to a run that died with the step in flight
        for rnd in rounds[:-1]:
            run = verdict.runs[rnd]
            if run.returncode not in (-signal.SIGKILL, 3) or key in run.recorded:
                verdict.unjustified_duplicates += 1
                verdict.problems.append(f"{key} ran in run {rnd} (rc {run.returncode}) and again later")
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


def sweep_power_loss(
    workdir: Path,
    seed: int,
    *,
    synchronous: str = "full",
    torn: bool = True,
    workflows: int = 4,
    steps: int = 3,
    max_stride: int = 10,
    max_points: int = 400,
) -> list[tuple[int, Verdict]]:
    """Cut the power at I/O operation n for n advancing by seeded random
    strides until the workload completes before reaching n; check each case.

    Reproduce one case with ``run_case(dir, [{"DURABLY_VFS": f"powerloss:{n}:{seed}:1"}])``.
    """
    rng = random.Random(seed)
    n = rng.randint(1, max_stride)
    out: list[tuple[int, Verdict]] = []
    while len(out) < max_points:
        case = workdir / f"seed{seed}-n{n}"
        case.mkdir(parents=True)
        spec = {"DURABLY_VFS": f"powerloss:{n}:{seed}:{int(torn)}"}
        verdict = run_case(case, [spec], workflows=workflows, steps=steps, synchronous=synchronous)
        out.append((n, verdict))
        if verdict.runs and verdict.runs[0].returncode == 0:
            break  # the workload finished before operation n: the sweep is complete
        n += rng.randint(1, max_stride)
    return out


def raw_power_loss(workdir: Path, seed: int, n: int, synchronous: str, journal: str) -> dict[str, Any]:
    """One power cut in the raw-apsw negative-control workload; what survived."""
    workdir.mkdir(parents=True, exist_ok=True)
    db, acks = workdir / "raw.db", workdir / "acks.txt"
    env = {**os.environ, "DURABLY_VFS": f"powerloss:{n}:{seed}:1"}
    proc = subprocess.run(
        [sys.executable, str(WORKLOAD.with_name("raw_workload.py")), str(db), str(acks), synchronous, journal],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    acked = [int(x) for x in acks.read_text().split()] if acks.exists() else []
    result: dict[str, Any] = {"n": n, "returncode": proc.returncode, "acked": len(acked)}
    try:
        conn = apsw.Connection(str(db))
        try:
            result["integrity"] = conn.execute("PRAGMA integrity_check").get
            has_t = conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 't'").get
            present = {r[0] for r in conn.execute("SELECT DISTINCT txn FROM t")} if has_t else set()
            result["acked_lost"] = len([t for t in acked if t not in present])
        finally:
            conn.close()
    except apsw.Error as exc:
        result["integrity"] = f"{type(exc).__name__}: {exc}"
        result["acked_lost"] = len(acked)
    result["caught"] = result["integrity"] != "ok" or result["acked_lost"] > 0
    return result


def run_chaos(
    workdir: Path, seed: int, *, workflows: int = 60, steps: int = 12, delay: float = 0.04, max_runs: int = 60
) -> tuple[Verdict, int]:
    """Kill the workload over and over until it finishes: each run is killed
    by SIGKILL after a seeded random delay or at a seeded random crash point.
    Returns the verdict and how many kills landed (the process really died).
    The same seed gives the same schedule of kills."""
    from durably._crash import POINTS

    rng = random.Random(seed)
    db, ledger = workdir / "crash.db", workdir / "ledger.txt"
    verdict = Verdict()
    landed = 0
    for _ in range(max_runs):
        if rng.random() < 0.7:
            run = run_workload(
                db,
                ledger,
                None,
                workflows=workflows,
                steps=steps,
                delay=delay,
                kill_after=round(rng.uniform(0.15, 0.5), 3),
            )
        else:
            spec = f"{rng.choice(POINTS)}:{rng.randint(1, 40)}"
            run = run_workload(db, ledger, spec, workflows=workflows, steps=steps, delay=delay)
        verdict.runs.append(run)
        if run.returncode == -signal.SIGKILL:
            landed += 1
        elif run.returncode == 0:
            break
        else:
            verdict.problems.append(f"run exited {run.returncode}: {run.stderr[-1500:]}")
            return verdict, landed
    else:
        verdict.problems.append(f"the workload never finished in {max_runs} runs")
        return verdict, landed
    check(verdict, db, ledger, steps)
    return verdict, landed
