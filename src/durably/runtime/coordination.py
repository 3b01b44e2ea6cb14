"""Several processes on one file: the lease keeper and the watcher.

The ``Coordinator`` (built at each open, runtime/lifecycle.py) registers
this executor at open (``Store.open`` writes its row with the open mark)
and releases it at a clean close, claims and runs what an executor that
is gone left (at open: the recovery), and abandons what the writer finds
taken over (fencing).
While the engine is open it runs one thread (``durably-coord``):

* every ``lease / 4`` seconds it renews this executor's lease (on the
  store's clock); every ``CLAIM_EVERY`` seconds it claims workflows whose
  owner is gone (store/_executors.py: a stopped executor, an expired lease,
  a dead process on this host; an executor on this host that it saw renew
  its lease lately is never taken: runtime/leases.py), then runs them here;
* every ``PRUNE_EVERY`` seconds it deletes old rows of gone executors and
  old notices, a bounded number per round (``_executors.prune``): sooner
  again while a round finds more, so a pile left by crashes melts in
  minutes, never in one long transaction;
* every ``poll`` seconds it reads ``PRAGMA data_version``; when another
  connection committed, it reads the new *notices* (a message, an event, a
  cancel, a queue entry, a workflow waiting for an owner, committed by any
  process) and wakes what waits for them here, and checks whether a
  workflow some caller here waits for, running in another process, ended.

Polling ``data_version`` is one cheap pragma (no disk I/O while nothing
changed); on SQLite it is read on the writer's connection, so this process's
own commits do not move it and a lone process never reads its notices. The
bench measures the wake-up latency it gives (``bench/scenarios/processes.py``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _crash, _logs, errors
from .. import _records as R
from ..codec import encode_error
from ..journal import Record
from ..store import _executors
from .context import Fenced, stop
from .leases import HostLeases

if TYPE_CHECKING:
    from ..journal import Journal
    from ..store.contract import StoreContract
    from .identity import Identity
    from .runner import Runner
    from .waits import Waits
    from .workflows import WorkflowSpec

log = _logs.get("durably.recovery")
lease_log = _logs.get("durably.leases")

# Workflows one claim takes at most: a recovery of 10^5 pending runs in waves
# of it, the next claimed once half of the last has ended. 10^3 keeps group
# commits full (the async benchmark runs 1,024 at once) and the cyclic garbage
# collector's full passes short: with 10^4 workflows alive at once, 42 full
# collections took 3.5-4.1 s of a 13-14.5 s recovery of 10^5 (gc.callbacks);
# with 10^3, 0.35-0.5 s (docs/bench/round2-report.md).
CLAIM_LIMIT = 1_000
# Seconds between two looks at data_version (the cross-process wake-up delay).
POLL = 0.01
# Seconds between two looks for workflows whose owner is gone (a dead
# process on this host is taken over within this; an expired lease too).
CLAIM_EVERY = 0.5
# Seconds between two prunes (store/_executors.prune) while the last one
# found less than PRUNE_LIMIT rows of each table; else every lease / 4.
PRUNE_EVERY = 60.0

# Executors open in this process (an engine of this pid missing here was
# dropped without close(): its workflows may be taken at once).
_OPEN_HERE: set[str] = set()


@dataclass
class RecoveryReport:
    """What ``open()`` found pending and did with it."""

    resumed: list[str] = field(default_factory=list[str])
    unknown: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])  # (workflow_id, name)
    exceeded: list[str] = field(default_factory=list[str])  # ended MAX_RECOVERY_ATTEMPTS_EXCEEDED


def registration(identity: Identity, lease: float) -> tuple[Any, ...]:
    """This executor's row (Store.open writes it with the open mark); its
    lease is counted from the store's clock."""
    pid = os.getpid()
    return (identity.executor_id, pid, _executors.pid_started(pid), identity.app_version, lease)


