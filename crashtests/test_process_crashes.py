"""Several processes on one file under SIGKILL and SIGSTOP (the multi-process tier).

Three worker processes (``mp_workload.py``) serve one database: chains of
steps (sync, async, a parent with a child), a consumer receiving messages
(sent by a producer workflow and by the driver) that sets an event and
sleeps durably, and jobs on a queue with a concurrency limit of 2. The
driver (this file; a ``client=True`` engine) starts the planned workflows
in waves under fixed ids and sends messages, while it SIGKILLs a random
worker at seeded random moments and restarts it (a restart is sometimes
armed to die at a crash point, several of them inside a takeover), and
SIGSTOPs a worker for longer than its lease, then SIGCONTs it. Once its
quotas of kills and stop rounds are met it lets everything finish, stops
the workers cleanly and runs the checker.

What the checker can see (``mp_workload.py`` documents the ledger): every
step body run with the fencing epoch its process held for the workflow and
a token that is part of the step's output, so the journal says which run
was recorded; what each workflow got back; the durable sleep's times; the
driver's log of kills, crashes and stop rounds (with what the paused
process owned when stopped and which of those were taken over by the
time it was continued). It counts, each of which must be 0:

* ``lost`` / ``errors`` / ``unexpected``: a planned workflow not SUCCESS,
  any workflow in ERROR (or any other end), a workflow nobody planned;
* ``wrong_result``: a result that is not what the journal recorded (its
  step tokens, sums, the job's number, the messages received);
* ``acked_lost``: a step outcome a workflow got back that is not the
  journal's; ``phantom``: a recorded outcome no body run produced;
* ``speculative``: a body that ran on an input that is not the recorded
  output of the step before it;
* ``same_epoch_reruns``: one step's body run twice under one fencing epoch
  (two owners at once, or one owner running it again; for epoch 0, a child
  never claimed, one process running it twice);
* ``unjustified_duplicates``: a step body run more than once where a run
  that was not recorded belongs to a process that was neither killed (after
  that run started) nor fenced off that workflow (a later epoch recorded it);
* ``stale_records``: something recorded under an epoch older than a body
  run the workflow had already had under a newer one (a fenced process's
  late record that was accepted), or a completion recorded by such a process;
* ``zombie_records``: a process continued after SIGSTOP recorded a step or
  the completion of a workflow taken over while it was stopped;
* ``queue_over_limit``: at some moment more queued workflows than the limit
  had a body running under a live owner (a killed process's body ends when
  it dies; a paused one's when its workflow is taken over);
* ``messages``: a message not received exactly once, in order per sender,
  or left over; the event not at its final count; ``early_wakes``: a
  durable sleep that ended before its recorded wake-up time;
* ``stalled``: a worker that the database names as the owner of a pending
  workflow has not been running it for 3 s (``mp_workload.py`` watches):
  while it keeps its lease nobody else will; ``hang``: planned workflows
  still pending 30 s after the chaos (their owners are then killed so
  the run can end and be checked);
* ``harness``: a worker exiting with an error, its writer failing.

``LONG`` adds a slow workflow per wave whose step bodies (up to 5 s) can
outlast a stop round, so a paused worker goes on inside a body after SIGCONT.

``test_the_checker_catches_broken_runs`` forges each kind of failure into a
clean run's evidence, and ``test_the_checker_catches_a_paused_process_without_fencing``
runs the stop/continue scenario with fencing switched off in the workers:
both must be reported.

Two engine bugs this tier found (on d02a51d) are reproduced
deterministically below; both fail there and pass since the fix (claimed
workflows are owned from the claim's own transaction; a workflow claimed
back while its fenced run unwinds is run again when that ends):
``test_a_paused_owner_continued_after_its_taker_died_runs_what_it_takes_back``
(the long tier reports it as ``stalled``) and
``test_a_process_paused_inside_its_takeover_records_nothing_for_what_was_taken_from_it``
(reported as ``zombie_records``, ``stale_records`` and ``errors``: a UNIQUE
constraint race that ends a workflow ERROR).

The driver and the checker read the database through the client engine and
``crashtests/backends.py`` (apsw for a file, psycopg for a
``postgresql://...?schema=`` URL): ``test_pg_process_crashes.py`` runs this
tier on PostgreSQL (``run_seed(..., db=url, run_class=PgRun)``), adding
terminated backends and server restarts to the chaos.

Reproduce one seed with ``run_seed(Path(dir), seed, QUICK)`` (same seed: the
same sequence of choices; the moments they land on are real time). With
``DURABLY_CHAOS_REPORT=path`` every seed appends one JSON object (one line:
kills, crash-point deaths, stop rounds, violations by category, figures).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import pytest

import durably
from durably import testing

from .backends import Reader, is_pg, placeholders
from .ledger import format_record, read_ledger

WORKLOAD = Path(__file__).with_name("mp_workload.py")
WORKERS = 3
QUEUE_LIMIT = 2
STEP_NAMES = ("add", "aadd", "slowadd", "slot", "seen")
CHAINS = ("chain", "achain", "slow")
# Crash points a restarted worker may be armed with: inside a takeover (a
# claim at open or by the lease keeper, then launching what it claimed), and
# around a step's record.
CRASH_POINTS = (
    ("recovery.launched", 1, 3),
    ("recovery.launched", 1, 3),
    ("recovery.scan", 1, 1),
    ("step.before_body", 1, 12),
    ("step.after_body", 1, 12),
    ("journal.after_commit", 1, 40),
    ("store.before_commit", 1, 40),
    ("workflow.after_complete", 1, 4),
)
VIOLATIONS = (
    "lost",
    "errors",
    "unexpected",
    "wrong_result",
    "acked_lost",
    "phantom",
    "speculative",
    "same_epoch_reruns",
    "unjustified_duplicates",
    "stale_records",
    "zombie_records",
    "queue_over_limit",
    "messages",
    "early_wakes",
    "stalled",
    "hang",
    "harness",
)


@dataclass
class Tier:
    kills: int  # SIGKILLs (by the driver) to land before the chaos ends
    stops: int  # SIGSTOP/SIGCONT rounds past the lease in which workflows were taken over
    lease: float = 1.0
    kill_gap: tuple[float, float] = (0.3, 1.3)  # seconds between two kills
    stop_gap: tuple[float, float] = (0.3, 2.0)  # between a SIGCONT and the next SIGSTOP
    stop_len: tuple[float, float] = (1.7, 2.8)  # how long a worker stays stopped (> lease)
    keep_frozen_p: float = 0.25  # a worker paused in its write transaction stays paused anyway
    crash_point_p: float = 0.3  # a restart armed with a crash point
    kill_stopped_p: float = 0.1  # a kill during a stop round hits the stopped worker
    stop_busiest: bool = False  # stop the worker owning most (else: any that owns some)
    wave_every: float = 1.0  # seconds between two waves of planned workflows
    max_backlog: int = 60  # no new wave while this many are pending
    steps: int = 10  # steps of a chain
    delay: float = 0.15  # a chain step body sleeps up to this
    job_delay: float = 0.2  # a queued job's body sleeps up to this
    slow: tuple[float, float] | None = None  # a slow workflow per wave: 2 bodies of this many seconds
    messages: int = 6  # per consumer: half from a producer workflow, half from the driver
    send_every: float = 0.08  # seconds between two of the driver's messages
    max_chaos: float = 600.0  # the quotas must be met within this
    settle: float = 30.0  # after the chaos, everything must finish within this (it takes ~1 s)


QUICK = Tier(kills=8, stops=2)
LONG = Tier(kills=70, stops=7, slow=(0.5, 5.0))


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DURABLY_CRASH_AT", "DURABLY_CRASH_LOG")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(durably.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    env.update(extra or {})
    return env


@dataclass
class Worker:
    tag: str
    proc: subprocess.Popen[bytes]
    spawned: float
    crash_at: str | None
    out: Path
    err: Path
    killed_at: float | None = None
    died: float | None = None
    rc: int | None = None
    cause: str | None = None  # killed, crashed (a crash point), closed, error
    executor: str | None = None

    def ready(self) -> bool:
        if self.executor is None:
            try:
                first = self.out.read_text().split("\n", 1)[0]
            except OSError:
                return False
            if first.startswith("ready "):
                self.executor = first.split()[1]
        return self.executor is not None


class Run:
    """One seed: a client, three workers, waves, kills, stop rounds."""

    def __init__(
        self, workdir: Path, seed: int, tier: Tier, env: dict[str, str] | None = None, db: str | None = None
    ) -> None:
        self.dir, self.seed, self.tier = workdir, seed, tier
        self.rng = random.Random(seed)
        # a file (SQLite), or a postgresql://...?schema= URL (crashtests/backends.py)
        self.db: Path | str = db if db is not None else workdir / "mp.db"
        self.pg = is_pg(self.db)
        self.ledger = workdir / "ledger.txt"
        self.extra_env = env or {}
        self.lock = threading.Lock()
        self.workers: dict[str, Worker] = {}
        self.alive: list[str] = []
        self.spawns = 0
        self.plan: dict[str, list[Any]] = {}  # wid -> [workflow name, args]
        self.client_messages: dict[str, list[str]] = {}
        self.outbox: list[tuple[str, str]] = []  # (dest, payload) the driver still has to send
        self.waves = 0
        self.kills = 0
        self.kills_before_ready = 0  # of those, workers still opening
        self.crashes = 0
        self.stop_rounds: list[dict[str, Any]] = []
        self.stopped: str | None = None
        self.stop_timer: threading.Timer | None = None
        self.problems: list[str] = []
        self.client = durably.Engine(str(self.db), client=True)
        self.client.queue("q", concurrency=QUEUE_LIMIT)
        self.probe: Any = None  # tells whether a paused worker holds the write lock
        self.next_send = 0.0

    def q(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """The driver's read (``?`` placeholders) through the client engine. On
        PostgreSQL a read can fail while the server restarts or after its
        backend was terminated: tried again for up to 90 s."""
        if not self.pg:
            return testing.query(self.client, sql, params)
        deadline = time.monotonic() + 90.0
        while True:
            try:
                return testing.query(self.client, placeholders(sql, True), params)
            except durably.DurablyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def more_chaos(self, now: float) -> None:
        """Chaos of a subclass, each round of the driver's loop (PostgreSQL:
        terminated backends, server restarts)."""

    def killable(self, w: Worker) -> bool:
        """Whether the driver's kills may pick this worker."""
        return True

    def excused(self, w: Worker) -> bool:
        """Whether a worker's error exit is the chaos's doing, not a failure
        (PostgreSQL: it could not open while the server was down)."""
        return False

    def quotas_met(self) -> bool:
        return self.kills >= self.tier.kills and self.completed_stops() >= self.tier.stops

    # -- workers ---------------------------------------------------------------------

    def spawn(self, crash_at: str | None = None) -> Worker:
        self.spawns += 1
        tag = f"w{self.spawns}"
        out, err = self.dir / f"{tag}.out", self.dir / f"{tag}.err"
        env = _env(self.extra_env)
        if crash_at:
            env["DURABLY_CRASH_AT"] = crash_at
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, str(WORKLOAD), str(self.db), str(self.ledger), tag, "--lease", str(self.tier.lease)],
                stdout=fo,
                stderr=fe,
                env=env,
            )
        worker = Worker(tag, proc, time.time(), crash_at, out, err)
        self.workers[tag] = worker
        self.alive.append(tag)
        return worker

    def _crash_spec(self) -> str | None:
        if self.rng.random() >= self.tier.crash_point_p:
            return None
        point, lo, hi = self.rng.choice(CRASH_POINTS)
        return f"{point}:{self.rng.randint(lo, hi)}"

    def reap(self, chaos: bool) -> None:
        """Note the workers that died; start new ones so three serve."""
        for tag in list(self.alive):
            w = self.workers[tag]
            rc = w.proc.poll()
            if rc is None:
                continue
            with self.lock:
                self.alive.remove(tag)
                w.rc, w.died = rc, w.killed_at or time.time()
                if w.killed_at is not None:
                    w.cause = "killed"
                elif rc == -signal.SIGKILL and w.crash_at:
                    w.cause = "crashed"
                    self.crashes += 1
                elif self.excused(w):
                    w.cause = "excused"
                else:
                    w.cause = "error"
                    self.problems.append(f"harness: worker {tag} exited {rc}: {w.err.read_text()[-3000:]}")
        while len(self.alive) < WORKERS:
            self.spawn(self._crash_spec() if chaos else None)

    def kill_one(self) -> None:
        with self.lock:
            candidates = [
                t
                for t in self.alive
                if t != self.stopped and self.workers[t].proc.poll() is None and self.killable(self.workers[t])
            ]
            if self.stopped is not None and self.rng.random() < self.tier.kill_stopped_p:
                candidates = [self.stopped]
            if not candidates:
                return
            w = self.workers[self.rng.choice(candidates)]
            try:
                w.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                return
            w.killed_at = time.time()
            self.kills += 1
            if not w.ready():
                self.kills_before_ready += 1
        w.proc.wait()

    def stop_one(self) -> bool:
        """SIGSTOP a worker that owns pending workflows (if one does); a
        timer SIGCONTs it later, whatever the driver is doing then (a client
        write may wait for the paused process's write lock).

        A worker paused inside its write transaction holds the file's write
        lock: nobody can commit (nor take anything over) until it continues.
        Such rounds are noted (``frozen``); most are cut short, some are kept
        (every lease lapses meanwhile, then all race)."""
        with self.lock:
            ready = [t for t in self.alive if self.workers[t].ready() and self.workers[t].proc.poll() is None]
            if not ready:
                return False
            owned_by = {
                t: dict(
                    self.q(
                        "SELECT workflow_id, epoch FROM workflows WHERE status = 'PENDING' AND executor = ?",
                        (self.workers[t].executor,),
                    )
                )
                for t in ready
            }
            busy = [t for t in ready if owned_by[t]]
            if not busy:
                return False  # nothing to take over from anyone now: try again soon
            if self.tier.stop_busiest:
                busy = [max(busy, key=lambda t: len(owned_by[t]))]
            w = self.workers[self.rng.choice(busy)]
            seconds = self.rng.uniform(*self.tier.stop_len)
            w.proc.send_signal(signal.SIGSTOP)
            round_ = {"tag": w.tag, "t_stop": time.time(), "seconds": seconds, "owned": owned_by[w.tag]}
            self.stopped = w.tag
        round_["frozen"] = self._holds_write_lock()
        if round_["frozen"] and self.rng.random() > self.tier.keep_frozen_p:
            seconds = round_["seconds"] = 0.0  # continue it now: nothing can be taken over meanwhile
        self.stop_timer = threading.Timer(max(0.0, round_["t_stop"] + seconds - time.time()), self._cont, (w, round_))
        self.stop_timer.start()
        return True

    def _holds_write_lock(self) -> bool:
        """Whether the write lock stays taken for 0.3 s (other processes hold it
        for milliseconds at a time): the paused worker holds it."""
        if self.pg:
            return self._holds_fence_lock()
        try:
            self.probe.execute("BEGIN IMMEDIATE")
        except apsw.BusyError:
            return True
        self.probe.execute("ROLLBACK")
        return False

    def _holds_fence_lock(self) -> bool:
        """PostgreSQL: a worker paused inside a batch holds the fence shared
        (the advisory fence lock, or the takeovers row FOR SHARE), and the
        next claim (exclusive) queues behind it, and every batch behind that:
        frozen when the fence cannot be had exclusive for 0.3 s."""
        from .backends import control

        key = getattr(self.client._store, "_fence_key", None)
        try:
            with control() as conn:
                conn.execute("SELECT set_config('search_path', %s, false)", (f'"{testing.schema(self.client)}"',))
                deadline = time.monotonic() + 0.3
                while time.monotonic() < deadline:
                    if key is not None:
                        if conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                            return False
                    else:
                        try:
                            with conn.transaction():
                                conn.execute("SELECT value FROM engine_state WHERE key = 'takeovers' FOR UPDATE NOWAIT")
                            return False
                        except Exception as exc:
                            if getattr(exc, "sqlstate", None) != "55P03":  # lock_not_available
                                raise
                    time.sleep(0.02)
        except Exception:  # the server is restarting: nobody commits now anyway
            return False
        return True

    def _cont(self, w: Worker, round_: dict[str, Any]) -> None:
        with self.lock:
            ids = list(round_["owned"])
            after: dict[str, Any] = {}
            for at in range(0, len(ids), 500):
                chunk = ids[at : at + 500]
                after.update(
                    {
                        wid: (executor, epoch)
                        for wid, executor, epoch in self.q(
                            f"SELECT workflow_id, executor, epoch FROM workflows WHERE workflow_id IN"
                            f" ({', '.join('?' * len(chunk))})",
                            chunk,
                        )
                    }
                )
            round_["taken"] = {
                wid: after[wid][1] for wid, e in round_["owned"].items() if wid in after and after[wid][1] > e
            }
            self.stopped = None
            round_["t_cont"] = None  # killed while stopped: not a completed round
            if w.killed_at is None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
                round_["t_cont"] = time.time()
            self.stop_rounds.append(round_)

    def past_lease(self) -> list[dict[str, Any]]:
        """Completed rounds: stopped longer than the lease, then continued."""
        return [r for r in self.stop_rounds if r["t_cont"] is not None and r["t_cont"] - r["t_stop"] > self.tier.lease]

    def completed_stops(self) -> int:
        """Completed rounds in which workflows were taken over from the paused worker."""
        return sum(1 for r in self.past_lease() if r["taken"])

    # -- the planned workload ---------------------------------------------------------------

    def start_wave(self) -> None:
        t, w = self.tier, self.waves
        self.waves += 1
        half = t.messages // 2
        starts: list[tuple[str, str, list[Any]]] = [
            (f"ch-{w}-0", "chain", [t.steps, t.delay]),
            (f"ch-{w}-1", "chain", [t.steps, t.delay]),
            (f"ac-{w}", "achain", [t.steps, t.delay]),
            (f"pa-{w}", "parent", [max(2, t.steps // 2), t.delay]),
            (f"tk-{w}", "consumer", [t.messages, 0.3]),
            (f"pr-{w}", "producer", [f"tk-{w}", half]),
        ]
        if t.slow is not None:
            starts.append((f"sl-{w}", "slow", [2, *t.slow]))
        for wid, name, args in starts:
            self.plan[wid] = [name, args]
            self.client.start(name, *args, workflow_id=wid)
        for i in range(3):
            wid = f"q-{w}-{i}"
            self.plan[wid] = ["qjob", [i, t.job_delay]]
            self.client.enqueue("q", "qjob", i, t.job_delay, workflow_id=wid)
        payloads = [f"c:tk-{w}:{j}" for j in range(half)]
        self.client_messages[f"tk-{w}"] = payloads
        self.outbox.extend((f"tk-{w}", p) for p in payloads)

    def send_one(self, spaced: bool = True) -> None:
        """The driver's messages go out one at a time, spaced (consumers wait)."""
        if spaced and time.monotonic() < self.next_send:
            return
        self.next_send = time.monotonic() + self.tier.send_every
        if self.outbox:
            dest, payload = self.outbox.pop(0)
            self.client.send(dest, payload, topic="m")

    def pending(self) -> int:
        return self.q("SELECT count(*) FROM workflows WHERE status = 'PENDING'")[0][0]

    # -- the run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        t = self.tier
        began = time.monotonic()
        self.client.open()
        if not self.pg:
            self.probe = apsw.Connection(str(self.db))
            self.probe.setbusytimeout(300)
        try:
            self.reap(chaos=False)
            now = time.monotonic()
            next_wave, next_kill = now, now + self.rng.uniform(*t.kill_gap)
            next_stop = now + self.rng.uniform(*t.stop_gap)
            while not self.quotas_met():
                now = time.monotonic()
                if now - began > t.max_chaos:
                    self.problems.append(
                        f"harness: quotas not met in {t.max_chaos} s: {self.kills} kills, "
                        f"{self.completed_stops()} stop rounds"
                    )
                    break
                self.reap(chaos=True)
                if now >= next_wave and self.pending() < t.max_backlog:
                    self.start_wave()
                    next_wave = now + t.wave_every
                if now >= next_kill and self.kills < t.kills:
                    self.kill_one()
                    next_kill = time.monotonic() + self.rng.uniform(*t.kill_gap)
                if self.stopped is None and self.stop_timer is not None:
                    self.stop_timer.join()
                    self.stop_timer = None
                    next_stop = time.monotonic() + self.rng.uniform(*t.stop_gap)
                if self.stop_timer is None and now >= next_stop and self.completed_stops() < t.stops:
                    self.stop_one()
                self.more_chaos(now)
                self.send_one()
                time.sleep(0.02)
            chaos_end = time.monotonic()
            if self.stop_timer is not None:
                self.stop_timer.join()
            self.reap(chaos=False)
            while self.outbox:
                self.send_one(spaced=False)
            self.settle()
            settled = time.monotonic()
            self.close_workers()
        finally:
            for tag in list(self.alive):  # only after a failure above
                self.workers[tag].proc.kill()
                self.workers[tag].proc.wait()
            if self.probe is not None:
                self.probe.close()
            self.client.close()
        report = {
            "seed": self.seed,
            "kills": self.kills,
            "kills_before_ready": self.kills_before_ready,
            "crash_point_deaths": self.crashes,
            "stop_rounds": self.completed_stops(),
            "stop_rounds_past_lease": len(self.past_lease()),
            "stop_rounds_frozen": sum(1 for r in self.past_lease() if r["frozen"]),
            "stop_rounds_cut_short": sum(
                1 for r in self.stop_rounds if r["t_cont"] is not None and r["t_cont"] - r["t_stop"] <= self.tier.lease
            ),
            "taken_while_stopped": sum(len(r["taken"]) for r in self.past_lease()),
            "killed_while_stopped": sum(1 for r in self.stop_rounds if r["t_cont"] is None),
            "workers_started": self.spawns,
            "waves": self.waves,
            "workflows": len(self.plan),
            "chaos_seconds": round(chaos_end - began, 1),
            "settle_seconds": round(settled - chaos_end, 1),
        }
        self.save()
        return report

    def settle(self) -> None:
        """Wait for every planned workflow to end. After ``tier.settle``
        seconds it is a hang: noted, then the owners of what is still pending
        are killed (their workflows go to the others) so the run can end and
        be checked."""
        for attempt in range(3):
            deadline = time.monotonic() + self.tier.settle
            while self.pending():
                if time.monotonic() > deadline:
                    break
                self.reap(chaos=False)
                time.sleep(0.05)
            else:
                return
            self.problems.append(
                f"hang: still pending {self.tier.settle} s after the chaos (attempt {attempt + 1}): {self.diagnose()}"
            )
            owners = {e for (e,) in self.q("SELECT DISTINCT executor FROM workflows WHERE status = 'PENDING'")}
            for tag in list(self.alive):
                w = self.workers[tag]
                if w.executor in owners:
                    w.proc.send_signal(signal.SIGKILL)
                    w.killed_at = time.time()
                    w.proc.wait()
            self.reap(chaos=False)

    def close_workers(self) -> None:
        for tag in self.alive:
            Path(f"{self.ledger}.stop-{tag}").touch()
        for tag in list(self.alive):
            w = self.workers[tag]
            try:
                rc = w.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.problems.append(f"harness: worker {tag} did not close in 60 s")
                w.proc.kill()
                rc = w.proc.wait()
            w.rc, w.died, w.cause = rc, time.time(), "closed"
            if rc != 0:
                if rc == -signal.SIGKILL and w.crash_at:  # its crash point came up while closing
                    w.cause = "crashed"
                    self.crashes += 1
                else:
                    self.problems.append(f"harness: worker {tag} closed with {rc}: {w.err.read_text()[-3000:]}")
            self.alive.remove(tag)

    def diagnose(self) -> str:
        rows = self.q(
            "SELECT workflow_id, name, executor, epoch, parked, recovery_attempts FROM workflows"
            " WHERE status = 'PENDING' LIMIT 20"
        )
        execs = self.q("SELECT executor_id, pid, lease_until, stopped_at FROM executors WHERE stopped_at IS NULL")
        alive = {t: (self.workers[t].proc.pid, self.workers[t].executor) for t in self.alive}
        return f"pending {rows}; executors {execs} (now {time.time():.3f}); alive {alive}"

    def save(self) -> None:
        events = {
            "seed": self.seed,
            "db": str(self.db),
            "plan": self.plan,
            "client_messages": self.client_messages,
            "stop_rounds": self.stop_rounds,
            "problems": self.problems,
            "workers": {
                t: {
                    "pid": w.proc.pid,
                    "spawned": w.spawned,
                    "crash_at": w.crash_at,
                    "died": w.died,
                    "rc": w.rc,
                    "cause": w.cause,
                    "executor": w.executor,
                }
                for t, w in self.workers.items()
            },
        }
        (self.dir / "events.json").write_text(json.dumps(events, indent=1))


# -- the checker ---------------------------------------------------------------------------


@dataclass
class Verdict:
    counts: Counter[str] = field(default_factory=Counter)
    info: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # error lines the workers logged

    def flag(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        if len(self.problems) < 200:
            self.problems.append(f"{kind}: {text}")

    @property
    def ok(self) -> bool:
        return not any(self.counts[k] for k in VIOLATIONS)


@dataclass
class BodyRun:
    wid: str
    index: int
    tag: str
    epoch: int
    token: str
    given: str
    t0: float
    value: str | None = None
    t1: float | None = None


def check(workdir: Path) -> Verdict:
    """Fold the ledger, the final database and the driver's events into a verdict."""
    v = Verdict()
    events = json.loads((workdir / "events.json").read_text())
    for p in events["problems"]:
        kind, _, text = p.partition(": ")
        v.flag(kind if kind in VIOLATIONS else "harness", text)
    plan: dict[str, list[Any]] = events["plan"]
    workers: dict[str, dict[str, Any]] = events["workers"]
    rounds = [r for r in events["stop_rounds"] if r["t_cont"] is not None]

    runs: dict[str, BodyRun] = {}
    acks: list[list[str]] = []
    wakes: list[list[str]] = []
    stalls: list[list[str]] = []
    records, torn = read_ledger(workdir / "ledger.txt")
    v.info["torn_ledger_records"] = torn
    for kind, *f in records:
        if kind == "S":
            wid, index, tag, epoch, token, given, t0, _pid = f
            runs[token] = BodyRun(wid, int(index), tag, int(epoch), token, given, float(t0))
        elif kind == "E" and f[0] in runs:
            runs[f[0]].value, runs[f[0]].t1 = f[1], float(f[2])
        elif kind == "A":
            acks.append(f)
        elif kind == "W":
            wakes.append(f)
        elif kind == "O":
            stalls.append(f)

    conn = Reader(events.get("db") or workdir / "mp.db")
    try:
        if not conn.integrity_ok():
            v.flag("harness", "integrity_check failed")
        flows = {
            w: (name, st, out if st == "SUCCESS" else err)
            for w, name, st, out, err in conn.rows("SELECT workflow_id, name, status, output, error FROM workflows")
        }
        steps = conn.rows(
            f"SELECT workflow_id, position, name, output, recorded_at FROM steps WHERE name IN"
            f" ({', '.join('?' * len(STEP_NAMES))})",
            STEP_NAMES,
        )
        sends = Counter(w for (w,) in conn.rows("SELECT workflow_id FROM steps WHERE name = 'send'"))
        left = conn.rows("SELECT dest, payload FROM messages")
        counts = dict(conn.rows("SELECT workflow_id, value FROM events WHERE key = 'count'"))
    finally:
        conn.close()

    # -- every planned workflow ends SUCCESS once, nothing else exists --------------------
    expected = dict(plan)
    for wid, (name, args) in plan.items():
        if name == "parent":
            expected[f"{wid}/0"] = ["chain", args]
    results: dict[str, Any] = {}
    for wid, (name, status, out) in flows.items():
        if wid not in expected:
            v.flag("unexpected", f"{wid} ({name}, {status})")
        elif status != "SUCCESS":
            v.flag("errors" if status == "ERROR" else "lost", f"{wid} ended {status}: {out}")
        else:
            results[wid] = json.loads(out)
    for wid in expected:
        if wid not in flows:
            v.flag("lost", f"{wid} was never recorded")

    # -- which body run each recorded step outcome came from ---------------------------
    durable: dict[tuple[str, int], BodyRun] = {}
    recorded_at: dict[str, float] = {}
    for wid, _pos, _name, out, at in steps:
        token = json.loads(out)["t"]
        run = runs.get(token)
        if run is None or run.wid != wid:
            v.flag("phantom", f"{wid}: recorded outcome {out} was produced by no body run")
            continue
        if str(json.loads(out)["v"]) != run.value:
            v.flag("phantom", f"{wid}: recorded {out}, the body returned {run.value}")
        if (wid, run.index) in durable:
            v.flag("wrong_result", f"{wid}: step {run.index} recorded twice")
        durable[(wid, run.index)] = run
        recorded_at[token] = at
    by_step: dict[tuple[str, int], list[BodyRun]] = defaultdict(list)
    by_flow: dict[str, list[BodyRun]] = defaultdict(list)
    for run in runs.values():
        by_step[(run.wid, run.index)].append(run)
        by_flow[run.wid].append(run)

    # -- results are the journal's ------------------------------------------------------
    for wid, res in results.items():
        name, args = expected[wid]
        tokens = [durable[(wid, i)].token if (wid, i) in durable else None for i in range(len(res["tokens"]))]
        want_steps = {
            "chain": args[0],
            "achain": args[0],
            "slow": args[0],
            "parent": 1,
            "qjob": 1,
            "consumer": args[0],
            "producer": 0,
        }[name]
        if (
            res["tokens"] != tokens
            or len(tokens) != want_steps
            or any((wid, i) in durable for i in range(want_steps, want_steps + 50))
        ):
            v.flag("wrong_result", f"{wid} returned tokens {res['tokens']}, the journal has {tokens}")
            continue
        if name in CHAINS:
            prev = 0
            for i in range(want_steps):
                for run in by_step[(wid, i)]:  # every run, recorded or not, ran on recorded input
                    if int(run.given) != prev:
                        v.flag(
                            "speculative", f"{wid} step {i} ran in {run.tag} on {run.given}, the journal says {prev}"
                        )
                prev = int(durable[(wid, i)].value or 0)
            if res["sum"] != prev:
                v.flag("wrong_result", f"{wid} returned sum {res['sum']}, the journal says {prev}")
        elif name == "parent":
            child = results.get(f"{wid}/0")
            run = durable[(wid, 0)]
            for other in by_step[(wid, 0)]:
                if child is None or int(other.given) != child["sum"]:
                    v.flag("speculative", f"{wid} added to {other.given} in {other.tag}, its child returned {child}")
            if child is None or res["child"] != child["sum"]:
                v.flag("wrong_result", f"{wid} returned child sum {res['child']}, its child returned {child}")
            if res["sum"] != int(run.value or 0):
                v.flag("wrong_result", f"{wid} returned {res['sum']}, the journal says {run.value}")
        elif name == "qjob" and (res["i"] != args[0] or durable[(wid, 0)].given != str(args[0])):
            v.flag("wrong_result", f"{wid} returned {res}")
        elif name == "consumer":
            if [durable[(wid, i)].value for i in range(want_steps)] != res["got"]:
                v.flag("wrong_result", f"{wid} got {res['got']}, its seen steps recorded otherwise")
        elif name == "producer" and (res["n"] != args[1] or sends[wid] != args[1]):
            v.flag("messages", f"{wid} returned {res}, {sends[wid]} send steps recorded")

    # -- acknowledged outcomes are the journal's ------------------------------------------
    for wid, index, token, tag in acks:
        run = durable.get((wid, int(index)))
        if run is None or run.token != token:
            v.flag(
                "acked_lost",
                f"{wid} step {index} acknowledged {token} to {tag}, the journal has {run.token if run else None}",
            )

    # -- re-runs: only after a kill or a takeover, never twice under one epoch ------------
    deaths = {t: w["died"] for t, w in workers.items() if w["cause"] in ("killed", "crashed")}
    stops = defaultdict(list)
    for r in rounds:
        stops[r["tag"]].append((r["t_stop"], r["t_cont"]))
    for (wid, index), group in by_step.items():
        # Epoch 0: a child started by its parent's process, never claimed. It
        # is no fencing token (a zombie replaying the parent runs it under 0
        # too): only one process running it twice counts there.
        per_epoch = Counter((r.epoch, r.tag if r.epoch == 0 else "") for r in group if r.epoch >= 0)
        for (e, _tag), n in per_epoch.items():
            if n > 1:
                v.flag(
                    "same_epoch_reruns",
                    f"{wid} step {index}: {n} body runs under epoch {e}: "
                    f"{[(r.tag, r.t0) for r in group if r.epoch == e]}",
                )
        rec = durable.get((wid, index))
        for run in group:
            if run is rec:
                continue
            v.info["duplicated_effects"] += 1
            died = deaths.get(run.tag)
            killed = died is not None and died >= run.t0
            fenced = rec is not None and (run.epoch < rec.epoch or run.epoch == -1)
            if killed or fenced:  # figures: what came first after the run started
                end = run.t1 if run.t1 is not None else (died or float("inf"))
                paused = any(run.t0 <= a <= end or a <= run.t0 <= c + 2.0 for a, c in stops[run.tag])
                v.info[
                    "rerun_after_pause"
                    if paused and fenced
                    else "rerun_after_kill"
                    if killed
                    else "rerun_after_fence_lease_lapsed"
                ] += 1
                if run.epoch == -1:
                    v.info["body_started_after_fence_known"] += 1
            else:
                v.flag(
                    "unjustified_duplicates",
                    f"{wid} step {index}: run by {run.tag} (epoch {run.epoch}, "
                    f"t0 {run.t0:.3f}) not recorded; recorded: "
                    f"{(rec.tag, rec.epoch) if rec else None}; "
                    f"{run.tag} neither killed nor fenced",
                )

    # -- fencing: nothing recorded under an epoch older than one already running it -------
    for wid, flow_runs in by_flow.items():
        for (w, index), rec in durable.items():
            if w != wid:
                continue
            newer = [r for r in flow_runs if r.index <= index and r.epoch > rec.epoch]
            if rec.epoch == -1 or newer:
                v.flag(
                    "stale_records",
                    f"{wid} step {index} recorded from {rec.tag} at epoch {rec.epoch}, after "
                    f"{[(r.tag, r.epoch, r.index) for r in newer][:3]} ran it under a newer epoch",
                )
    for wid, res in results.items():
        newest = max((r.epoch for r in by_flow.get(wid, [])), default=0)
        if res["epoch"] < newest or res["epoch"] == -1:
            v.flag(
                "stale_records",
                f"{wid} completed by {res['by']} at epoch {res['epoch']}, after a body ran under epoch {newest}",
            )

    # -- the paused process recorded nothing for what was taken over meanwhile -------------
    for r in rounds:
        for wid in r["taken"]:
            old = r["owned"][wid]
            for (w, index), rec in durable.items():
                # (0.1 s: SQLite's clock is rounded to the millisecond, and a
                # stopped process may run for a moment after kill() returns)
                if w == wid and rec.tag == r["tag"] and rec.epoch <= old and recorded_at[rec.token] > r["t_stop"] + 0.1:
                    v.flag(
                        "zombie_records",
                        f"{wid} step {index} recorded by {r['tag']} (epoch {rec.epoch}) "
                        f"at {recorded_at[rec.token]:.3f}, after its SIGSTOP at {r['t_stop']:.3f} "
                        f"and a takeover (epoch {r['taken'][wid]})",
                    )
            res = results.get(wid)
            if res is not None and res["by"] == r["tag"] and res["epoch"] <= old:
                v.flag(
                    "zombie_records",
                    f"{wid} completed by {r['tag']} at epoch {res['epoch']} after it was "
                    f"taken over (epoch {r['taken'][wid]}) while {r['tag']} was stopped",
                )

    # -- queue: never more than the limit running under a live owner ----------------------
    ends = []
    for run in runs.values():
        if not run.wid.startswith("q-") or (rec := durable.get((run.wid, run.index))) is None:
            continue
        end = run.t1 if run.t1 is not None else deaths.get(run.tag, float("inf"))
        # A run stops holding the slot when its workflow is taken over from
        # it; one that starts after a run under a newer epoch began (a body
        # launched by a process that had lost the workflow a moment before:
        # its record is fenced) never holds one. (On PostgreSQL a live
        # process's lease lapses while the server restarts, so the claim
        # can land between its ownership check and its launch.)
        later = [r.t0 for r in by_flow[run.wid] if r.epoch > run.epoch]
        if later:
            end = min(end, min(later))
        if rec.epoch > run.epoch:
            for a, _c in stops[run.tag]:
                if run.t0 <= a <= end:
                    end = a
        if end > run.t0:
            ends.append((run.t0, 1, run.wid))
            ends.append((end, -1, run.wid))
    live: Counter[str] = Counter()
    peak = 0
    for t, d, wid in sorted(ends, key=lambda e: (e[0], e[1])):
        live[wid] += d
        if live[wid] == 0:
            del live[wid]
        if len(live) > peak:
            peak = len(live)
            if peak > QUEUE_LIMIT:
                v.flag("queue_over_limit", f"{peak} queued workflows running at {t:.3f}: {sorted(live)}")
    v.info["queue_peak"] = peak

    # -- messages exactly once, in order per sender; the event; the sleep -------------------
    for wid, (name, args) in plan.items():
        if name != "consumer" or wid not in results:
            continue
        got = results[wid]["got"]
        producer = [f"p:{wid}:{j}" for j in range(args[0] // 2)]
        client = events["client_messages"].get(wid, [])
        if (
            sorted(got) != sorted(producer + client)
            or [m for m in got if m.startswith("p:")] != producer
            or [m for m in got if m.startswith("c:")] != client
        ):
            v.flag("messages", f"{wid} received {got}, sent {producer + client}")
        if counts.get(wid) != str(args[0]) and counts.get(wid) != args[0]:
            v.flag("messages", f"{wid}'s count event is {counts.get(wid)}, not {args[0]}")
    for dest, payload in left:
        v.flag("messages", f"message {payload} to {dest} left undelivered (sent twice?)")
    for wid, tag, since, now in stalls:
        v.flag(
            "stalled",
            f"{wid}: {tag} owned it but had not run it for {float(now) - float(since):.1f} s "
            f"(since {float(since):.3f}): nobody runs it while {tag} keeps its lease",
        )
    for wid, before, seconds, after, tag in wakes:
        if float(after) < float(before) + float(seconds) - 0.005:
            v.flag("early_wakes", f"{wid} in {tag}: a sleep of {seconds} s asked at {before} ended at {after}")
    v.info["body_runs"] = len(runs)
    # -- what the workers logged (figures, not verdicts) --------------------------------------
    for err in sorted(workdir.glob("w*.err")):
        for line in err.read_text(errors="replace").splitlines():
            if "took over" in line:
                v.info["log_takeovers"] += 1
            elif "in doubt after reconnecting" in line:  # PostgreSQL: a batch's commit in doubt, settled
                v.info["in_doubt_committed" if "committed (acknowledged)" in line else "in_doubt_reapplied"] += 1
            elif "durably: reconnected to" in line:
                v.info["log_reconnects"] += 1
            elif "to another executor" in line:
                v.info["log_fenced"] += 1
            elif " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                v.info["log_errors"] += 1
                v.notes.append(f"{err.name}: {line[:300]}")
    return v


# -- the tiers ---------------------------------------------------------------------------


def run_seed(
    workdir: Path,
    seed: int,
    tier: Tier,
    env: dict[str, str] | None = None,
    report_to: str | None = os.environ.get("DURABLY_CHAOS_REPORT"),
    *,
    db: str | None = None,
    run_class: type[Run] = Run,
    tier_name: str = "processes",
) -> tuple[dict[str, Any], Verdict]:
    t0 = time.monotonic()
    report = run_class(workdir, seed, tier, env, db).run()
    verdict = check(workdir)
    report.update(
        wall_seconds=round(time.monotonic() - t0, 1),
        ok=verdict.ok,
        violations={k: verdict.counts[k] for k in VIOLATIONS},
        **dict(verdict.info),
        problems=verdict.problems[:10],
        worker_errors=verdict.notes[:10],
    )
    if report_to:  # one JSON object per line and seed (xdist workers append to one file)
        with open(report_to, "a") as f:
            f.write(json.dumps({"tier": tier_name, **report}) + "\n")
    return report, verdict


def _assert_clean(report: dict[str, Any], verdict: Verdict, tier: Tier) -> None:
    assert verdict.ok, (
        f"seed {report['seed']}: reproduce with run_seed(dir, {report['seed']}, ...)",
        {k: n for k, n in verdict.counts.items() if n},
        verdict.problems[:12],
    )
    assert report["kills"] >= tier.kills and report["stop_rounds"] >= tier.stops, report


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", range(2))
def test_three_processes_survive_kills_and_pauses(tmp_path: Path, seed: int) -> None:
    report, verdict = run_seed(tmp_path, seed, QUICK)
    _assert_clean(report, verdict, QUICK)


LONG_SEEDS = range(1000, 1032)  # 32 seeds x (70 kills, 7 stop rounds): >= 2,240 kills, >= 224 rounds


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", LONG_SEEDS)
def test_three_processes_survive_kills_and_pauses_long_tier(tmp_path: Path, seed: int) -> None:
    report, verdict = run_seed(tmp_path, seed, LONG)
    _assert_clean(report, verdict, LONG)


# -- negative controls: the checker must be able to fail ------------------------------------


def _forge(workdir: Path) -> None:
    """Forge one failure of each kind into a finished clean run's evidence."""
    records, _torn = read_ledger(workdir / "ledger.txt")
    starts = {f[4]: f for kind, *f in records if kind == "S"}
    db = json.loads((workdir / "events.json").read_text()).get("db") or workdir / "mp.db"
    conn = Reader(db, readonly=False)
    # json_set (SQLite), jsonb_set (PostgreSQL: values are json text)
    # (json_set leaves a value that is no object alone: so does the CASE)
    pg_set = (
        "CASE WHEN jsonb_typeof(output::jsonb) = 'object' THEN jsonb_set(output::jsonb, '{{{0}}}', '{1}')::text"
        " ELSE output END"
    )
    set_sum, set_t = (
        (pg_set.format("sum", "1"), pg_set.format("t", '"nosuch"'))
        if conn.pg
        else ("json_set(output, '$.sum', 1)", "json_set(output, '$.t', 'nosuch')")
    )
    try:
        rows = conn.rows(
            "SELECT workflow_id, output FROM steps WHERE name = 'add'"
            " AND workflow_id LIKE 'ch-%' ORDER BY workflow_id, position"
        )
        (wid_a, out_a), (wid_b, out_b), (wid_c, out_c) = rows[0], rows[-1], rows[len(rows) // 2]
        assert len({wid_a, wid_b, wid_c}) == 3
        # an ERROR, a workflow nobody planned, a result that is not the journal's,
        # a recorded outcome no body produced
        conn.execute("UPDATE workflows SET status = 'ERROR' WHERE workflow_id = 'ac-0'")
        conn.execute(
            "INSERT INTO workflows (workflow_id, name, status, inputs) VALUES ('zz-1', 'chain', 'SUCCESS', '[]')"
        )
        conn.execute(f"UPDATE workflows SET output = {set_sum} WHERE workflow_id = 'ch-1-0'")
        conn.execute(f"UPDATE steps SET output = {set_t} WHERE workflow_id = 'pa-0'")
        # a message left behind (delivered twice)
        conn.execute("INSERT INTO messages (dest, topic, payload) VALUES ('tk-0', 'm', '\"c:tk-0:0\"')")
    finally:
        conn.close()
    a, b, c = (starts[json.loads(o)["t"]] for o in (out_a, out_b, out_c))
    with (workdir / "ledger.txt").open("a") as f:
        # the recorded owner ran a's step again under the same epoch, not killed
        f.write(format_record("S", a[0], a[1], a[2], a[3], "forged1", a[5], float(a[6]) + 0.01, 1))
        f.write(format_record("E", "forged1", 5, float(a[6]) + 0.02))
        # b's step ran in another process under a newer epoch before b's record: a stale record
        f.write(format_record("S", b[0], b[1], "wX", int(b[3]) + 1, "forged2", b[5], float(b[6]), 1))
        # a body that ran (in a process that knew it was fenced) on an input the journal never had
        f.write(format_record("S", c[0], c[1], c[2], -1, "forged7", -5, float(c[6]), 1))
        # a step outcome acknowledged that the journal does not hold
        f.write(format_record("A", c[0], c[1], "forged3", c[2]))
        # two queued jobs overlapping the real ones: three at once
        for i, tok in ((7, "forged4"), (8, "forged5"), (9, "forged6")):
            f.write(format_record("S", f"q-0-{i - 7}", 0, "wY", 9, tok, 0, 100.0, 1))
            f.write(format_record("E", tok, 0, 101.0))
        # a durable sleep that woke up early
        f.write(format_record("W", "tk-0", 200.0, 0.3, 200.1, "wZ"))
        # a workflow its owner did not run
        f.write(format_record("O", "ch-0-0", "wZ", 300.0, 303.5))
    events = json.loads((workdir / "events.json").read_text())
    events["plan"]["q-extra"] = ["qjob", [0, 0.1]]  # planned, never run: lost
    events["problems"].append("hang: still pending 30 s after the chaos")
    # a stop round in which c's workflow was taken over, and c's owner recorded after it
    run_c = starts[json.loads(out_c)["t"]]
    events["stop_rounds"].append(
        {
            "tag": run_c[2],
            "t_stop": float(run_c[6]) - 5,
            "t_cont": float(run_c[6]) - 3,
            "seconds": 2,
            "owned": {run_c[0]: int(run_c[3])},
            "taken": {run_c[0]: int(run_c[3]) + 1},
        }
    )
    (workdir / "events.json").write_text(json.dumps(events))


@pytest.mark.timeout(300)
def test_the_checker_catches_broken_runs(tmp_path: Path) -> None:
    """Negative control: a clean run checks clean; the same evidence with one
    failure of each kind forged in is reported, each in its category."""
    tier = Tier(kills=2, stops=1, max_backlog=10)
    report, verdict = run_seed(tmp_path, 7, tier, report_to=None)
    _assert_clean(report, verdict, tier)
    _forge(tmp_path)
    broken = check(tmp_path)
    assert not broken.ok
    for kind in VIOLATIONS:
        if kind == "harness":
            continue
        assert broken.counts[kind] >= 1, (kind, broken.counts, broken.problems)


@pytest.mark.timeout(300)
def test_the_checker_catches_a_paused_process_without_fencing(tmp_path: Path) -> None:
    """Negative control on real processes: with fencing switched off in the
    workers, a process stopped past its lease and continued goes on recording
    for the workflows the others took over meanwhile; the checker reports it."""
    tier = Tier(
        kills=0,
        stops=2,
        stop_gap=(0.2, 0.5),
        steps=30,
        delay=0.15,
        max_backlog=30,
        crash_point_p=0.0,
        stop_busiest=True,
    )
    _report, verdict = run_seed(tmp_path, 11, tier, env={"DURABLY_MP_BREAK_FENCING": "1"}, report_to=None)
    assert not verdict.ok
    caught = {
        k
        for k in (
            "stale_records",
            "zombie_records",
            "same_epoch_reruns",
            "unjustified_duplicates",
            "errors",
            "wrong_result",
            "acked_lost",
            "messages",
        )
        if verdict.counts[k]
    }
    assert caught, (verdict.counts, verdict.problems[:10])


# -- engine bugs this tier found, reproduced -------------------------------------------------


class Pair:
    """Workers started by hand on one file, and a client to watch them."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir, self.db, self.ledger = tmp_path, tmp_path / "mp.db", tmp_path / "ledger.txt"
        self.client = durably.Engine(str(self.db), client=True)
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, tag: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.dir / f"{tag}.err").open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(WORKLOAD), str(self.db), str(self.ledger), tag, "--lease", "1.0"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=_env(env),
            )
        self.procs.append(proc)
        return proc

    def rows(self) -> list[tuple[Any, ...]]:
        return sorted((w.workflow_id, w.epoch, w.status) for w in testing.workflows(self.client))

    @staticmethod
    def wait_for(cond: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()
        self.client.close()


def _state(proc: subprocess.Popen[bytes]) -> str:
    with open(f"/proc/{proc.pid}/stat", "rb") as f:  # a process's status, not a database file
        stat = f.read().decode()
    return stat[stat.rfind(")") + 2]


@pytest.mark.timeout(120)
def test_a_paused_owner_continued_after_its_taker_died_runs_what_it_takes_back(tmp_path: Path) -> None:
    """A runs 3 slow workflows (one 4 s step body each); paused 1 s into the
    bodies, B takes them over after A's lease; B is killed; A is continued
    while its (fenced) bodies still run, and takes them back at once (B's
    pid is dead). They must finish (B's bodies would have taken 4 s)."""
    pair = Pair(tmp_path)
    pair.client.open()
    try:
        a = pair.spawn("a")
        for k in range(3):
            pair.client.start("slow", 1, 4.0, 4.0, workflow_id=f"s{k}")
        assert pair.wait_for(lambda: all(e >= 1 for _w, e, _s in pair.rows()), 20)  # A claimed them
        time.sleep(1.0)  # A is inside the bodies
        b = pair.spawn("b")
        a.send_signal(signal.SIGSTOP)
        assert pair.wait_for(lambda: all(e >= 2 for _w, e, _s in pair.rows()), 20)  # B took them over
        b.kill()
        b.wait()
        a.send_signal(signal.SIGCONT)  # A: fenced, then takes them back from dead B (epoch 3)
        finished = pair.wait_for(lambda: all(st == "SUCCESS" for _w, _e, st in pair.rows()), 9)
        assert finished, (pair.rows(), (tmp_path / "a.err").read_text()[-2000:])
    finally:
        pair.close()


@pytest.mark.timeout(120)
def test_a_process_paused_inside_its_takeover_records_nothing_for_what_was_taken_from_it(tmp_path: Path) -> None:
    """A runs 3 slow workflows (one 2.5 s body each); meanwhile it claims 4
    more (10 steps of 0.5 s) and pauses before launching the first of them
    (``DURABLY_MP_PAUSE_IN_CLAIM``); B takes all 7 over after A's lease. A is
    continued 3 s later: the first 3 bodies end at once and their records
    are refused (fenced), while its lease keeper thread is slow to go on
    (1 s) with the launches. A must record nothing for the 4 either: all end
    SUCCESS, and no recorded step comes from a body A started after SIGCONT."""
    pair = Pair(tmp_path)
    pair.client.open()
    try:
        a = pair.spawn("a", {"DURABLY_MP_PAUSE_IN_CLAIM": "4:1.0"})
        time.sleep(1.0)  # A has opened
        for k in range(3):  # launches 1-3
            pair.client.start("slow", 1, 2.5, 2.5, workflow_id=f"c{k}")
        assert pair.wait_for(lambda: len(read_ledger(pair.ledger)[0]) >= 3, 20)  # A is inside their bodies
        # launches 4-7, in one transaction so that A's claim takes all 4 (started
        # one by one, A may claim the first alone, and B then claims the rest at
        # epoch 1: seen in the twin run once waiting for the lock stopped
        # sleeping 1 ms and more): A pauses before the first
        pair.client.start_many("slow", [(10, 0.5, 0.5)] * 4, workflow_ids=[f"s{k}" for k in range(4)])
        assert pair.wait_for(lambda: _state(a) == "T", 20)
        paused = time.monotonic()
        pair.spawn("b")
        assert pair.wait_for(lambda: all(e >= 2 for _w, e, _s in pair.rows()), 20), pair.rows()  # B took all 7
        time.sleep(max(0.0, paused + 3.0 - time.monotonic()))
        a.send_signal(signal.SIGCONT)
        t_cont = time.time()
        assert pair.wait_for(lambda: all(st != "PENDING" for _w, _e, st in pair.rows()), 60), pair.rows()
        statuses = {w: st for w, _e, st in pair.rows()}
        records, _torn = read_ledger(pair.ledger)
        by_a = {f[4] for kind, *f in records if kind == "S" and f[2] == "a" and float(f[6]) > t_cont}
        conn = apsw.Connection(str(pair.db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            recorded = [
                (w, p, json.loads(o)["t"])
                for w, p, o in conn.execute("SELECT workflow_id, position, output FROM steps WHERE name = 'slowadd'")
            ]
        finally:
            conn.close()
        from_a = sorted((w, p) for w, p, t in recorded if t in by_a)
        assert set(statuses.values()) == {"SUCCESS"} and not from_a, (statuses, from_a)
    finally:
        pair.close()
