"""A worker process of the multi-process crash tier (``test_process_crashes.py``).

    python crashtests/mp_workload.py DB LEDGER TAG [--lease 1.0]

Opens ``durably.Engine(DB, lease=...)`` (a SQLite file, or a
``postgresql://...?schema=`` URL: ``test_pg_process_crashes.py``) with the workflows below registered
and serves until a file ``<LEDGER>.stop-<TAG>`` appears (then closes
cleanly), or until it is killed. It starts nothing itself: the test driver,
a client engine, starts and enqueues the planned workflows and sends
messages; the workers claim and run them, take over each other's when one
dies or is paused past its lease.

The evidence ledger (``crashtests/ledger.py`` records, one ``write()`` each
with ``O_APPEND``: no lock a paused process could hold over the others) gets

* ``S|wid|index|tag|epoch|token|input|t0|pid``: a step body started. ``epoch``
  is the fencing epoch this process holds for the workflow when the body
  starts (0: a child started here, never claimed; -1: this process already
  knows it lost the workflow), ``token`` is unique per body run and is part
  of the step's output, so the journal tells which run was recorded;
* ``E|token|value|t1``: that body returned ``value``;
* ``A|wid|index|token|tag``: the workflow got that step outcome back (it is
  durable: an acknowledged outcome must be the journal's);
* ``W|wid|before|seconds|after|tag``: a durable sleep ended (``before`` is the
  recorded time the sleep was asked at);
* ``O|wid|tag|since|now``: the database says this executor owns a pending
  workflow that it has not been running (nor queued to run) since ``since``.

Every workflow returns ``{"tokens": [...], "by": tag, "epoch": e, ...}``: the
tokens of its step outcomes and which process completed it at which epoch.

``DURABLY_MP_BREAK_FENCING=1`` disables fencing in this process (the checker's
negative control: a paused process that wakes up records for workflows
taken over meanwhile). ``DURABLY_MP_PAUSE_IN_CLAIM=n[:lag]``: the process
SIGSTOPs itself before the n-th launch of workflows its lease keeper claimed
(a pause inside a takeover; the driver continues it), then that thread waits
``lag`` seconds more. ``DURABLY_MP_CLOCK_SKEW=seconds``: ``time.time()`` runs
that far ahead (negative: behind) in this process, as on a host whose clock
is off (with ``DURABLY_HOST``, it looks like another machine); the ledger's
times stay the true ones, except a sleep's end (``W``), which is the clock
the sleep waited on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid

true_time = time.time  # the ledger's clock (the driver's)
SKEW = float(os.environ.get("DURABLY_MP_CLOCK_SKEW", "0"))
if SKEW:
    time.time = lambda: true_time() + SKEW  # what durably reads

import durably  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ledger import format_record  # noqa: E402

QUEUE, QUEUE_LIMIT = "q", 2
TOPIC = "m"
ATTEMPTS = 1_000_000  # never MAX_RECOVERY_ATTEMPTS_EXCEEDED: kills are the point here
STALL = 3.0  # seconds a workflow owned here may go without running here

parser = argparse.ArgumentParser()
parser.add_argument("db")
parser.add_argument("ledger")
parser.add_argument("tag")
parser.add_argument("--lease", type=float, default=1.0)
opts = parser.parse_args()

logging.basicConfig(
    level=logging.WARNING,
    stream=sys.stderr,
    format=f"%(asctime)s.%(msecs)03d {opts.tag} pid {os.getpid()} %(threadName)s %(levelname)s %(message)s",
    datefmt="%H:%M:%S",
)
engine = durably.Engine(opts.db, lease=opts.lease, workers=16)
if os.environ.get("DURABLY_MP_BREAK_FENCING") == "1":
    engine._store._fence = lambda conn, batch, *args: batch  # type: ignore[method-assign]
    engine._store._lost_to_a_race = lambda batch: None  # type: ignore[method-assign]
    # A lone step row carries its own fence check in its statement: every
    # record goes the batch way instead, whose fence is switched off above.
    engine._store._lone_step = lambda conn, rec: False  # type: ignore[method-assign]
_pause = os.environ.get("DURABLY_MP_PAUSE_IN_CLAIM", "0").split(":")
PAUSE_IN_CLAIM, PAUSE_LAG = int(_pause[0]), float(_pause[1]) if len(_pause) > 1 else 0.0
if PAUSE_IN_CLAIM:
    _launch, _launches = engine._runner.launch, [0]

    def _launch_then_pause(*args: object, **kwargs: object) -> None:
        # The lease keeper launches what it has just claimed, one at a time:
        # pause (as a GC pause or a frozen VM would) before the n-th launch.
        if threading.current_thread().name == "durably-coord":
            _launches[0] += 1
            if _launches[0] == PAUSE_IN_CLAIM:
                os.kill(os.getpid(), signal.SIGSTOP)
                time.sleep(PAUSE_LAG)  # continued: this thread is slow to go on (the others are not)
        _launch(*args, **kwargs)

    engine._runner.launch = _launch_then_pause  # type: ignore[method-assign]
# the store's own SQL: psycopg's placeholders on PostgreSQL
PLACEHOLDER = "%s" if getattr(engine._store, "backend", "sqlite") == "postgresql" else "?"
if PLACEHOLDER == "%s" and hasattr(engine._store, "_committed"):
    _committed = engine._store._committed

    def _committed_logged(xid: str) -> bool:
        # Evidence that a batch was in doubt (its connection lost around its
        # commit) and how the store settled it (the checker counts these).
        ok = _committed(xid)
        logging.getLogger("durably").warning(
            "mp_workload: in doubt after reconnecting: transaction %s %s",
            xid,
            "committed (acknowledged)" if ok else "did not commit (applied again)",
        )
        return ok

    engine._store._committed = _committed_logged  # type: ignore[method-assign]
queue = engine.queue(QUEUE, concurrency=QUEUE_LIMIT)
ledger_fd = os.open(opts.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
rng = random.Random()
TAG = opts.tag


def log(*fields: object) -> None:
    # One write() per record: whole in the page cache, which survives SIGKILL
    # (no fsync: this tier kills processes, it does not cut the power).
    os.write(ledger_fd, format_record(*fields).encode())


def epoch() -> int:
    """The fencing epoch this process holds for the current workflow."""
    owned = engine._store.owned
    wid = engine.workflow_id
    if wid not in owned:
        return -1
    e = owned[wid]
    return 0 if e is None else int(e)


def begin(index: int, given: object) -> str:
    token = uuid.uuid4().hex[:16]
    log("S", engine.workflow_id, index, TAG, epoch(), token, given, f"{true_time():.6f}", os.getpid())
    return token


def end(token: str, value: object) -> dict:
    log("E", token, value, f"{true_time():.6f}")
    return {"v": value, "t": token}


def ack(index: int, out: dict) -> dict:
    log("A", engine.workflow_id, index, out["t"], TAG)
    return out


def done(**fields: object) -> dict:
    return {**fields, "by": TAG, "epoch": epoch()}


@engine.step(name="add")
def add(index: int, x: int, delay: float) -> dict:
    token = begin(index, x)
    time.sleep(rng.uniform(0, delay))
    return end(token, x + rng.randint(1, 1_000_000))


@engine.step(name="aadd")
async def aadd(index: int, x: int, delay: float) -> dict:
    token = begin(index, x)
    await asyncio.sleep(rng.uniform(0, delay))
    return end(token, x + rng.randint(1, 1_000_000))


@engine.step(name="slowadd")
def slowadd(index: int, x: int, low: float, high: float) -> dict:
    token = begin(index, x)
    time.sleep(rng.uniform(low, high))  # may outlast a SIGSTOP: the body goes on after SIGCONT
    return end(token, x + rng.randint(1, 1_000_000))


@engine.step(name="slot")
def slot(index: int, i: int, delay: float) -> dict:
    token = begin(index, i)
    time.sleep(rng.uniform(delay / 4, delay))
    return end(token, i)


@engine.step(name="seen")
def seen(index: int, message: str) -> dict:
    token = begin(index, message)
    return end(token, message)


@engine.workflow(name="chain", max_recovery_attempts=ATTEMPTS)
def chain(steps: int, delay: float) -> dict:
    acc, tokens = 0, []
    for i in range(steps):
        out = ack(i, add(i, acc, delay))
        acc = out["v"]
        tokens.append(out["t"])
    return done(sum=acc, tokens=tokens)


@engine.workflow(name="achain", max_recovery_attempts=ATTEMPTS)
async def achain(steps: int, delay: float) -> dict:
    acc, tokens = 0, []
    for i in range(steps):
        out = ack(i, await aadd(i, acc, delay))
        acc = out["v"]
        tokens.append(out["t"])
    return done(sum=acc, tokens=tokens)


@engine.workflow(name="slow", max_recovery_attempts=ATTEMPTS)
def slow(steps: int, low: float, high: float) -> dict:
    acc, tokens = 0, []
    for i in range(steps):
        out = ack(i, slowadd(i, acc, low, high))
        acc = out["v"]
        tokens.append(out["t"])
    return done(sum=acc, tokens=tokens)


@engine.workflow(name="parent", max_recovery_attempts=ATTEMPTS)
def parent(steps: int, delay: float) -> dict:
    child = chain(steps, delay)  # a child workflow, <parent>/0
    out = ack(0, add(0, child["sum"], delay))
    return done(sum=out["v"], tokens=[out["t"]], child=child["sum"])


@engine.workflow(name="qjob", max_recovery_attempts=ATTEMPTS)
def qjob(i: int, delay: float) -> dict:
    out = ack(0, slot(0, i, delay))
    return done(i=out["v"], tokens=[out["t"]])


@engine.workflow(name="consumer", max_recovery_attempts=ATTEMPTS)
def consumer(n: int, nap: float) -> dict:
    got, tokens = [], []
    for j in range(n):
        message = engine.recv(TOPIC)
        out = ack(j, seen(j, message))
        got.append(out["v"])
        tokens.append(out["t"])
        engine.set_event("count", j + 1)
    before = engine.now().timestamp()
    engine.sleep(nap)
    log("W", engine.workflow_id, f"{before:.6f}", nap, f"{time.time():.6f}", TAG)
    return done(got=got, tokens=tokens)


@engine.workflow(name="producer", max_recovery_attempts=ATTEMPTS)
async def producer(dest: str, n: int) -> dict:
    for j in range(n):
        await engine.send_async(dest, f"p:{dest}:{j}", topic=TOPIC)
        if j % 2 == 0:
            await engine.sleep_async(0.03)
    return done(n=n, tokens=[])


def watch_ownership(stop: threading.Event) -> None:
    """Every workflow the database says this executor owns must be running (or
    queued to run) here: one owned but not run for STALL seconds is logged
    ``O|wid|tag|since|now`` (nobody else takes it over while this process
    keeps its lease: it would wait forever)."""
    missing: dict[str, list[float]] = {}  # wid -> [first seen missing, polls in a row]
    reported: set[str] = set()
    while not stop.wait(0.25):
        try:
            rows = engine._store.query(
                f"SELECT workflow_id FROM workflows WHERE status = 'PENDING' AND executor = {PLACEHOLDER}",
                (engine.executor_id,),
            )
        except durably.DurablyError:
            continue
        with engine._runner.lock:
            here = set(engine._runner.active) | set(engine._runner.queued)
        now = true_time()
        owned = {wid for (wid,) in rows}
        for wid in list(missing):
            if wid not in owned or wid in here:
                del missing[wid]
        for wid in owned - here:
            seen = missing.setdefault(wid, [now, 0])
            seen[1] += 1
            since = seen[0]
            # Polls in a row as well as seconds: a SIGSTOP between two polls
            # must not turn a launch in progress into a stall.
            if now - since >= STALL and seen[1] >= STALL / 0.25 and wid not in reported:
                reported.add(wid)
                log("O", wid, TAG, f"{since:.6f}", f"{now:.6f}")
                logging.getLogger("durably").error(
                    "mp_workload: %s is owned here but has not run for %.1f s", wid, now - since
                )


def main() -> int:
    stop_file = f"{opts.ledger}.stop-{TAG}"
    with engine:
        print(f"ready {engine.executor_id}", flush=True)
        stopping = threading.Event()
        threading.Thread(target=watch_ownership, args=(stopping,), name="mp-watch", daemon=True).start()
        while not os.path.exists(stop_file):
            failure = engine._journal.failure
            if failure is not None:  # the writer stopped: this process can't do anything any more
                print(f"{TAG}: the engine's writer failed: {failure!r}", file=sys.stderr, flush=True)
                return 4
            time.sleep(0.05)
        stopping.set()
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
