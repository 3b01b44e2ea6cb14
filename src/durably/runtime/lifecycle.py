"""Opening and closing an engine.

An open is a new executor (a new id when the engine opened before or was
built in another process), a store opened, and a journal writer of its
own, started: the parts that outlive an open (the runner, the toolkit,
the queue and schedule managers) are handed it (``part.open(journal)``),
and the lease keeper (``Coordinator``) is built with it. Then the pending
workflows nobody runs are recovered, deadlines re-armed, and the queue
dispatcher, the schedule runner and the lease keeper's thread started.

A close stops running workflows at their next durable point (a step body
that runs finishes and is recorded), waits for them up to its grace, and
stops every thread, the writer last.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING

from .. import errors, telemetry
from ..journal import Journal
from ..store._connection import is_memory
from .context import EngineShutdown, current, stop
from .coordination import Coordinator, RecoveryReport, registration
from .leases import HostLeases
from .toolkit import seconds_arg

if TYPE_CHECKING:
    from ..clock import SystemClock
    from ..queues import QueueManager
    from ..schedules import ScheduleManager
    from ..store.contract import StoreContract
    from .deadlines import Deadlines
    from .identity import Identity
    from .retention import Retention
    from .runner import Runner
    from .toolkit import Toolkit
    from .waits import Waits


# Seconds close() waits, by default, for running step bodies to finish.
CLOSE_GRACE = 30.0


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle_future(fut: asyncio.Future[list[str]], value: list[str] | BaseException) -> None:
    if fut.done():
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)


class Lifecycle:
    """The open and close of one engine (a part of ``Engine``).

    ``journal`` is the current open's writer (before the first open, one
    never started: its submit raises NotOpenError); ``keeper`` the current
    open's lease keeper (None while closed); ``recovery`` what the last
    open recovered. ``own_clock``: the clock the engine made, which a close
    closes (its timer thread); None for a given clock, never closed here."""

    def __init__(
        self,
        identity: Identity,
        store: StoreContract,
        codec_name: str,
        own_clock: SystemClock | None,
        runner: Runner,
        kit: Toolkit,
        queues: QueueManager,
        schedules: ScheduleManager,
        deadlines: Deadlines,
        waits: Waits,
        lease: float,
        poll: float,
        retention: Retention,
    ) -> None:
        self.identity = identity
        self.store = store
        self.codec_name = codec_name
        self.own_clock = own_clock
        self.runner = runner
        self.kit = kit
        self.queues = queues
        self.schedules = schedules
        self.deadlines = deadlines
        self.waits = waits
        self.lease = lease
        self.poll = poll
        self.retention = retention
        self.journal: Journal = runner.journal
        self.keeper: Coordinator | None = None
        self.recovery = RecoveryReport()
        self.is_open = False
        self._ever_opened = False
        self._close_lock = threading.Lock()
        self._host = HostLeases(lease)  # outlives an open: what this host's executors were seen doing

    # -- open ---------------------------------------------------------------------------

    def open(self) -> None:
        """``Engine.open``."""
        if self.is_open:
            raise errors.UsageError("engine is already open")
        identity, store = self.identity, self.store
        if self._ever_opened or os.getpid() != identity.pid:
            identity.renew(store)  # each open is a new executor (its row is a new registration)
        self._ever_opened = True
        store.registration = None if is_memory(store.path) else registration(identity, self.lease)
        store.open(self.codec_name)
        # OpenTelemetry is looked for once per open (nothing configured: None,
        # and the step path makes no call for it); telemetry.py says how.
        tel = self.runner.telemetry = telemetry.detect(store, self.runner, identity.executor_id)
        journal = self.journal = Journal(store.flush if tel is None else tel.timed(store.flush))
        journal.start()
        self.runner.open(journal)
        self.kit.open(journal)
        self.queues.open(journal)
        self.schedules.open(journal)
        self.retention.open(journal)
        keeper = self.keeper = Coordinator(
            identity, store, journal, self.runner, self.waits, self.queues.kick, self.lease, self.poll, self._host
        )
        self.is_open = True
        try:
            keeper.register()
            self.recovery = keeper.recover()
            for wid, deadline in store.deadlines():
                self.deadlines.arm(wid, deadline)
            if not identity.client:
                self.queues.start()
                self.schedules.start()
                self.retention.start()
            keeper.start(store.last_notice())
        except BaseException:
            self.close(CLOSE_GRACE)
            raise

    def check_open(self) -> None:
        """NotOpenError unless open and not closing; inside a workflow of
        this closing engine, the workflow unwinds instead. The writer's
        fatal error once it stopped."""
        runner = self.runner
        if not self.is_open or runner.closing:
            ctx = current.get()
            if ctx is not None and ctx.runner is runner and runner.closing:
                # Inside a workflow of this closing engine: the whole workflow
                # unwinds (a BaseException, and every later durable call in any
                # of its tasks raises it too). A NotOpenError here would be an
                # ordinary outcome its code could react to, live only: the
                # reaction would be journaled, the replay would differ.
                if ctx.interrupt is None:
                    stop(ctx, EngineShutdown())
                interrupt = ctx.interrupt  # set just above, or by another thread's stop
                raise interrupt if interrupt is not None else EngineShutdown()
            raise errors.NotOpenError("the engine is not open; use `with engine:` or engine.open()")
        failure = self.journal.failure
        if failure is not None:
            raise failure

    def opened(self) -> bool:
        """``open()`` ran and ``close()`` has not ended (closing included)."""
        return self.is_open

    # -- close --------------------------------------------------------------------------

    def close(self, timeout: float | None) -> list[str]:
        """Stop running workflows at their next durable point and close.

        A step body that is running finishes and its outcome is recorded: a
        clean close never makes a body run twice. Waits up to ``timeout``
        seconds (None: as long as it takes) for that; workflows still busy
        then (a body blocked outside any durable point) are logged at ERROR
        and left behind. Returns their ids (usually empty). Workflows that
        have not finished stay PENDING and resume at the next open.
        UsageError if called from inside a workflow or step (it would wait
        for itself), or on an event loop that runs async workflows of this
        engine (blocking that loop, it could not wait for them: use
        ``await engine.close_async()`` or ``async with engine:`` there).
        """
        timeout = self._close_args(timeout)
        if not self.is_open:
            return []
        here = _running_loop()
        if here is not None:
            running = self.runner.running_on(here)
            if running:
                raise errors.UsageError(
                    f"engine.close() was called on the event loop that runs {len(running)} async workflow(s) "
                    f"of this engine ({', '.join(running[:3])}{', ...' if len(running) > 3 else ''}); blocking "
                    "that loop it could not wait for their step bodies, which would run again at the next "
                    "open. Use `await engine.close_async()` (or `async with engine:`) on this loop; the "
                    "engine is still open"
                )
        return self._close(timeout)

    async def close_async(self, timeout: float | None) -> list[str]:
        """``close()`` for asyncio code (a web app's lifespan, ``async with
        engine:``): the same steps, waiting without blocking the calling
        loop, so the workflows running on it finish their step bodies and
        record them as workflows in threads do. Returns the ids left behind."""
        timeout = self._close_args(timeout)
        if not self.is_open:
            return []
        # The blocking part runs in a thread of its own while this loop keeps
        # running the workflows it waits for (a thread not on any loop waits
        # for every workflow, see Runner.stop_all).
        done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

        def closer() -> None:
            try:
                left: list[str] | BaseException = self._close(timeout)
            except BaseException as exc:  # handed to the awaiting caller
                left = exc
            try:
                done.get_loop().call_soon_threadsafe(_settle_future, done, left)
            except RuntimeError:
                pass  # the caller's loop is gone: nobody waits for the answer

        threading.Thread(target=closer, name="durably-close", daemon=True).start()
        return await asyncio.shield(done)

    def _close_args(self, timeout: float | None) -> float | None:
        if current.get() is not None:
            raise errors.UsageError(
                "engine.close() was called inside a workflow or step; it waits for running workflows to "
                "stop, so it would wait for itself. Close the engine from the code that opened it"
            )
        return None if timeout is None else seconds_arg(timeout, "close timeout")

    def _close(self, timeout: float | None) -> list[str]:
        with self._close_lock:  # close() and close_async() at once: one closes, the other finds it closed
            if not self.is_open:
                return []
            return self._shut(timeout)

    def _shut(self, timeout: float | None) -> list[str]:
        runner = self.runner
        runner.closing = True
        with runner.lock:  # running workflows unwind from their next durable point on
            for ctx in runner.active.values():
                if ctx.interrupt is None:
                    stop(ctx, EngineShutdown())
        keeper = self.keeper
        if keeper is not None:
            keeper.stop()
        self.store.interrupt_all_tx()  # a transaction step's SQL would hold the writer through the grace
        self.deadlines.disarm_all()
        self.retention.stop()  # a pass under way stops after its batch
        self.queues.stop()
        self.schedules.stop()
        self.waits.fire_all()
        left = runner.stop_all(EngineShutdown(), timeout)
        self.waits.fire_all()
        if self.own_clock is not None:
            self.own_clock.close()
        if keeper is not None:
            keeper.unregister(release=not left)  # released: others may take its pending workflows
        self.store.stop_waiting()
        self.journal.stop()
        self.store.close()
        if runner.telemetry is not None:
            runner.telemetry.close()
            runner.telemetry = None
        runner.interrupted.clear()
        self.keeper = None
        self.is_open = False
        return left
