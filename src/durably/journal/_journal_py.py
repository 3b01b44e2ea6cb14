"""Group-commit journal, pure-Python twin: the readable specification.

``csrc/_journal.pyx`` implements the same classes with the same behaviour;
``durably.journal`` picks one (``DURABLY_NO_EXTENSIONS=1`` forces this one).

One writer thread owns the store's write connection. It takes *every*
pending record, hands them to ``flush`` as one batch (one transaction, one
fsync), then wakes that batch's waiters at once: threads through a lock each,
asyncio futures through one ``call_soon_threadsafe`` per event loop. apsw
releases the GIL inside SQLite, so while batch N is being fsynced, workflows
produce batch N+1: group commit with no timers and no added latency when idle.
"""

from __future__ import annotations

import asyncio
import threading
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Sequence
from typing import Any

from .. import _crash, errors

_NEW, _RUNNING, _STOPPING, _STOPPED, _FAILED = range(5)

_FUTURE = asyncio.Future  # asyncio's own (C) Future: its done callbacks can be read (_resolve)


class Record:
    """One unit of journaled work; see ``durably._records`` for the kinds."""

    __slots__ = ("kind", "params", "result", "error", "loop", "future")

    def __init__(self, kind: int, params: Any) -> None:
        self.kind = kind
        self.params = params
        self.result: Any = None
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[Any] | None = None


class _Generation:
    """The thread waiters of one batch: a lock each, taken when it queued
    its record and released once, after the batch's commit (or failure).
    A lock per waiter, not one Event for all: an Event's waiters wake
    through its Condition, each taking the Condition's lock again in turn
    (64 threads: a convoy of Python code at every commit)."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[Any] = []

    def release(self) -> None:
        for lock in self.waiters:
            lock.release()


def _resolve(records: list[Record]) -> None:
    """Runs on the records' event loop: one call per loop per batch.

    Each future's done callbacks (nearly always one: the awaiting task's
    wake-up) run right here, in their contexts and in batch order, instead
    of each through ``call_soon`` as ``set_result`` would schedule them: a
    step saves a Handle and a turn of the loop (about 1 us of asyncio's
    Python code per step), and the task takes its next step within this
    callback. asyncio's own Future only (it shows its callbacks); another
    loop's futures are resolved as usual. An error in a callback goes to the
    loop's exception handler and KeyboardInterrupt or SystemExit goes on up,
    as from a Handle, the rest of the batch left to a later callback."""
    for i, rec in enumerate(records):
        fut = rec.future
        if fut is None or fut.done():
            continue
        callbacks = fut._callbacks if type(fut) is _FUTURE else None  # pyright: ignore[reportAttributeAccessIssue]  (asyncio's, private)
        if callbacks:
            for fn, _ in callbacks:
                fut.remove_done_callback(fn)
        if rec.error is not None:
            fut.set_exception(rec.error)
        else:
            fut.set_result(rec.result)
        if callbacks:
            _run_callbacks(fut, callbacks, records, i)


def _run_callbacks(fut: asyncio.Future[Any], callbacks: list[Any], records: list[Record], i: int) -> None:
    """``fut``'s done ``callbacks`` (for record ``i`` of ``records``), run now."""
    for j, (fn, context) in enumerate(callbacks):
        try:
            context.run(fn, fut)
        except (SystemExit, KeyboardInterrupt):
            loop = fut.get_loop()
            for later, later_context in callbacks[j + 1 :]:
                loop.call_soon(later, fut, context=later_context)
            if i + 1 < len(records):
                loop.call_soon(_resolve, records[i + 1 :])
            raise
        except BaseException as exc:
            fut.get_loop().call_exception_handler(
                {"message": "Exception in a callback of a journal future", "exception": exc, "future": fut}
            )