class Coordinator:
    """The lease keeper and cross-process watcher of one open of an engine
    (built at ``open`` with that open's journal).

    ``identity`` says who this executor is; claimed workflows run through
    ``runner``; what other processes' notices concern is woken through
    ``waits`` (messages, events), ``runner`` (cancels, remote waiters) and
    ``kick_queues``; ``host`` is the engine's view of the executors on this
    host (it outlives an open)."""

    def __init__(
        self,
        identity: Identity,
        store: StoreContract,
        journal: Journal,
        runner: Runner,
        waits: Waits,
        kick_queues: Callable[[], None],
        lease: float,
        poll: float,
        host: HostLeases,
    ) -> None:
        self.identity = identity
        self.store = store
        self.journal = journal
        self.runner = runner
        self.waits = waits
        self.kick_queues = kick_queues
        self.lease = lease
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._version: Any = None
        self._last_notice = 0
        self._more = False  # the last claim took a whole wave (CLAIM_LIMIT): there may be more
        self._wave: list[str] = []  # the workflows the last claim launched here
        self._host = host

    # -- the thread (one per open) ------------------------------------------------------

    def start(self, last_notice: int) -> None:
        self._stop = threading.Event()
        self._version = None
        self._last_notice = last_notice
        self._thread = threading.Thread(target=self._run, name="durably-coord", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _run(self) -> None:
        next_beat = time.monotonic() + self.lease / 4
        next_claim = time.monotonic() + CLAIM_EVERY
        next_prune = time.monotonic() + PRUNE_EVERY
        failures = 0
        more = self._more  # the last claim was full
        client = self.identity.client
        stopped = self._stop
        # A store that is told of changes (PostgreSQL's LISTEN) wakes this
        # thread as soon as one arrives, waiting at most ``poll``; others
        # (SQLite's data_version) are polled every ``poll``.
        wait_change = getattr(self.store, "wait_change", None)
        while True:
            pause = self.poll if failures == 0 else min(1.0, self.poll * 2**failures)
            if wait_change is not None and failures == 0:
                wait_change(pause)
                if stopped.is_set():
                    return
            elif stopped.wait(pause):
                return
            if self.journal.failure is not None:
                return  # the writer stopped: nothing more can be recorded
            try:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.lease / 4
                    self.heartbeat()
                # A claim that took a whole wave may have left more (10^5 pending
                # at open): the next wave as soon as half of this one is done.
                if now >= next_claim or (more and self._wave_half_done()):
                    next_claim = now + min(CLAIM_EVERY, self.lease / 4)
                    more = not client and self.claim_orphans()
                if now >= next_prune:
                    next_prune = now + (self.lease / 4 if self.prune() else PRUNE_EVERY)
                version = self.store.data_version()
                if version != self._version:
                    self._version = version
                    self._react()
                failures = 0
            except errors.NotOpenError:
                return
            except Exception:  # logged and retried: a lock held elsewhere, a full disk ...
                failures += 1
                lease_log.exception(
                    "durably: the coordination round failed (attempt %d); retrying",
                    failures,
                    extra=_logs.fields("leases.round_failed"),
                )

    def _react(self) -> None:
        """Another connection committed: wake what its notices concern."""
        notices = self.store.notices_since(self._last_notice)
        claim = False
        kick = False
        for nid, kind, wid, detail in notices:
            # (PostgreSQL returns notices that filled a hole below the last one too)
            self._last_notice = max(self._last_notice, nid)
            if kind == "msg":
                self.waits.notify(("msg", wid, detail))
            elif kind == "event":
                self.waits.notify(("event", wid, detail))
            elif kind == "cancel":
                self.runner.cancelled_elsewhere(wid)
            elif kind == "queue":
                kick = True
            elif kind == "start":
                claim = True
        if kick:
            self.kick_queues()
        if claim and not self.identity.client:
            self.claim_orphans()
        self.runner.wake_remote_waiters()

    # -- this executor (store/_executors.py) ----------------------------------------------

    def run_op(self, op: str, *args: Any) -> Any:
        """Run a store op in a journal batch (atomic) and return its result."""
        rec = Record(R.OP, (None, None, op, op, args))
        self.journal.submit(rec)
        if rec.error is not None:
            raise rec.error
        return rec.result[0]

    def register(self) -> None:
        """This engine's executor row: written at open, with the open mark
        (Store.open); an in-memory database has no mark, it is written here."""
        self.store.on_fenced = self.fenced
        if self.store.registration is None:
            self.run_op("register_executor", *registration(self.identity, self.lease))
        _OPEN_HERE.add(self.identity.executor_id)

    def unregister(self, release: bool) -> None:
        """Closing: not open here any more; ``release``: stop the executor
        row too, so its pending workflows are released for others to take."""
        _OPEN_HERE.discard(self.identity.executor_id)
        if release:
            try:
                self.run_op("stop_executor", self.identity.executor_id)
            except errors.DurablyError:
                pass  # its lease runs out instead

    def heartbeat(self) -> None:
        if not self.run_op("heartbeat", self.identity.executor_id, self.lease):
            lease_log.warning(
                "durably: executor %s lost its registration (stopped elsewhere?)",
                self.identity.executor_id,
                extra=_logs.fields("leases.registration_lost"),
            )

    def prune(self) -> bool:
        """One bounded prune (store/_executors.prune); True: there may be more."""
        limit = _executors.PRUNE_LIMIT
        executors, notices = self.run_op("prune", limit)
        return bool(executors >= limit or notices >= limit)

    def _judge_executors(self) -> tuple[str, str]:
        """JSON lists of the executors known dead and of those known live on
        this host (runtime/leases.py); the rest are judged by their lease."""
        rows = self.store.executors()
        dead, live = self._host.judge(rows, self.identity.executor_id)
        # An engine of this very process that is not open any more (it was
        # dropped without close()) is gone too.
        dropped = {
            r.executor_id
            for r in rows
            if r.pid == os.getpid() and r.executor_id not in _OPEN_HERE and r.executor_id not in dead
        }
        if dropped:
            dead += sorted(dropped)
            live = [eid for eid in live if eid not in dropped]
        return json.dumps(dead), json.dumps(live)

    # -- claims -------------------------------------------------------------------------

    def claim(self, only: list[str] | None = None, limit: int | None = None) -> list[tuple[Any, ...]]:
        identity, workflows = self.identity, self.runner.workflows
        if identity.client or not workflows:
            return []
        names, (dead, live) = json.dumps(sorted(workflows)), self._judge_executors()
        if not self.store.claimable(identity.app_version, names, dead, live):
            return []
        claimed: list[tuple[Any, ...]] = self.run_op(
            "claim",
            identity.executor_id,
            identity.app_version,
            names,
            dead,
            live,
            CLAIM_LIMIT if limit is None else limit,
            None if only is None else json.dumps(only),
        )
        return claimed

    def _wave_half_done(self) -> bool:
        """Whether half of the last claim's workflows have ended (read without
        the runner's lock: a membership test, as ``len(active)`` elsewhere)."""
        wave, active = self._wave, self.runner.active
        return 2 * sum(1 for wid in wave if wid in active) <= len(wave)

    def run_claimed(self, rows: list[tuple[Any, ...]], report: RecoveryReport) -> None:
        runner = self.runner
        todo: list[tuple[str, WorkflowSpec, Any, int]] = []
        for wid, name, inputs, attempts, epoch, _before in rows:
            spec = runner.workflows[name]
            if attempts > spec.max_recovery_attempts:
                self._exceeded(wid, name, attempts, spec, report)
                continue
            report.resumed.append(wid)
            with runner.lock:
                if wid in runner.active:
                    # Its earlier run here (fenced: taken over while this
                    # process was paused) is still unwinding: run it again,
                    # from the journal and under this epoch, when that ends.
                    runner.relaunch.add(wid)
                    runner.reclaimed[wid] = epoch
                    continue
            todo.append((wid, spec, inputs, epoch))
        if not todo:
            return
        # One read for them all (not one per workflow): which are still this
        # executor's (lost again since the claim: their new owner runs them),
        # and the journals of the async ones, which all start at once (large
        # values left out, see store.load_journal). A sync workflow waits for
        # a worker and reads its journal when it runs: only running workflows
        # hold theirs in memory.
        owned = self.store.still_owned([(wid, epoch) for wid, _s, _i, epoch in todo])
        journals = self.store.load_journals([wid for wid, spec, *_ in todo if wid in owned and spec.is_async])
        self._wave = [wid for wid, *_ in todo if wid in owned]
        for wid, spec, inputs, epoch in todo:
            if wid not in owned:
                continue
            self.store.own(wid, epoch)
            journal = journals.get(wid, []) if spec.is_async else None
            runner.launch(spec, wid, inputs, replay=True, journal=journal)
            if _crash.ARMED:
                _crash.hit("recovery.launched")

    def _exceeded(self, wid: str, name: str, attempts: int, spec: WorkflowSpec, report: RecoveryReport) -> None:
        report.exceeded.append(wid)
        why = errors.MaxRecoveryAttemptsExceededError(
            f"workflow {wid!r} was found running at {attempts} opens, more than its max_recovery_attempts "
            f"({spec.max_recovery_attempts}): its process died at every attempt; it is not run again "
            "(engine.resume runs it again)",
            workflow_id=wid,
            attempts=attempts,
        )
        self.journal.submit(Record(R.WRITE, ("exceed", (encode_error(why), wid))))
        self.runner.counters.parked += 1
        log.error("durably: %s", why, extra=_logs.fields("recovery.exceeded", wid, name))

    def recover(self) -> RecoveryReport:
        """At open: claim and run the pending workflows nobody live owns."""
        report = RecoveryReport()
        if _crash.ARMED:
            _crash.hit("recovery.scan")
        rows = self.claim()
        self._more = len(rows) >= CLAIM_LIMIT
        self.run_claimed(rows, report)
        identity = self.identity
        if not identity.client and not self.store.others_live(identity.executor_id):
            # Alone on the file: a pending workflow whose function nobody
            # registered is parked with the reason (another process would
            # claim it if it had the function).
            known = set(self.runner.workflows)
            for wid, name, _inputs, _parent, _attempts in self.store.pending_workflows():
                if name in known:
                    continue
                report.unknown.append((wid, name))
                self.journal.submit(
                    Record(
                        R.WRITE,
                        (
                            "park_unregistered",
                            (f"no workflow function registered as {name!r} when the engine opened", wid),
                        ),
                    )
                )
        if report.unknown:
            self.runner.counters.parked += len(report.unknown)
            log.warning(
                "durably: %d pending workflow(s) left parked, their functions are not registered: %s",
                len(report.unknown),
                ", ".join(f"{w} ({n})" for w, n in report.unknown[:10]),
                extra=_logs.many("recovery.unregistered", [w for w, _n in report.unknown]),
            )
        if report.resumed:
            self.runner.counters.recoveries += len(report.resumed)
            log.info(
                "durably: recovering %d pending workflow(s)",
                len(report.resumed),
                extra=_logs.many("recovery.resumed", report.resumed),
            )
        return report

    def claim_orphans(self) -> bool:
        """The lease keeper's round: take over what dead or stopped executors
        (or clients) left, and run it here. True when the claim took as many
        as one claim may (CLAIM_LIMIT): there may be more to take."""
        if self.runner.closing:
            return False
        rows = self.claim()
        taken = [r[0] for r in rows if r[5] is not None]
        if taken:
            self.runner.counters.takeovers += len(taken)
            log.warning(
                "durably: executor %s took over %d workflow(s) whose owner is gone: %s",
                self.identity.executor_id,
                len(taken),
                ", ".join(taken[:10]),
                extra=_logs.many("recovery.takeover", taken),
            )
        if rows:
            self.run_claimed(rows, RecoveryReport())
        return len(rows) >= CLAIM_LIMIT

    def fenced(self, wids: list[str]) -> None:
        """The writer found these taken over by another executor: abandon them."""
        self.runner.counters.fenced += len(wids)
        lease_log.warning(
            "durably: executor %s lost %d workflow(s) to another executor (its lease ran out: was this "
            "process paused?); it abandons them: %s",
            self.identity.executor_id,
            len(wids),
            ", ".join(wids[:10]),
            extra=_logs.many("leases.fenced", wids),
        )
        runner = self.runner
        with runner.lock:
            for wid in wids:
                ctx = runner.active.get(wid)
                if ctx is not None and ctx.interrupt is None:
                    stop(ctx, Fenced())
