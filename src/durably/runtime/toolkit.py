"""The workflow toolkit: its drivers, durable time, deadlines and patches
(messages and events: ``runtime/messaging.py``).

Each primitive is written once, as a generator of requests ("submit this
record", "give me a waiter", "block until this waiter fires or this
deadline"), and run by a sync driver (threads) or an async driver (the event
loop). So ``engine.recv`` and ``await engine.recv_async`` are the same code.

Inside a workflow every primitive takes a step position and is journaled:
its outcome is recorded once and replayed after a restart (a sleep's wake-up
time, a received message, ``now()``'s value). Outside a workflow they are
plain client calls.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from .. import _records as R
from .. import errors
from .._names import check_name
from ..codec import decode_error, type_label
from ..journal import Record
from .context import WorkflowContext, encode_key, other_engine, workflow_context
from .outcomes import step_record
from .waits import Waiter, block, block_async

if TYPE_CHECKING:
    from ..clock import Clock
    from ..codec import Codec
    from ..journal import Journal
    from ..store.contract import StoreContract
    from .waits import Waits

# Requests a primitive's generator yields to its driver.
SUBMIT, WAITER, BLOCK = 0, 1, 2

Gen = Generator[tuple[int, Any], Any, Any]

MAX_WAIT = 10 * 366 * 86400.0  # ten years: anything longer is a bug, not a plan


# The durable waits that get a span of their own (OpenTelemetry).
WAITS = frozenset({"sleep", "recv", "get_event"})


def seconds_arg(value: Any, what: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.UsageError(f"{what} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0 or value > MAX_WAIT:
        raise errors.UsageError(f"{what} must be between 0 and {MAX_WAIT:.0f} seconds (ten years), not {value!r}")
    return float(value)


name_arg = check_name  # names and ids follow one rule (durably._names)


class Toolkit:
    """The drivers, durable time, values and patches (a part of ``Engine``;
    messages and events are ``Messaging``, built on it).

    A primitive here (``sleep``, ``value``) returns its generator; the
    engine's public method runs it with ``drive`` or ``drive_async``.
    ``check_open`` is the engine's: it raises NotOpenError (or unwinds a
    workflow of a closing engine). ``journal`` is the one of the current
    open (``open``; before the first, one never started: NotOpenError).
    """

    __slots__ = ("store", "codec", "clock", "waits", "check_open", "journal")

    def __init__(
        self,
        store: StoreContract,
        codec: Codec,
        clock: Clock,
        waits: Waits,
        check_open: Callable[[], None],
        journal: Journal,
    ) -> None:
        self.store = store
        self.codec = codec
        self.clock = clock
        self.waits = waits
        self.check_open = check_open
        self.journal = journal

    def open(self, journal: Journal) -> None:
        """At each open: the journal client calls write to."""
        self.journal = journal

    # -- drivers ------------------------------------------------------------------

    def mine(self, ctx: WorkflowContext | None, call: str) -> None:
        """UsageError when ``ctx`` is a workflow of another engine (whose
        journal this engine's calls would not write)."""
        if ctx is not None and ctx.runner.store is not self.store:
            raise other_engine(ctx, self.store, call)

    def drive(self, gen: Gen, name: str) -> Any:
        ctx = workflow_context()
        if ctx is not None and ctx.runner.store is not self.store:
            gen.close()
            raise other_engine(ctx, self.store, name)
        if ctx is not None and ctx.is_async:
            gen.close()
            # The blocking form would stall the event loop (and every workflow on it).
            raise errors.UsageError(f"in an async workflow use `await engine.{name}_async(...)`, not engine.{name}()")
        tel = ctx.runner.telemetry if ctx is not None and name in WAITS else None
        if ctx is not None and tel is not None:  # OpenTelemetry configured at open (_otel.py)
            with tel.span(f"durably.{name}", ctx, name, ctx.position, ctx.position in ctx.recorded):
                return self._drive(gen, ctx)
        return self._drive(gen, ctx)

    def _drive(self, gen: Gen, ctx: WorkflowContext | None) -> Any:
        value: Any = None
        exc: BaseException | None = None
        while True:
            try:
                kind, arg = gen.throw(exc) if exc is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            value, exc = None, None
            try:
                if kind == SUBMIT:
                    value = self.journal.submit(arg)
                elif kind == WAITER:
                    value = Waiter()
                else:
                    value = block(self.clock, arg[0], arg[1], ctx)
            except BaseException as e:  # handed to the generator (its finally runs)
                exc = e

    async def drive_async(self, gen: Gen, name: str | None = None) -> Any:
        ctx = workflow_context()
        if ctx is not None and ctx.runner.store is not self.store:
            gen.close()
            raise other_engine(ctx, self.store, f"{name or getattr(gen, '__name__', 'call')}_async")
        tel = ctx.runner.telemetry if ctx is not None and name in WAITS else None
        if ctx is not None and tel is not None:  # OpenTelemetry configured at open (_otel.py)
            key = ctx.peek_key()
            with tel.span(f"durably.{name}", ctx, str(name), key, key in ctx.recorded):
                return await self._drive_in(gen, ctx)
        if ctx is not None:
            return await self._drive_in(gen, ctx)
        return await self._drive_gen(gen, None)

    async def _drive_in(self, gen: Gen, ctx: WorkflowContext) -> Any:
        """``drive_async`` in a workflow."""
        # In a workflow the primitive's outcome is handed to the code in
        # the order it was delivered live (see runtime/context.py).
        branch = ctx._branch()
        first = branch.seq
        try:
            result = await self._drive_gen(gen, ctx)
        except BaseException as exc:
            if branch.seq > first and not isinstance(exc, (errors.NonDeterminismError, asyncio.CancelledError)):
                if not ctx.deliver_now():
                    await ctx.turn(_delivered(branch))
            raise
        if branch.seq > first:
            if not ctx.deliver_now():
                await ctx.turn(_delivered(branch))
        return result

    async def _drive_gen(self, gen: Gen, ctx: WorkflowContext | None) -> Any:
        value: Any = None
        exc: BaseException | None = None
        while True:
            try:
                kind, arg = gen.throw(exc) if exc is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            value, exc = None, None
            try:
                if kind == SUBMIT:
                    await self.journal.submit_async(arg)
                    if arg.error is not None:
                        raise arg.error
                    value = arg.result
                elif kind == WAITER:
                    value = Waiter(asyncio.get_running_loop())
                else:
                    value = await block_async(self.clock, arg[0], arg[1], ctx)
            except BaseException as e:
                exc = e

    # -- journaling helpers ----------------------------------------------------------

    def recorded(self, ctx: WorkflowContext, name: str, make: Any, annotation: Any) -> Gen:
        """A value computed once, live, and replayed after (now, random ...)."""
        pos = ctx.take_position()
        recorded = ctx.replayed(pos, name)
        if recorded is not None:
            return self.codec.decoder(annotation)(recorded[0])
        value = make()
        raw = self.codec.encode(value, (name, name, ctx.workflow_id, pos))
        yield SUBMIT, step_record(ctx, pos, name, raw, None, None)
        return value

    def op(self, ctx: WorkflowContext | None, pos: int | None, name: str, op: str, args: tuple[Any, ...]) -> Gen:
        """Run a store op; inside a workflow its outcome is the step at ``pos``."""
        wid = None if ctx is None else ctx.workflow_id
        row = None if ctx is None else ctx.row(pos)
        result = yield SUBMIT, Record(R.OP, (wid, row, name, op, args))
        if result is R.NOTHING:
            return R.NOTHING
        output, error = result
        if error is not None:
            raise decode_error(error)
        return output

    def wait_for(
        self, ctx: WorkflowContext, name: str, key: Any, op: str, args: tuple[Any, ...], timeout: float | None
    ) -> Gen:
        """The receive pattern: an optional recorded deadline, then one step
        that holds what arrived (or None at the deadline)."""
        deadline = None
        if timeout is not None:
            deadline = yield from self.recorded(ctx, f"{name}.deadline", lambda: self.clock.now() + timeout, float)
        pos = ctx.take_position()
        recorded = ctx.replayed(pos, name)
        if recorded is not None:
            return replayed_outcome(recorded)
        expired = False  # the deadline's timer fired (a backward clock jump does not stretch it)
        while True:
            waiter = yield WAITER, None
            self.waits.add(key, waiter)  # before looking: a commit in between still wakes us
            try:
                final = deadline is not None and (expired or self.clock.now() >= deadline)
                output = yield from self.op(ctx, pos, name, op, (*args, final))
                if output is not R.NOTHING:
                    return output
                expired = yield BLOCK, (waiter, deadline)
            finally:
                self.waits.remove(key, waiter)

    def decode(self, raw: Any, as_type: Any, what: str) -> Any:
        if raw is None:
            return None
        try:
            return self.codec.decoder(Any if as_type is None else as_type)(raw)
        except Exception as exc:  # msgspec.ValidationError and friends: the value does not fit
            type_name = type_label(as_type)
            raise errors.SerializationError(
                f"{what}: the stored value does not decode as {type_name}: {exc}", where=what, type_name=type_name
            ) from exc

    # -- durable time ----------------------------------------------------------------

    def sleep(self, seconds: Any) -> Gen:
        """Sleep durably: inside a workflow the wake-up time is recorded, so
        after a restart the workflow wakes at that time, not ``seconds`` after
        the restart. Cancelling the workflow interrupts the sleep."""
        seconds = seconds_arg(seconds, "sleep")
        ctx = workflow_context()
        if ctx is None:
            wake = self.clock.now() + seconds
        else:
            key = ctx.peek_key()
            wake = yield from self.recorded(ctx, "sleep", lambda: self.clock.now() + seconds, float)
            if ctx.is_async:
                # The end of a sleep is a delivery: its moment relative to the
                # workflow's other outcomes is recorded (a "wake" row), so a
                # replay ends the sleep in the same order (runtime/context.py).
                mark = ("wake", encode_key(key))
                ctx.deliver_as(mark)
                if ctx.replayed(mark, "wake") is not None:
                    return
        if self.clock.now() < wake:
            waiter = yield WAITER, None
            yield BLOCK, (waiter, wake)
        if ctx is not None and ctx.is_async:
            yield SUBMIT, step_record(ctx, mark, "wake", None, None, None)  # pyright: ignore[reportPossiblyUnboundVariable]  (set above when ctx.is_async)

    def value(self, name: str, make: Any, annotation: Any) -> Gen:
        ctx = workflow_context()
        if ctx is None:
            return make()
        return (yield from self.recorded(ctx, name, make, annotation))

    # -- versioning ------------------------------------------------------------------

    def patched(self, change: str) -> bool:
        """True if this run of the workflow takes the new code path of ``change``.

        New runs record a marker and take it; a run that recorded steps past
        this point before the patch existed replays the old path (False).
        Once no such run is left, replace the check with
        ``deprecate_patch(change)`` (runs that recorded the marker still
        replay); once none of those is left either, delete the call.
        """
        change = name_arg(change, "patched() change name")
        ctx = workflow_context()
        self.mine(ctx, "patched")
        if ctx is None:
            raise errors.UsageError("patched() is only valid inside a workflow")
        name = f"patch:{change}"
        key = ctx.peek_key()
        replaying = ctx.replaying_at(key)
        if replaying:
            row = ctx.recorded.get(key)
            if row is None or row[1] != name:
                return False  # recorded before the patch: the old path, no position taken
        ctx.take_position()
        if replaying:
            ctx.recorded.pop(key, None)
        else:
            self.journal.submit(step_record(ctx, key, name, None, None, None))
        return True

    def deprecate_patch(self, change: str) -> bool:
        """The second step of removing ``patched(change)`` (Temporal's and
        DBOS's ``deprecate_patch``): always True, the new code path.

        A run that recorded the ``change`` marker (it passed this point with
        ``patched`` code) replays past it: the marker is consumed here. A
        run that gets here live records nothing. The removal, in steps:
        (1) ``if engine.patched(change): new() else: old()``; once no run
        started before (1) is left (they would park: their journals hold the
        old path), (2) ``engine.deprecate_patch(change); new()``; once no run
        that recorded the marker is left, (3) plain ``new()``.
        """
        change = name_arg(change, "deprecate_patch() change name")
        ctx = workflow_context()
        self.mine(ctx, "deprecate_patch")
        if ctx is None:
            raise errors.UsageError("deprecate_patch() is only valid inside a workflow")
        key = ctx.peek_key()
        if ctx.replaying_at(key):
            row = ctx.recorded.get(key)
            if row is not None and row[1] == f"patch:{change}":
                ctx.take_position()  # the marker's position, as patched() took it
                ctx.recorded.pop(key, None)
        return True


def replayed_outcome(recorded: tuple[Any, Any]) -> Any:
    """A recorded (output, error) of a toolkit call: the output as stored, or
    the error raised."""
    if recorded[1] is not None:
        raise decode_error(recorded[1])
    return recorded[0]


def _delivered(branch: Any) -> Any:
    """The key a primitive that just ended in ``branch`` delivers under."""
    key = branch.deliver
    if key is not None:
        branch.deliver = None
        return key
    seq = branch.seq - 1
    return seq if branch.path is None else (branch.path, seq)