class Journal:
    """Single-writer group-commit queue in front of ``flush(batch)``.

    ``flush`` writes a batch atomically, setting ``record.error`` on records
    it rejects individually; if it raises, the batch is lost, every waiter
    (this batch and all later ones) gets :class:`JournalStoppedError`, and
    the journal stops for good.
    """

    def __init__(self, flush: Callable[[Sequence[Record]], None], name: str = "durably-journal") -> None:
        self._flush = flush
        self._name = name
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._pending: list[Record] = []
        self._generation = _Generation()
        self._state = _NEW
        self._writer_idle = False
        self._busy = False  # a batch is being flushed (by the writer or a leader)
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.records = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._state != _NEW:
                raise errors.InternalError("journal already started")
            self._state = _RUNNING
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commit what is pending, then stop the writer thread."""
        with self._lock:
            if self._state == _RUNNING:
                self._state = _STOPPING
            self._wakeup.notify_all()
            while self._busy:  # a leader's flush in flight: let it finish
                self._wakeup.wait()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def failure(self) -> BaseException | None:
        """The fatal error that stopped the writer, if any."""
        return self._failure

    @property
    def running(self) -> bool:
        return self._state == _RUNNING

    # -- submitting ------------------------------------------------------------

    def _enqueue(self, rec: Record, sync: bool = False) -> Any:
        """Queue ``rec`` for the writer. A thread's record (``sync``): None
        when the caller should write it itself (nothing in flight or
        queued), else a held lock, released after its batch's commit."""
        waiter = None
        with self._lock:
            if self._state != _RUNNING:
                raise self._stopped_error()
            if sync:
                if not self._busy and not self._pending:
                    self._busy = True
                    return None
                waiter = _allocate_lock()
                waiter.acquire()
                self._generation.waiters.append(waiter)
            self._pending.append(rec)
            if self._writer_idle:
                self._writer_idle = False
                self._wakeup.notify()
        return waiter

    def submit(self, rec: Record) -> Any:
        """Journal ``rec`` and block until it is durable; return its result.

        When no batch is being written and nothing is queued, the calling
        thread writes its record itself (it "leads" a batch of one): a lone
        sequential workflow then pays one fsync per step and no thread
        hand-offs. Records arriving meanwhile queue up for the writer thread
        as usual. Event-loop callers never lead (see ``submit_async``).
        """
        waiter = self._enqueue(rec, sync=True)
        if waiter is None:
            self._commit([rec], None)
        else:
            waiter.acquire()  # released by the batch's wake-up
        if rec.error is not None:
            raise rec.error
        return rec.result

    def submit_async(self, rec: Record, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[Any]:
        """Journal ``rec``; the returned future resolves once it is durable.

        Must be called on the running event loop that will await the future:
        ``loop`` is that loop when the caller already has it in hand (the
        step path: ``asyncio.get_running_loop()`` makes a system call per
        call, to see whether the process forked).
        """
        if loop is None:
            loop = asyncio.get_running_loop()
        rec.loop = loop
        rec.future = loop.create_future()
        self._enqueue(rec)
        return rec.future

    def _stopped_error(self) -> BaseException:
        if self._failure is not None:
            return self._failure
        return errors.NotOpenError("the journal is not running (engine closed or not opened)")

    # -- the writer thread -----------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while (not self._pending or self._busy) and self._state == _RUNNING:
                    self._writer_idle = True
                    self._wakeup.wait()
                self._writer_idle = False
                if not self._pending:  # stopping (or failed) with nothing left
                    if self._state == _STOPPING:
                        self._state = _STOPPED
                    return
                self._busy = True
                batch = self._pending
                self._pending = []
                gen = self._generation
                self._generation = _Generation()
            if not self._commit(batch, gen):
                return

    def _commit(self, batch: list[Record], gen: _Generation | None) -> bool:
        """Flush one batch (the caller set ``_busy``) and wake its waiters.

        ``gen`` is None for a leader's batch of one (its waiter is the caller).
        Returns False after a fatal error, which stops the journal for good.
        """
        if _crash.ARMED:
            _crash.hit("journal.batch_built")
        try:
            self._flush(batch)
        except Exception as exc:  # fatal: never retry on this connection
            self._fail(batch, gen, exc)
            return False
        except BaseException as exc:
            # KeyboardInterrupt or SystemExit in a leader's own thread (Ctrl-C
            # lands in the main thread): the store rolled the batch back or
            # finished its commit cleanly, nothing was acknowledged, and the
            # journal carries on; the signal goes to the leader's caller.
            if gen is not None:
                self._fail(batch, gen, exc)
                return False
            raise
        finally:
            with self._lock:
                self._busy = False
                # Wake the writer only if it has work (or stop() is waiting):
                # waking it after every lone commit costs a thread switch.
                if self._pending or self._state != _RUNNING:
                    self._wakeup.notify_all()
        self.batches += 1
        self.records += len(batch)
        if _crash.ARMED:
            _crash.hit("journal.after_commit")
        if gen is not None:
            self._wake(batch, gen)
        if _crash.ARMED:
            _crash.hit("journal.after_wake")
        return True

    def _wake(self, batch: list[Record], gen: _Generation) -> None:
        gen.release()
        # Group asyncio waiters by loop: one cross-thread call per loop.
        loop = None
        group: list[Record] = []
        others: dict[Any, list[Record]] | None = None
        for rec in batch:
            rec_loop = rec.loop
            if rec_loop is None:
                continue
            if loop is None:
                loop = rec_loop
            if rec_loop is loop:
                group.append(rec)
            else:
                if others is None:
                    others = {}
                others.setdefault(rec_loop, []).append(rec)
        if loop is not None:
            _call_soon(loop, group)
        if others is not None:
            for other_loop, recs in others.items():
                _call_soon(other_loop, recs)

    def _fail(self, batch: list[Record], gen: _Generation | None, exc: BaseException) -> None:
        err = errors.JournalStoppedError(
            f"journal writer stopped: {exc}; reopen the engine (nothing in the failed batch was acknowledged)",
            cause=repr(exc),
        )
        err.__cause__ = exc
        with self._lock:
            self._failure = err
            self._state = _FAILED
            self._wakeup.notify_all()
            rest = self._pending
            self._pending = []
            later = self._generation
        for rec in batch:
            rec.error = err
            rec.result = None
        for rec in rest:
            rec.error = err
        if gen is not None:
            self._wake(batch, gen)
        self._wake(rest, later)


def _call_soon(loop: Any, recs: list[Record]) -> None:
    try:
        loop.call_soon_threadsafe(_resolve, recs)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more
