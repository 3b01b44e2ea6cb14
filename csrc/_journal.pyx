# cython: language_level=3, boundscheck=False, wraparound=False
"""Group-commit journal, compiled.

Behaviour is identical to ``src/durably/journal/_journal_py.py``, which is the
readable specification; read that file first. This module only removes the
interpreter overhead from the paths every step crosses: ``Record``
construction, enqueue, the writer's drain loop and the per-batch wake-up.
It never calls SQLite: the batch is handed to the store's ``flush`` (apsw),
so only one SQLite library lives in the process.
"""

import asyncio
import threading
from _thread import allocate_lock

from durably import _crash, errors

cdef enum:
    _NEW = 0
    _RUNNING = 1
    _STOPPING = 2
    _STOPPED = 3
    _FAILED = 4


cdef class Record:
    """One unit of journaled work; see ``durably._records`` for the kinds."""

    cdef public int kind
    cdef public object params
    cdef public object result
    cdef public object error
    cdef public object loop
    cdef public object future

    def __init__(self, int kind, object params):
        self.kind = kind
        self.params = params
        self.result = None
        self.error = None
        self.loop = None
        self.future = None


cdef class _Generation:
    cdef public list waiters

    def __init__(self):
        self.waiters = []

    cdef release(self):
        for lock in self.waiters:
            lock.release()


_FUTURE = asyncio.Future


def _resolve(list records):
    # Runs on the records' event loop: one call per loop per batch; each
    # future's done callbacks run here (see the twin).
    cdef Record rec
    cdef Py_ssize_t i
    for i in range(len(records)):
        rec = records[i]
        fut = rec.future
        if fut is None or fut.done():
            continue
        callbacks = fut._callbacks if type(fut) is _FUTURE else None
        if callbacks:
            for fn, _ in callbacks:
                fut.remove_done_callback(fn)
        if rec.error is not None:
            fut.set_exception(rec.error)
        else:
            fut.set_result(rec.result)
        if callbacks:
            _run_callbacks(fut, callbacks, records, i)


cdef _run_callbacks(object fut, list callbacks, list records, Py_ssize_t i):
    cdef Py_ssize_t j
    for j in range(len(callbacks)):
        fn, context = callbacks[j]
        try:
            context.run(fn, fut)
        except (SystemExit, KeyboardInterrupt):
            loop = fut.get_loop()
            for later, later_context in callbacks[j + 1:]:
                loop.call_soon(later, fut, context=later_context)
            if i + 1 < len(records):
                loop.call_soon(_resolve, records[i + 1:])
            raise
        except BaseException as exc:
            fut.get_loop().call_exception_handler(
                {"message": "Exception in a callback of a journal future", "exception": exc, "future": fut}
            )


cdef _call_soon(object loop, list recs):
    try:
        loop.call_soon_threadsafe(_resolve, recs)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more


cdef class Journal:
    """Single-writer group-commit queue in front of ``flush(batch)``."""

    cdef object _flush
    cdef str _name
    cdef object _lock
    cdef object _wakeup
    cdef list _pending
    cdef _Generation _generation
    cdef int _state
    cdef bint _writer_idle
    cdef bint _busy
    cdef object _failure
    cdef object _thread
    cdef public long long batches
    cdef public long long records

    def __init__(self, flush, str name="durably-journal"):
        self._flush = flush
        self._name = name
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._pending = []
        self._generation = _Generation()
        self._state = _NEW
        self._writer_idle = False
        self._busy = False
        self._failure = None
        self._thread = None
        self.batches = 0
        self.records = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self):
        with self._lock:
            if self._state != _NEW:
                raise errors.InternalError("journal already started")
            self._state = _RUNNING
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self):
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
    def failure(self):
        return self._failure

    @property
    def running(self):
        return self._state == _RUNNING

    # -- submitting ------------------------------------------------------------

    cdef object _enqueue(self, Record rec, bint sync=False):
        cdef object waiter = None
        with self._lock:
            if self._state != _RUNNING:
                raise self._stopped_error()
            if sync:
                if not self._busy and not self._pending:
                    self._busy = True
                    return None
                waiter = allocate_lock()
                waiter.acquire()
                self._generation.waiters.append(waiter)
            self._pending.append(rec)
            if self._writer_idle:
                self._writer_idle = False
                self._wakeup.notify()
        return waiter

    def submit(self, Record rec):
        """Journal ``rec`` and block until it is durable; return its result.

        A lone caller with nothing in flight writes its own record (see the twin).
        """
        waiter = self._enqueue(rec, True)
        if waiter is None:
            self._commit([rec], None)
        else:
            waiter.acquire()  # released by the batch's wake-up
        if rec.error is not None:
            raise rec.error
        return rec.result

    def submit_async(self, Record rec, object loop=None):
        """Journal ``rec``; the returned future resolves once it is durable (see the twin)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        rec.loop = loop
        rec.future = loop.create_future()
        self._enqueue(rec)
        return rec.future

    cdef object _stopped_error(self):
        if self._failure is not None:
            return self._failure
        return errors.NotOpenError("the journal is not running (engine closed or not opened)")

    # -- the writer thread -----------------------------------------------------

    def _run(self):
        cdef list batch
        cdef _Generation gen
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

    cdef bint _commit(self, list batch, _Generation gen):
        """Flush one batch (the caller set ``_busy``) and wake its waiters."""
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

    cdef _wake(self, list batch, _Generation gen):
        cdef Record rec
        cdef object loop = None
        cdef object rec_loop
        cdef list group = []
        cdef dict others = None
        gen.release()
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

    cdef _fail(self, list batch, _Generation gen, object exc):
        cdef Record rec
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
